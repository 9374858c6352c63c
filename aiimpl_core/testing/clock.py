"""A clock a test moves by hand, read by providers as ``context.clock()``.

The kit's ``app`` fixture gives its providers the ``aiimpl_clock`` fixture's :class:`Clock`, and
the helpers of :mod:`aiimpl_core.testing.orchestrator` that take a ``now`` stop it there for their
call, so a backend's ``poll_runs`` or ``sweep`` sees the time the reconciler was given::

    def test_a_run_past_its_lifetime_is_stopped(app, aiimpl_clock):
        ...
        aiimpl_clock.advance(hours=2)
        orchestrator.reconcile()  # the core and the backend both read the clock's time
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta


class Clock:
    """The current time (UTC) until :meth:`set` or :meth:`advance` stop it at a time of the test's;
    :meth:`reset` lets it run again. :meth:`at` stops it for one thread only.

    :param now: where it starts stopped (default: running).
    :param base: what it reads while it runs (default: the current time).
    """

    def __init__(self, now: datetime | None = None, *, base: Callable[[], datetime] | None = None) -> None:
        #: the time it is stopped at for every thread, or ``None`` while it runs
        self.now = _utc(now) if now is not None else None
        self._base = base or (lambda: datetime.now(UTC))
        self._thread = threading.local()

    def __call__(self) -> datetime:
        return self.stopped_at() or _utc(self._base())

    def stopped_at(self) -> datetime | None:
        """The time it reads in this thread while stopped; ``None`` while it runs."""
        return getattr(self._thread, "now", None) or self.now

    def set(self, now: datetime) -> None:
        """Stop it at ``now`` (in UTC; a naive time is taken as UTC, as the database's columns do)."""
        self.now = _utc(now)

    def advance(self, **delta: float) -> None:
        """Stop it ``timedelta(**delta)`` after what it reads now (``advance(minutes=61)``)."""
        self.now = self() + timedelta(**delta)

    def reset(self) -> None:
        """Let it run again."""
        self.now = None

    @contextmanager
    def at(self, now: datetime) -> Iterator[Clock]:
        """Stopped at ``now`` inside the block, for the thread that entered it (threads released
        together each keep their own time); as it was before, after."""
        before = getattr(self._thread, "now", None)
        self._thread.now = _utc(now)
        try:
            yield self
        finally:
            self._thread.now = before


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


__all__ = ["Clock"]
