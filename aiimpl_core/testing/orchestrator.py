"""Drive the orchestrator from a plugin's tests: poll, dispatch, reconcile, and read jobs afresh.

Each function works in the current application context (the ``app`` fixture pushes one) and does
what the poll loop, ``aiimpl dispatch`` or the reconciler does in production, with the plugins of
the test app::

    from aiimpl_core.testing import orchestrator
    from aiimpl_core.testing.fakes import add_mapping

    def test_a_triggered_issue_is_dispatched_to_my_backend(app, tracker):
        add_mapping("ENG", execution_mode="my-backend")
        tracker.add("ENG-1")
        orchestrator.poll_once(reconcile=False)
        [job] = orchestrator.jobs("ENG-1")
        assert (job.status, job.backend) == ("dispatched", "my-backend")
        orchestrator.reconcile()  # asks my-backend's poll_runs about the job

The test's database session is the one the ``client`` fixture's requests use too: rows it has
read stay cached, and its open transaction keeps its snapshot. Call :func:`fresh` before reading
what another thread or process committed (a live server thread, a session program, a second
poller); :func:`jobs` does it for you.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..orm import Job
    from ..services.dispatch import CycleReport
    from ..services.reconcile import ReconcileReport
    from ..types import Phase

T = TypeVar("T")
R = TypeVar("R")


def poll_once(now: datetime | None = None, *, reconcile: bool = True, deliver: bool = True) -> CycleReport:
    """One poll cycle, as ``aiimpl poll --once`` runs it: read every configured tracker, check the
    triggered issues, claim and dispatch the eligible ones, then reconcile and send the outbox.

    :param now: the cycle's clock (move it forward to pass a window or a lifetime).
    :param reconcile: also ask the runner backends about the jobs in flight.
    :param deliver: also send the queued tracker writes (comments, stage changes).
    :returns: what the cycle did (``report.dispatched``, ``report.blocked``, ``report.errors`` …).
    """
    from ..services.dispatch import run_cycle

    return run_cycle(now, reconcile=reconcile, deliver=deliver)


def dispatch_issue(issue_key: str, *, phase: Phase | None = None, force: bool = False) -> CycleReport:
    """Dispatch one issue now, as ``aiimpl dispatch ISSUE`` does: the issue is read with the
    tracker's ``get_issue`` and goes through the same checks as in a poll cycle.

    :param phase: the phase to run (default: the one the issue's stage calls for).
    :param force: dispatch even without the trigger, or while a job of the issue is in flight.
    """
    from ..services.dispatch import dispatch_issue as dispatch

    return dispatch(issue_key, phase=phase, force=force)


def reconcile(now: datetime | None = None) -> ReconcileReport:
    """One reconcile pass: every runner backend's ``poll_runs`` is called once with its jobs in
    flight, and the jobs are linked or ended by what it answers.

    :param now: the pass's clock (move it forward to pass the ``run_not_found`` window, a
        lifetime, or the grace a run that ended without a result gets).
    """
    from ..services.reconcile import reconcile as reconcile_pass

    return reconcile_pass(now)


def fresh() -> None:
    """Start a new snapshot: end the test's database transaction and forget every row it read, so
    the next read (the test's, or a ``client`` request's) sees what others committed since.

    Rows already loaded stay usable and are read again when next touched. What the test changed
    and did not commit is discarded: commit first.
    """
    from ..extensions import db

    db.session.rollback()
    db.session.expire_all()


def jobs(issue_key: str | None = None) -> list[Job]:
    """The jobs (of ``issue_key``, or all), oldest first, read afresh (see :func:`fresh`)."""
    from sqlalchemy import select

    from ..extensions import db
    from ..orm import Job

    fresh()
    query = select(Job).order_by(Job.id)
    if issue_key is not None:
        query = query.where(Job.issue_key == issue_key)
    return list(db.session.scalars(query))


def each_released_together(
    prepare: Callable[[], AbstractContextManager[R]], calls: Sequence[Callable[[R], T]],
    timeout: float | None = None,
) -> list[T]:
    """Each of ``calls`` from a thread of its own, the threads released together, each call with
    a resource of its own that ``prepare()`` gives (entered before the release, left after the
    call); what each answered, in the order of ``calls``. A call that raised fails the test, and so
    does one still running ``timeout`` seconds after the last thread was waited for."""
    import threading

    if not calls:
        return []
    barrier = threading.Barrier(len(calls))
    answers: dict[int, T] = {}
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            with prepare() as resource:
                barrier.wait()
                answers[n] = calls[n](resource)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if failures:
        raise failures[0]
    running = len(calls) - len(answers)
    assert running == 0, f"{running} of {len(calls)} calls still running after {timeout} s"
    return [answers[n] for n in range(len(calls))]


def released_together(
    prepare: Callable[[], AbstractContextManager[R]], call: Callable[[R], T], times: int,
    timeout: float | None = None,
) -> list[T]:
    """``call(resource)`` from ``times`` threads released together, each with a resource of its
    own that ``prepare()`` gives: :func:`each_released_together` with the same call ``times``
    over."""
    return each_released_together(prepare, [call] * times, timeout)


def each_at_once(app: Any, calls: Sequence[Callable[[Any], T]], timeout: float | None = None) -> list[T]:
    """Each of ``calls`` as ``call(test_client)`` from a thread of its own, the threads released
    together, each in an app context and a database session of its own (several workers or hosts
    acting at the same moment: a cancel and a result, a webhook and a poll cycle); what each
    answered, in the order of ``calls``. A call that raised fails the test."""
    from contextlib import contextmanager

    from ..extensions import db

    @contextmanager
    def client_of_its_own() -> Iterator[Any]:
        with app.app_context():
            try:
                yield app.test_client()
            finally:
                db.session.remove()

    return each_released_together(client_of_its_own, calls, timeout)


def at_once(app: Any, call: Callable[[Any], T], times: int, timeout: float | None = None) -> list[T]:
    """``call(test_client)`` from ``times`` threads released together, each in an app context and
    a database session of its own: :func:`each_at_once` with the same call ``times`` over."""
    return each_at_once(app, [call] * times, timeout)


class Pause:
    """Makes ``module.name`` wait, after its first call in the thread named ``thread`` returns,
    until :meth:`release`: that thread's transaction stays open with whatever locks it holds, so a
    test can start a second writer and see it wait (:func:`wait_until_blocked`)."""

    def __init__(self, monkeypatch: Any, module: Any, name: str, thread: str) -> None:
        import threading

        self.entered, self._release = threading.Event(), threading.Event()
        original = getattr(module, name)

        def paused(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            if threading.current_thread().name == thread and not self.entered.is_set():
                self.entered.set()
                assert self._release.wait(30), "never released"
            return result

        monkeypatch.setattr(module, name, paused)

    def release(self) -> None:
        self._release.set()


class Worker:
    """``work()`` in a thread named ``name``, with an app context (so a database session and
    connection) of its own: another gunicorn worker or host. :meth:`join` returns its answer or
    raises what it raised."""

    def __init__(self, app: Any, name: str, work: Callable[[], Any]) -> None:
        import threading

        from ..extensions import db

        self.answer: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                with app.app_context():
                    try:
                        self.answer = work()
                    finally:
                        db.session.remove()
            except BaseException as exc:  # noqa: BLE001 - raised again by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name=name)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive(), "still running after 60 s"
        if self.error is not None:
            raise self.error
        return self.answer


def first_holds_second_waits(
    app: Any, pause: Pause, first: Worker, second: Callable[[], Worker]
) -> tuple[Any, Any]:
    """An interleaving made for sure: ``first`` reaches ``pause`` (inside its transaction, its locks
    held); ``second()`` is started and seen waiting for a lock (:func:`wait_until_blocked`); then
    both go on and finish. Returns what each answered, the first's first; raises what either
    raised."""
    waiter: Worker | None = None
    try:
        assert pause.entered.wait(30), first.error or "the first worker never reached the pause"
        waiter = second()
        wait_until_blocked(app, waiter)
    finally:
        pause.release()
        for worker in (first, waiter):
            if worker is not None:
                worker.thread.join(60)
    return first.join(), waiter.join()


def wait_until_blocked(app: Any, worker: Worker | None = None) -> None:
    """Wait until ``worker`` (or, without one, some session) waits for a lock another transaction
    holds. PostgreSQL shows it (a session of the test database waiting for a lock: advisory, row or
    unique-index); SQLite's wait for ``BEGIN IMMEDIATE`` cannot be seen, so there it only has not
    finished half a second later."""
    import time

    from ..extensions import db

    if not app.config["AIIMPL_DATABASE_URL"].startswith("postgresql"):
        time.sleep(0.5)
        if worker is not None:
            assert worker.thread.is_alive() and worker.error is None, worker.error
        return
    waiting = db.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + 20
    with db.engine.connect() as conn:
        while conn.execute(waiting).scalar_one() == 0:
            if worker is not None:
                assert worker.thread.is_alive(), f"finished without waiting for the lock ({worker.error!r})"
            assert time.monotonic() < deadline, "never waited for the other transaction's lock"
            time.sleep(0.02)
            conn.rollback()


__all__ = ["Pause", "Worker", "at_once", "dispatch_issue", "each_at_once", "each_released_together",
           "first_holds_second_waits", "fresh", "jobs", "poll_once", "reconcile", "released_together",
           "wait_until_blocked"]
