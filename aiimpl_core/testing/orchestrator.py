"""Drive the orchestrator from a plugin's tests: poll, dispatch, reconcile, play a session's
callbacks, and read jobs afresh.

Each function works in the current application context (the ``app`` fixture pushes one) and does
what the poll loop, ``aiimpl dispatch``, the reconciler or a session does in production, with the
plugins of the test app::

    from aiimpl_core.testing import orchestrator
    from aiimpl_core.testing.fakes import add_mapping

    def test_a_triggered_issue_is_dispatched_to_my_backend(app, client, tracker):
        add_mapping("ENG", execution_mode="my-backend")
        tracker.add("ENG-1")
        orchestrator.poll_once(reconcile=False)
        [job] = orchestrator.jobs("ENG-1")
        assert (job.status, job.backend) == ("dispatched", "my-backend")
        orchestrator.reconcile()  # asks my-backend's poll_runs about the job
        env = ...  # the DispatchRequest.env my-backend was handed
        orchestrator.post_result(client, env, "failure", error="the agent gave up")

The test's database session is the one the ``client`` fixture's requests use too: rows it has
read stay cached, and its open transaction keeps its snapshot. Call :func:`fresh` before reading
what another thread or process committed (a live server thread, a session program, a second
poller); :func:`jobs` does it for you.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..orm import Job
    from ..services.dispatch import CycleReport
    from ..services.reconcile import ReconcileReport
    from ..types import DispatchRequest, Phase

T = TypeVar("T")
R = TypeVar("R")


def poll_once(now: datetime | None = None, *, reconcile: bool = True, deliver: bool = True) -> CycleReport:
    """One poll cycle, as ``aiimpl poll --once`` runs it: read every configured tracker, check the
    triggered issues, claim and dispatch the eligible ones, then reconcile and send the outbox.

    :param now: the cycle's clock (move it forward to pass a window or a lifetime); the providers'
        ``context.clock()`` reads it too while the cycle runs. Default: the time the kit's
        ``aiimpl_clock`` is stopped at, else the current time.
    :param reconcile: also ask the runner backends about the jobs in flight.
    :param deliver: also send the queued tracker writes (comments, stage changes).
    :returns: what the cycle did (``report.dispatched``, ``report.blocked``, ``report.errors`` …).
    """
    from ..services.dispatch import run_cycle

    with providers_clock_at(now) as cycle_now:
        return run_cycle(cycle_now, reconcile=reconcile, deliver=deliver)


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
        lifetime, or the grace a run that ended without a result gets); the backends'
        ``context.clock()`` reads it too while the pass runs. Default: the time the kit's
        ``aiimpl_clock`` is stopped at, else the current time.
    """
    from ..services.reconcile import reconcile as reconcile_pass

    with providers_clock_at(now) as pass_now:
        return reconcile_pass(pass_now)


@contextmanager
def providers_clock_at(now: datetime | None) -> Iterator[datetime | None]:
    """The current app's providers read ``now`` as ``context.clock()`` inside the block, in this
    thread (each thread of :func:`at_once` keeps its own); yields ``now``. Without ``now``, changes
    nothing and yields the time the app's clock is stopped at (``aiimpl_clock.set(…)``), or
    ``None`` while it runs.

    An app the kit's ``app`` fixture did not build gets a :class:`~aiimpl_core.testing.clock.Clock`
    that reads its providers' own clock while it runs.
    """
    from flask import current_app

    from .clock import Clock

    context = current_app.extensions["aiimpl"].context
    clock = context.clock
    if not isinstance(clock, Clock):
        clock = context.clock = Clock(base=clock)
    if now is None:
        yield clock.stopped_at()
        return
    with clock.at(now):
        yield now


