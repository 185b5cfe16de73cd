# shellcheck shell=bash
# A real browser for the dashboard's page tests (tests/test_dashboard.py): Debian's
# Chromium and its WebDriver, driven by Selenium (the venv's test extra). Nothing
# to start: the tests launch a headless Chromium of their own per module.

browser_pkgs() { echo chromium chromium-driver; }

browser_status() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }

browser_up() {
  browser_status || die "chromium or chromedriver missing after apt (see $CI_LOG_DIR/apt-install.log)"
  log "$(/usr/bin/chromium --version 2>/dev/null | head -n 1), $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
}
