"""The real session program in a container, talking to a live orchestrator over HTTP.

The container runs ``python -m aiimpl_core.session run`` from ``localhost/aiimpl-pytest:py<version>-<hash>``
(busybox plus the Python the tests run on, built by ``scripts/setup-podman.sh``), with this machine's
site-packages and the repository mounted read-only and the host's network, so it reaches the
orchestrator served on 127.0.0.1. Where the session image itself has been built
(``localhost/aiimpl-session:latest``, ``docs/session-image.md``), the same test runs it as
operators do: its own entrypoint, nothing mounted. No GitHub is configured: the session's first call
(``POST /api/token``) fails, and the session reports that failure through ``/runner/result``
itself — the job ends with the session's own reason, and the container is removed once it exits.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.services.dispatch import run_cycle
from aiimpl_core.testing.fakes import FakeTracker
from aiimpl_core.testing.ports import free_port
from aiimpl_core.testing.serving import serve_wsgi

import aiimpl_docker.plugin

from .conftest import INSTANCE, add_eng_mapping, ours

#: the image of the interpreter running the tests, tagged as ``scripts/setup-podman.sh`` tags it:
#: its version and a hash of where it is installed (another Python's image lacks it)
IMAGE = (
    f"localhost/aiimpl-pytest:py{sys.version_info.major}.{sys.version_info.minor}-"
    f"{hashlib.sha256(sys.base_prefix.encode()).hexdigest()[:12]}"
)
SESSION_IMAGE = "localhost/aiimpl-session:latest"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _mounts() -> str:
    """This interpreter's packages and the repository (editable installs point into it), read-only."""
    import sysconfig

    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], REPO}
    if sys.prefix != sys.base_prefix:
        paths.add(sys.prefix)  # a virtual environment: its python and pyvenv.cfg
    return ",".join(f"{p}:{p}:ro" for p in sorted(paths) if os.path.isdir(p))


def _interpreter() -> str:
    """The image has the base interpreter as ``bin/python3``; a virtual environment's is mounted."""
    if sys.prefix != sys.base_prefix:
        return sys.executable
    return os.path.join(sys.base_prefix, "bin", "python3")


def _image_or_skip(engine: Any, image: str) -> str:
    try:
        engine.images.get(image)
    except Exception:  # noqa: BLE001
        how = "scripts/setup-podman.sh imports it" if image == IMAGE else "build it: docs/session-image.md"
        pytest.skip(f"image {image} is missing ({how})")
    return image


@pytest.fixture(scope="module", params=[IMAGE, SESSION_IMAGE])
def python_image(request: pytest.FixtureRequest, engine: Any) -> str:
    return _image_or_skip(engine, str(request.param))


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker, python_image: str) -> list[object]:
    return [tracker.plugin, aiimpl_docker.plugin]


@pytest.fixture
def aiimpl_config(port: int, python_image: str) -> dict[str, Any]:
    config = {
        "AIIMPL_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "AIIMPL_DOCKER_IMAGE": python_image,
        "AIIMPL_DOCKER_INSTANCE": INSTANCE,
        "AIIMPL_DOCKER_NETWORK": "host",
        "RUNNER_MODE": "local",
    }
    if python_image == IMAGE:  # the session image brings the program and its entrypoint
        config["AIIMPL_DOCKER_VOLUMES"] = _mounts()
        config["AIIMPL_DOCKER_COMMAND"] = f"{_interpreter()} -m aiimpl_core.session run"
    return config


@pytest.fixture
def live(app: Any, port: int) -> Iterator[str]:
    with serve_wsgi(app, port=port) as server:
        yield server.url


def _exit_code_and_logs(engine: Any, container_id: str, timeout: float) -> tuple[int, str]:
    """Waits for the container's exit while attached to its log stream.

    Both are taken while it runs: the plugin removes an exited container as soon as its job has
    ended, so reading them after the exit races that removal.
    """
    chunks: list[bytes] = []

    def follow() -> None:
        try:
            for chunk in engine.api.logs(container_id, stream=True, follow=True):
                chunks.append(chunk)
        except Exception:  # noqa: BLE001 - the stream ends however the container goes
            pass

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    code = int(engine.api.wait(container_id, timeout=timeout)["StatusCode"])
    reader.join(timeout=5)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_the_session_in_a_container_reports_its_own_failure(
    app: Any, live: str, tracker: FakeTracker, engine: Any, monkeypatch: Any
) -> None:
    from aiimpl_docker.backend import LocalDockerBackend

    # The plugin removes the container once the job has ended and the process exited; this
    # session fails at its first step, so that can happen before the test starts waiting on it
    # (an engine then answers the wait for a removed container). The removal waits for the test.
    read = threading.Event()
    cleanup = LocalDockerBackend.cleanup_job

    def after_the_test_read(self: Any, job_id: int) -> None:
        read.wait(timeout=90)
        cleanup(self, job_id)

    monkeypatch.setattr(LocalDockerBackend, "cleanup_job", after_the_test_read)
    add_eng_mapping()
    tracker.add("ENG-1", title="Add a health endpoint")

    run_cycle(reconcile=False)

    job = db.session.scalars(db.select(Job).where(Job.issue_key == "ENG-1")).one()
    assert job.backend == "local-docker" and job.run_id, [(t.to_status, t.reason) for t in job.transitions]
    code, logs = _exit_code_and_logs(engine, job.run_id, timeout=60)
    read.set()

    db.session.rollback()  # a fresh transaction sees what the server's threads committed
    job = db.session.get(Job, job.id)
    assert code == 1, logs[-2000:]  # 1: the session delivered its failure report
    assert job.status == "failed", logs[-2000:]
    run_cycle(reconcile=False)  # delivers the outbox
    failures = [c for c in tracker.comments["ENG-1"] if c.startswith("⚠️ Implementation failed:")]
    assert len(failures) == 1 and "token" in failures[0].lower(), tracker.comments["ENG-1"]

    deadline = time.monotonic() + 15  # removed once it exited (the job ended first)
    while ours(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours(engine) == []


def test_the_built_image_runs_its_agent_cli_on_a_node_it_supports(engine: Any) -> None:
    """Claude Code declares Node.js 22 or later; Debian bookworm ships 18, on which it installs
    with a warning only. The image must run the agent on the Node.js it was built for."""
    _image_or_skip(engine, SESSION_IMAGE)
    script = "node -p 'process.versions.node'; claude --version"
    out = engine.containers.run(SESSION_IMAGE, ["-c", script], entrypoint="sh", remove=True).decode()
    node, agent = out.strip().splitlines()[:2]
    assert int(node.split(".")[0]) >= 22, out
    assert "Claude Code" in agent, out
