"""A job's container is removed by a clean-up thread once the job ends; a process that exits
meanwhile (``aiimpl poll --once``, a recycled worker) waits for it, within a bound, rather than
leave the container, with the job's secrets in its environment, to a later poll's sweep."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def _exit_with_a_cleanup_under_way(tmp_path, seconds: float, timeout: float) -> subprocess.CompletedProcess:
    script = textwrap.dedent(f"""
        import time
        from aiimpl_core.testing.contract import make_context
        from aiimpl_docker.backend import LocalDockerBackend

        class Backend(LocalDockerBackend):
            def cleanup_job(self, job_id):  # the engine's listing and removal, this long
                time.sleep({seconds})
                open({str(tmp_path / "removed")!r}, "w").close()

            def wait_for_stops(self, timeout=None):
                open({str(tmp_path / "stops")!r}, "w").close()
                return True

        Backend(make_context({{"AIIMPL_DOCKER_TIMEOUT_SECONDS": "{timeout}"}})).cleanup_in_background(7)
    """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_the_process_waits_for_a_clean_up_under_way(tmp_path) -> None:
    done = _exit_with_a_cleanup_under_way(tmp_path, seconds=1.0, timeout=30)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "removed").exists() and (tmp_path / "stops").exists()


def test_a_clean_up_waiting_on_a_holding_container_does_not_hold_the_exit(tmp_path) -> None:
    """(In the interactive modes a container holds until its lifetime: the sweep removes it.)"""
    done = _exit_with_a_cleanup_under_way(tmp_path, seconds=30.0, timeout=0.5)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "removed").exists() and (tmp_path / "stops").exists()
