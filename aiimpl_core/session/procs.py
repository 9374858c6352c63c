"""Running child processes under the session's clock and stop signal.

Every command the session starts (git, setup, the agent, verification) runs in its own process
group with its output captured to a file, and is stopped — SIGTERM to the whole group, then
SIGKILL after a grace period — when the wall-clock budget runs out or the runner stops the
session. Nothing here prints: callers decide what (redacted) output goes anywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: seconds a stopped process gets to exit after SIGTERM before SIGKILL
GRACE_SECONDS = 10.0
#: how much of a command's output (each stream) is read back: the end (git's too: what the session
#: reads whole, a patch, git writes to a file of its own)
KEEP_OUTPUT_BYTES = 8 * 1024 * 1024
#: how far into what is kept of a cut output the end of the line the cut landed in is looked for
PARTIAL_LINE_BYTES = 64 * 1024
#: the exit status of a command not started because the session was stopped or its budget spent
#: (``timeout``'s, as git's commands the session stopped say)
NOT_STARTED = 124


@dataclass
class ProcessResult:
    """How a child process ended. ``stopped`` is ``"deadline"`` or ``"signal"`` when we ended it."""

    code: int
    stdout: str
    stderr: str
    stopped: str | None = None
    seconds: float = 0.0
    #: the process group it ran in (its pid), which processes it left running may still be in
    group: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.stopped is None

    @property
    def output(self) -> str:
        """stdout and stderr together (stderr last: that is where tools put the error)."""
        return "\n".join(part for part in (self.stdout.rstrip(), self.stderr.rstrip()) if part)


def shell_status(returncode: int) -> int:
    """A process's exit status as a shell says it: ``128 + N`` for one a signal ``N`` ended
    (``137``: SIGKILL, the kernel's out-of-memory killer's), which :mod:`subprocess` gives as
    ``-N``; a reason such as ``exit code -9`` reads as no exit status anyone knows."""
    return 128 - returncode if returncode < 0 else returncode


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


#: seconds the processes a finished command left behind get to exit after SIGTERM before SIGKILL
REAP_GRACE = 2.0


def reap(group: int | None, grace: float = REAP_GRACE) -> bool:
    """End what is left of process group ``group`` (what a finished command started in the
    background): SIGTERM, then SIGKILL after ``grace`` seconds. Whether anything was left."""
    if group is None:
        return False
    try:
        os.killpg(group, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    end = time.monotonic() + grace
    while time.monotonic() < end:
        time.sleep(0.05)
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return True
    try:
        # (what is left may be zombies its parent has not collected yet: SIGKILL does no harm)
        os.killpg(group, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return True


def run(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    deadline: float | None = None,
    stop: threading.Event | None = None,
    grace: float = GRACE_SECONDS,
    keep_bytes: int | None = None,
    linger: bool = False,
) -> ProcessResult:
    """Run ``argv`` to completion, or until ``deadline`` (a ``time.monotonic()`` value) or ``stop``;
    not at all once either has come (``stopped`` then says which, the exit status is
    :data:`NOT_STARTED`).

    What the command started in the background (in its process group) is ended with it, unless
    ``linger``: the services a setup script starts for the verification, which the caller ends
    later with :func:`reap` (``ProcessResult.group``).
    A missing executable is reported like a shell would (exit 127), not raised; so is a process
    a signal ended (exit ``128 + N``, :func:`shell_status`).
    """
    # a stop that came between two commands (while the session did anything else: a short git
    # command, a call to GitHub) is seen before the next one starts, not missed because the
    # command ended within the first look at it
    if stop is not None and stop.is_set():
        return ProcessResult(NOT_STARTED, "", "", "signal")
    if deadline is not None and time.monotonic() >= deadline:
        return ProcessResult(NOT_STARTED, "", "", "deadline")
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except FileNotFoundError:
            return ProcessResult(127, "", f"{argv[0]}: command not found", None, 0.0)
        except PermissionError:
            return ProcessResult(126, "", f"{argv[0]}: permission denied", None, 0.0)
        except OSError as exc:  # E2BIG (an argument or the environment too large) and the like
            return ProcessResult(126, "", f"{argv[0]}: {exc.strerror or type(exc).__name__}", None, 0.0)
        except (ValueError, UnicodeError) as exc:  # an argument holding a NUL, or no UTF-8
            return ProcessResult(126, "", f"{argv[0]}: {exc}", None, 0.0)
        if stdin is not None:
            # written beside the wait below, so that a program that never reads its input is still
            # stopped at the deadline or on a stop, not left blocking this write
            threading.Thread(target=_feed, args=(proc, stdin.encode()), daemon=True).start()
        stopped: str | None = None
        while True:
            try:
                proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                pass
            if stop is not None and stop.is_set():
                stopped = "signal"
            elif deadline is not None and time.monotonic() >= deadline:
                stopped = "deadline"
            if stopped:
                _kill_group(proc, grace)
                break
        if stopped or not linger:
            # an agent's dev server or watcher left running would go on changing the work tree
            # while it is committed and pushed, and outlive the session; so would a process of a
            # stopped command that ignores SIGTERM once the command itself has exited
            reap(proc.pid)
        code = shell_status(proc.returncode) if proc.returncode is not None else 128 + signal.SIGKILL
        return ProcessResult(
            code, _read(out, keep_bytes), _read(err, keep_bytes), stopped, time.monotonic() - started,
            group=proc.pid,
        )


def _read(stream: Any, keep_bytes: int | None) -> str:
    """A stream's captured text; with ``keep_bytes``, only its end (a tool that printed gigabytes
    must not take the session's memory: what matters, the error or the result, comes last)."""
    size = stream.seek(0, os.SEEK_END)
    if keep_bytes is None or size <= keep_bytes:
        stream.seek(0)
        return stream.read().decode("utf-8", "replace")
    stream.seek(size - keep_bytes)
    data = stream.read()
    # the line the cut lands in is left out whole (when it ends soon): a secret on it would be cut
    # in two, and no redaction finds the end of one
    newline = data.find(b"\n", 0, PARTIAL_LINE_BYTES)
    if newline >= 0:
        data = data[newline + 1 :]
    kept = data.decode("utf-8", "replace")
    return f"… ({size - len(data):,} bytes of output before this left out)\n{kept}"


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):  # it exited, or was stopped, before reading it all
        pass


def tail(text: str, chars: int = 2000) -> str:
    """The end of ``text`` (where errors are), at most ``chars`` characters, cut at a line start."""
    text = text.strip()
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    newline = cut.find("\n")
    return "…" + (cut[newline:] if 0 <= newline < chars // 2 else cut)
