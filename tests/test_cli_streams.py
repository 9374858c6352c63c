"""The command line where its streams are not the usual ones: standard input closed, a terminal
interrupted at a prompt, standard output that cannot be written, values that are no UTF-8."""
from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from aiimpl_core.app import database_url
from aiimpl_core.testing.pytest_plugin import migrate


def _environ(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_INSTANCE_PATH=str(tmp_path / "instance"),
                   AIIMPL_SECRET_KEY="cli-streams-test-key-of-32-characters!")
    return environ


def _aiimpl(tmp_path: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:  # noqa: ANN001
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=_environ(tmp_path),
                          cwd=tmp_path, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """``tmp_path``, whose instance folder holds the default database, migrated (in this process:
    the command's own run is tested in test_cli_database.py)."""
    migrate(database_url(None, str(tmp_path / "instance")))
    return tmp_path


@pytest.mark.parametrize(("args", "said"), [
    (("mappings", "delete", "OPS"),
     "Error: not deleted: give --yes to delete without a terminal to confirm on"),
    (("mappings", "create", "OPS", "--from-json", "-"),
     "Error: Invalid value for '--from-json': standard input is closed"),
])
def test_a_closed_standard_input_is_said_in_one_line(instance, args, said):
    """``<&-`` left Python no ``sys.stdin``: the commands that read it ended in a traceback."""
    command = " ".join([sys.executable, "-m", "aiimpl_core.cli", *args])
    done = subprocess.run(["bash", "-c", f"exec {command} <&-"], env=_environ(instance), cwd=instance,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == said
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [("config",), ("jobs", "list"), ("outbox", "list", "--json")])
def test_output_that_cannot_be_written_is_said_in_one_line(instance, args):
    """A full disk under ``> out.json``: one line and exit status 1, not a traceback."""
    with open("/dev/full", "w") as full:
        done = _aiimpl(instance, *args, stdout=full)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: the output could not be written: No space left on device\n"


@pytest.mark.parametrize("args", [("config",), ("jobs", "list"), ("db", "current")])
def test_a_closed_standard_output_is_said_in_one_line(instance, args):
    """``>&-`` left Python no ``sys.stdout``: click wrote nowhere and the command exited 0 with its
    answer lost; Alembic's ``db current`` ended in a traceback. Started as the ``aiimpl`` script is
    (``python -m aiimpl_core.cli`` loads the command line before its entry point runs)."""
    script = "from aiimpl_core._entry import main; main()"
    command = " ".join([sys.executable, "-c", f"'{script}'", *args])
    done = subprocess.run(["bash", "-c", f"exec {command} >&-"], env=_environ(instance), cwd=instance,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "Error: the output could not be written: Bad file descriptor\n"


def test_a_reader_that_stopped_ends_the_output_quietly(instance, capsys, monkeypatch):
    """``| head`` gone before the output was written: click ends quietly with status 1, and so does
    output written past click.echo and flushed at the end (Alembic's `db history` said `Error: …
    Broken pipe`); another failure to write is said."""
    import errno

    from aiimpl_core import cli

    read, write = os.pipe()
    os.close(read)
    try:
        done = _aiimpl(instance, "config", stdout=write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (1, "")

    monkeypatch.setattr(os, "dup2", lambda *args: None)  # (the test's own standard output stays)
    for code, said in ((errno.EPIPE, ""), (errno.ENOSPC, "Error: the output could not be written: full\n")):
        with pytest.raises(SystemExit) as ended, cli._output_errors_said():
            raise OSError(code, "full" if code == errno.ENOSPC else "Broken pipe")
        assert (ended.value.code, capsys.readouterr().err) == (1, said)


def test_ctrl_c_at_a_prompt_exits_130(instance):
    """click turns Ctrl-C at a prompt into its Abort (exit 1, as a "no"): a script tells an interrupt
    from a failure by 130, as during any other part of a command."""
    master, slave = pty.openpty()

    def controlling_terminal() -> None:  # (the new session's terminal: Ctrl-C reaches the process)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "mappings", "delete", "OPS"],
                            stdin=slave, stdout=slave, stderr=slave, env=_environ(instance), cwd=instance,
                            start_new_session=True, preexec_fn=controlling_terminal)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"[y/N]: " not in seen and time.monotonic() < deadline:  # (the space: input()'s prompt)
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 4096)
        assert b"Delete the mapping of OPS? [y/N]: " in seen, seen
        # Ctrl-C once the process sleeps in its read: between input()'s prompt and the read, Python
        # only notes a SIGINT, and the read then waits for Enter (CPython issue 112585)
        while _state(proc.pid) != "S" and time.monotonic() < deadline:
            time.sleep(0.01)
        os.write(master, b"\x03")
        assert proc.wait(timeout=60) == 130
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # (the terminal's other end closed)
                break
            if not chunk:
                break
            seen += chunk
    finally:
        proc.kill()
        os.close(master)
    assert b"Aborted." in seen and b"Traceback" not in seen, seen


def _state(pid: int) -> str:
    """A process's state letter in ``/proc`` (``S``: asleep, as in a read)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_a_default_of_0_is_shown(run_config):
    """``AIIMPL_PROXY_HOPS`` and ``AIIMPL_HSTS_SECONDS`` default to 0, which showed as no default."""
    lines = {line.split()[0]: line for line in run_config.splitlines() if line.startswith("AIIMPL_")}
    assert lines["AIIMPL_PROXY_HOPS"].split(None, 1)[1] == "- (default 0)"
    assert lines["AIIMPL_HSTS_SECONDS"].split(None, 1)[1] == "- (default 0)"


@pytest.fixture
def run_config(instance) -> str:
    done = _aiimpl(instance, "config")
    assert done.returncode == 0, done.stderr
    return done.stdout
