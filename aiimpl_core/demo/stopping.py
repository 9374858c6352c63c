"""How ``aiimpl demo`` is stopped: SIGINT (Ctrl-C), SIGTERM and SIGHUP (its terminal closed) become
:class:`Interrupted`, which the demo unwinds through, stopping what it started on the way.

Standard library only, so that the command line installs the handlers before it imports the rest
of the demo.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

#: the signals that stop the demo (SIGHUP: the terminal it runs in was closed)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """SIGINT or SIGTERM reached the demo. A :class:`BaseException`, as ``KeyboardInterrupt`` is,
    so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The shell's status of a process ended by this signal: 130 for SIGINT, 143 for SIGTERM,
        129 for SIGHUP."""
        return 128 + self.signum


class StopSignals:
    """Turns :data:`STOP_SIGNALS` into :class:`Interrupted` while the demo runs (a context
    manager; the previous handlers are restored after it). Only the main thread handles signals: in
    another, it does nothing.

    Once the demo is stopping (:attr:`stopping`: interrupted, or on its way out), a signal raises
    nothing, which would cut the stopping short: it sets :attr:`hurry`, and the demo kills its
    sessions without waiting for them.
    """

    def __init__(self) -> None:
        self.hurry = threading.Event()
        self.stopping = False
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: object) -> None:  # noqa: ARG002
        if self.stopping:
            self.hurry.set()
            return
        self.stopping = True
        raise Interrupted(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class GaveUp(Exception):  # noqa: N818 - what the demo says as it exits
    """The demo job did not end within the demo's time limit (the sessions and servers it started
    are stopped by the time it reaches the caller)."""
