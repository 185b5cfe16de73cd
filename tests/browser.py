"""A real headless Chromium driven by Selenium, for the dashboard's page tests.

Chromium and its driver are Debian's packages (ci/lib/browser.sh installs them); in
CI a missing browser fails the test, elsewhere it is skipped (as for every real system).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pytest
from systems import in_ci

CHROMIUM = os.environ.get("HPCPAR_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("HPCPAR_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1400"]


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        why = f"browser tests need {', '.join(missing)} (ci/lib/browser.sh installs chromium and chromium-driver)"
        if in_ci():
            pytest.fail(why)
        pytest.skip(why)


class Browser:
    """One Chromium with a fresh profile; ``console_errors()`` reads the page's console."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="hpcpar-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(60)
        self.driver.set_script_timeout(60)
        self._logs: list[dict[str, Any]] = []

    def get(self, url: str) -> None:
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, element_id: str) -> str:
        return self.js("return document.getElementById(arguments[0]).textContent", element_id)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll ``check`` until it returns something true; fail naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")

    def console_errors(self) -> list[dict[str, Any]]:
        self._logs += self.driver.get_log("browser")
        return [e for e in self._logs if e.get("level") == "SEVERE"]

    def reset(self) -> None:
        """A blank page, and the console read so far forgotten (one test's page must not
        log into the next test: a closed dashboard's page keeps trying to reconnect)."""
        self.driver.get("about:blank")
        self.driver.get_log("browser")
        self._logs = []

    def screenshot(self, path: str) -> None:
        self.driver.save_screenshot(path)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
