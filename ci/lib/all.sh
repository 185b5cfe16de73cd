# Every ci/lib part, for the entry scripts (setup, smoke, teardown). Source with CI_DIR set.
# shellcheck source=ci/lib/common.sh
. "$CI_DIR/lib/common.sh"
# shellcheck source=ci/lib/netns.sh
. "$CI_DIR/lib/netns.sh"
# shellcheck source=ci/lib/ssh.sh
. "$CI_DIR/lib/ssh.sh"
# shellcheck source=ci/lib/slurm.sh
. "$CI_DIR/lib/slurm.sh"
# shellcheck source=ci/lib/pbs.sh
. "$CI_DIR/lib/pbs.sh"
# shellcheck source=ci/lib/sge.sh
. "$CI_DIR/lib/sge.sh"
# shellcheck source=ci/lib/state.sh
. "$CI_DIR/lib/state.sh"
# shellcheck source=ci/lib/browser.sh
. "$CI_DIR/lib/browser.sh"
