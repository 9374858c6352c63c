#!/usr/bin/env bash
# Sets up a virtual environment with the core, every plugin and the test tools, prepares the
# optional test engines (a Docker-API engine, Chromium) where this machine allows, and runs the
# whole test suite, three pytest workers a core (at most 8). Extra arguments go
# to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=${AIIMPL_VENV:-.venv}
[[ -x $VENV/bin/python ]] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip >/dev/null
# the build backend the pyprojects name ([build-system] requires), installed once here rather than
# into a throwaway environment for each of the seven editable installs (15 s less on two cores)
"$VENV/bin/pip" install -q "setuptools>=77"
"$VENV/bin/pip" install -q --no-build-isolation -e ".[test]" \
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
# three workers a core, as the tests wait on git, subprocesses, servers and sleeps about half of the
# time (measured on 2 cores: 6 workers took 12 min 56 s where 5 took 13 min 58 s, and 3 longer
# still); at most 8, each worker holding PostgreSQL connections of its own (AIIMPL_TEST_WORKERS=N sets
# the number, 0 runs in this process): each worker has databases of its own, and the fakes and
# engines listen on ports the system picks. A worker that runs out of tests takes some of another's
# (worksteal): the last of a worker's queue may be minutes of session tests
workers=$(( $(nproc) * 3 ))
(( workers > 8 )) && workers=8
exec "$VENV/bin/python" -m pytest -n "${AIIMPL_TEST_WORKERS:-$workers}" --dist worksteal "$@"
