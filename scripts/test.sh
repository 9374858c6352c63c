#!/usr/bin/env bash
# Sets up a virtual environment with the core, every plugin and the test tools, prepares the
# optional test engines (a Docker-API engine, Chromium) where this machine allows, and runs the
# whole test suite, one pytest worker more than the cores. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${AIIMPL_VENV:-.venv}
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
"$VENV/bin/pip" install -q -e ".[test]" \
  -e plugins/aiimpl_linear -e plugins/aiimpl_jira -e plugins/aiimpl_gha \
  -e plugins/aiimpl_fly -e plugins/aiimpl_docker \
  -e docs/examples/aiimpl_example_runner

# Optional engines: each script prints what it did, and exports what the tests read into
# .ci/env (DOCKER_HOST, AIIMPL_CHROMIUM …). Where one cannot start, its tests skip with the reason.
: > .ci/env.sh
for setup in scripts/setup-podman.sh scripts/setup-chromium.sh; do
  [[ -f $setup ]] || continue
  bash "$setup" .ci/env.sh || echo "note: $setup did not complete; its tests will skip"
done
# shellcheck disable=SC1091
source .ci/env.sh

# the environment's scripts (aiimpl, gunicorn) come first on PATH, as when it is activated
PATH="$(cd "$VENV/bin" && pwd):$PATH"
export PATH
# one worker more than the cores, as the tests wait on git, subprocesses and servers about a quarter
# of the time (AIIMPL_TEST_WORKERS=0 runs in this process): each worker has databases of its own,
# and the fakes and engines listen on ports the system picks
exec "$VENV/bin/python" -m pytest -n "${AIIMPL_TEST_WORKERS:-$(($(nproc) + 1))}" "$@"
