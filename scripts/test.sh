#!/usr/bin/env bash
# Sets up a virtual environment with the core, every plugin and the test tools, prepares the
# optional test engines (a Docker-API engine, Chromium) where this machine allows, and runs the
# whole test suite, twice as many pytest workers as cores and one more (at most 8). Extra arguments go
# to pytest.
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
  # (the environment's interpreter: the Docker tests' image holds the Python they run on)
  PYTHON="$VENV/bin/python" bash "$setup" .ci/env.sh || echo "note: $setup did not complete; its tests will skip"
done
# shellcheck disable=SC1091
source .ci/env.sh

# Python keeps the compiled modules of the project and of the tests (__pycache__, ignored by git)
# even where the machine's environment says not to: the suite starts hundreds of Python processes
# (the CLI, gunicorn, migrations, sessions) and each pytest worker collects every test module; without
# them each compiles the project from its source again (0.3 s of CPU a process here, 10 s a worker)
unset PYTHONDONTWRITEBYTECODE

# the environment's scripts (aiimpl, gunicorn) come first on PATH, as when it is activated
PATH="$(cd "$VENV/bin" && pwd):$PATH"
export PATH
# twice the cores and one more, as the tests wait on git, subprocesses, servers and sleeps about half
# of the time (measured on 2 cores: 5 workers kept the cores 85% busy and took 11 min where 3 took
# 14); at most 8, each worker holding PostgreSQL connections of its own (AIIMPL_TEST_WORKERS=N sets
# the number, 0 runs in this process): each worker has databases of its own, and the fakes and
# engines listen on ports the system picks
workers=$(( $(nproc) * 2 + 1 ))
(( workers > 8 )) && workers=8
exec "$VENV/bin/python" -m pytest -n "${AIIMPL_TEST_WORKERS:-$workers}" "$@"