def result_request(
    env: Mapping[str, str] | DispatchRequest, outcome: str, *, phase: str | None = None,
    pr_url: str | None = None, pr_number: int | None = None, plan: str | None = None,
    error: str | None = None, comments: Sequence[str | Mapping[str, Any]] = (), **fields: Any,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of ``POST /runner/result`` as the session handed ``env`` sends them
    (the reference's ``RunnerResult``, with the bearer ``AIIMPL_RESULT_TOKEN``): for a server of
    another thread or process, or a body to change before it is sent. :func:`post_result` sends
    it through a test client.

    :param env: the environment the runner backend was handed (``DispatchRequest.env``), or the
        request itself.
    :param outcome: ``success`` or ``failure``.
    :param phase: the phase reported (default: the environment's ``AIIMPL_PHASE``, the job's).
    :param pr_url: ``prUrl``: an implementation's ``success`` needs it.
    :param pr_number: ``prNumber``.
    :param plan: ``plan``: a planning's ``success`` without one fails as planning.
    :param error: ``error``, what went wrong (a ``failure``).
    :param comments: the comments to post on the issue: each a Markdown body, or an object sent as
        it is.
    :param fields: any other field, named as the reference names it (``logExcerpt``, ``review``,
        ``costUsd`` …), sent as given (``None`` as ``null``); it also replaces a field above.
    """
    env = _session_env(env)
    body: dict[str, Any] = {
        "outcome": outcome,
        "phase": phase or _env_value(env, "AIIMPL_PHASE"),
        "comments": [{"body": c} if isinstance(c, str) else dict(c) for c in comments],
    }
    for name, value in (("prUrl", pr_url), ("prNumber", pr_number), ("plan", plan), ("error", error)):
        if value is not None:
            body[name] = value
    body.update(fields)
    return body, {"Authorization": f"Bearer {_env_value(env, 'AIIMPL_RESULT_TOKEN')}"}


def post_result(client: Any, env: Mapping[str, str] | DispatchRequest, outcome: str, **kw: Any) -> Any:
    """``POST /runner/result`` through ``client`` as the session handed ``env`` sends it; the
    answer. Takes the arguments of :func:`result_request`::

        env = runner.runs[job.id].request.env  # what the backend was handed
        resp = orchestrator.post_result(client, env, "success", pr_url="https://github.com/acme/api/pull/1")
        assert resp.get_json()["status"] == "completed"

    The result token is single-use: a second result of the job is answered ``409 already_consumed``.
    """
    body, headers = result_request(env, outcome, **kw)
    return client.post("/runner/result", json=body, headers=headers)


def progress_request(
    env: Mapping[str, str] | DispatchRequest, step_id: str = "agent", *, status: str = "running",
    step_type: str | None = None, started_at: str | None = None, finished_at: str | None = None,
    detail: Any = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of ``POST /runner/progress`` as the session handed ``env`` reports a
    step (the reference's ``RunnerProgress``, with the bearer ``AIIMPL_PROGRESS_TOKEN``).

    :param step_id: the step's id (a report of the same id replaces the step's earlier one).
    :param status: ``running``, ``succeeded``, ``failed``, ``skipped`` …
    :param step_type: the step's type (default: its id, as the session program reports its steps).
    :param started_at: an ISO 8601 time (default: the current time).
    :param finished_at: an ISO 8601 time, for a step that ended.
    :param detail: what the step reports beside (any JSON value).
    """
    env = _session_env(env)
    step: dict[str, Any] = {
        "id": step_id, "type": step_type or step_id, "status": status,
        "started_at": started_at or _iso(datetime.now(UTC)),
    }
    if finished_at is not None:
        step["finished_at"] = finished_at
    if detail is not None:
        step["detail"] = detail
    return {"step": step}, {"Authorization": f"Bearer {_env_value(env, 'AIIMPL_PROGRESS_TOKEN')}"}


def post_progress(client: Any, env: Mapping[str, str] | DispatchRequest, step_id: str = "agent",
                  **kw: Any) -> Any:
    """``POST /runner/progress`` through ``client`` as the session handed ``env`` reports a step
    (the first report moves the job to ``running``); the answer. Takes the arguments of
    :func:`progress_request`."""
    body, headers = progress_request(env, step_id, **kw)
    return client.post("/runner/progress", json=body, headers=headers)


def _session_env(env: Mapping[str, str] | DispatchRequest) -> Mapping[str, str]:
    from ..types import DispatchRequest

    return env.env if isinstance(env, DispatchRequest) else env


def _env_value(env: Mapping[str, str], name: str) -> str:
    value = env.get(name)
    assert value, f"the environment holds no {name}: pass the one the runner backend was handed " \
                  "(DispatchRequest.env)"
    return value


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


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


def held(monkeypatch: Any, cls: type, name: str) -> tuple[Any, Any]:
    """Makes the method ``cls.name``, once called, wait until the second event returned is set
    before it runs (a backend slower than a webhook's answer, say); the first is set when it is
    called, its ``at`` the ``time.monotonic()`` of that call. Unlike :class:`Pause`, it holds every
    thread's call, before it does anything."""
    import threading
    import time

    called, release = threading.Event(), threading.Event()
    original = getattr(cls, name)

    def wait_then_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        called.at = time.monotonic()  # type: ignore[attr-defined]
        called.set()
        assert release.wait(30), "never released"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, wait_then_call)
    return called, release


def answer_due_after(monkeypatch: Any, reached: Any) -> None:
    """Makes a tracker webhook's answer come ``AIIMPL_WEBHOOK_ANSWER_SECONDS`` after the event
    ``reached`` is set (by :func:`held`, say) rather than after the check started: on a loaded
    machine the check may take longer than the answer's time to get where the test holds it."""
    from .. import webhooks

    original = webhooks._Check.wait

    def wait(self: Any, seconds: float) -> bool:
        assert reached.wait(30), "the check never got where the test holds it"
        return original(self, seconds)

    monkeypatch.setattr(webhooks._Check, "wait", wait)


class Pause:
    """Makes ``module.name`` wait, after its first call in the thread named ``thread`` returns,
    until :meth:`release`: that thread's transaction stays open with whatever locks it holds, so a
    test can start a second writer and see it wait (:func:`wait_until_blocked`). A thread that one
    started to work for it, named ``thread/…`` (a tracker webhook's dispatch check), counts as it."""

    def __init__(self, monkeypatch: Any, module: Any, name: str, thread: str) -> None:
        import threading

        self.entered, self._release = threading.Event(), threading.Event()
        original = getattr(module, name)

        def paused(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            current = threading.current_thread().name
            if (current == thread or current.startswith(thread + "/")) and not self.entered.is_set():
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


__all__ = ["Pause", "Worker", "answer_due_after", "at_once", "dispatch_issue", "each_at_once",
           "each_released_together", "first_holds_second_waits", "fresh", "held", "jobs", "poll_once",
           "post_progress", "post_result", "progress_request", "providers_clock_at", "reconcile",
           "released_together", "result_request", "wait_until_blocked"]
