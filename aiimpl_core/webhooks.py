"""What a tracker plugin's webhook view takes from the core (public API).

A webhook tells the orchestrator about an issue before the next poll cycle would: the view checks
the delivery's signature itself, then hands the issue keys to :func:`check_issues`, which reads
each issue from the tracker and takes it through the same blockers and claim as a poll cycle (an
issue dispatched by a cycle, another delivery or another host at the same moment is dispatched
once). Bodies are read with :func:`read_json` / :func:`parse_json`, as every endpoint of the core
reads its own: a body of any shape (empty, not UTF-8, too deep, ``NaN``, a NUL) gives
:data:`NOT_JSON` instead of an exception, so the view answers 400, never 500.

The view is registered with ``aiimpl_register_blueprints`` and marked
:func:`aiimpl_core.auth.public_endpoint`: it takes no admin session.

A tracker counts a delivery not answered within a few seconds as failed (Linear after 5 s) and
sends it again later; a dispatch may take longer (a Docker runner pulling its image, a slow
backend). So :func:`check_issues` answers within
``AIIMPL_WEBHOOK_ANSWER_SECONDS``: a check still going on then goes on in the background, and the
report it answers is what the check had done so far, marked ``running``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import current_app

from .schemas.common import NOT_JSON, parse_json, read_json

if TYPE_CHECKING:
    from .services.dispatch import CycleReport

log = logging.getLogger(__name__)


#: what a webhook answers (as its ``reason``) when :func:`check_issues` could not run to its end:
#: the delivery is acknowledged, not bounced back, as the next poll cycle checks the issue anyway
#: (the log says why)
CHECK_FAILED = "dispatch check failed; the next poll cycle retries"


#: what a webhook answers (as its ``reason``) when :func:`check_issues` was still running when the
#: answer was due: it goes on, and the issue's comments and the job show what it did
CHECK_RUNNING = "dispatch check still running when the answer was due; it goes on in the background"

#: the checks running, their webhooks' answers due or given (see :func:`wait_for_checks`)
_running: set[threading.Thread] = set()
_running_lock = threading.Lock()


def check_issues(provider_id: str, issue_keys: Iterable[str]) -> CycleReport:
    """Check and dispatch these issues of tracker ``provider_id`` at once.

    Each key is read with the tracker's ``get_issue`` (a key the tracker has under a newer one, an
    issue moved to another team, is reported under the key ``get_issue`` answers). A triggered
    issue is dispatched or held by a blocker, as in a poll cycle; an issue without its trigger
    only has its blocker cleared. A tracker backing off after failures is not called: the report
    says so in ``providers_skipped``, and the next poll cycle checks the issue.

    The check runs in a thread of its own, with an application context of its own, and this call
    waits for it at most ``AIIMPL_WEBHOOK_ANSWER_SECONDS``. A check still running then goes on in
    the background (its failures are logged), and the report returned is a copy of what it had
    done so far with ``running`` set: an issue it has claimed is in ``dispatched`` with its job's
    status so far (``unknown`` until its launch ends). A check that ends in time raises what it
    raised.

    :returns: the :class:`~aiimpl_core.services.dispatch.CycleReport` of the check, read by issue
        key: ``dispatched_of(key)`` (with ``job_id`` and ``status``), ``blocked[key]`` (``reason``,
        the blocker's slug, and ``message``), ``skipped[key]`` (why it needs nothing), and
        ``providers_skipped`` / ``errors`` when the check could not run to its end.
    """
    # imported when called: the engine owns dispatch, and a plugin module loads without it
    from .orm import utcnow
    from .services.dispatch import CycleReport, run_cycle_for_issues

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    seconds = app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"]
    keys = list(issue_keys)
    report = CycleReport(started_at=utcnow())
    state = _Check()

    def work() -> None:
        try:
            with app.app_context():
                state.result = run_cycle_for_issues(provider_id, keys, report)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, or logged if it answered
            state.error = exc
        finally:
            state.finished(keys, report)

    if not _in_background(work, "webhook-check"):
        log.warning("dispatch check of %s runs in the webhook's request: no thread could be started",
                    ", ".join(keys))
        return run_cycle_for_issues(provider_id, keys, report)
    if not state.wait(seconds):
        log.info("dispatch check of %s still running after %s s: the webhook answers, the check goes on",
                 ", ".join(keys), seconds)
        return _so_far(report)
    if state.error is not None:
        raise state.error
    return state.result or report


def _in_background(work: Callable[[], None], purpose: str) -> bool:
    """Run ``work`` in a thread of its own that :func:`wait_for_checks` waits for; false when no
    thread could be started (the process is at its limit: the caller does the work itself).

    The thread is named after the request's thread it works for (``…/purpose``) and is a daemon, so
    that a process told to stop at once does (gunicorn's worker waits for it on a graceful stop:
    ``gunicorn_conf.worker_exit``). ``work`` sets up its own application context.
    """

    def run() -> None:
        try:
            work()
        finally:
            with _running_lock:
                _running.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=f"{threading.current_thread().name}/{purpose}", daemon=True)
    with _running_lock:
        _running.add(thread)
    try:
        thread.start()
    except RuntimeError:
        with _running_lock:
            _running.discard(thread)
        return False
    return True


class _Check:
    """Whether a check ended and whether its webhook answered first, decided under one lock: a check
    ending as its answer comes due either raises to the caller or logs, never both or neither."""

    def __init__(self) -> None:
        self.result: CycleReport | None = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._answered = False

    def wait(self, seconds: float) -> bool:
        """Wait for the check; false (and the check is on its own from then) if it is still running."""
        if self._ended.wait(seconds):
            return True
        with self._lock:
            if self._ended.is_set():
                return True
            self._answered = True
            return False

    def finished(self, keys: list[str], report: CycleReport) -> None:
        with self._lock:
            self._ended.set()
            late = self._answered
        if not late:
            return
        if self.error is not None:
            log.error("dispatch check of %s, still running when its webhook answered, failed",
                      ", ".join(keys), exc_info=self.error)
        else:
            log.info("dispatch check of %s ended after its webhook answered: %s", ", ".join(keys),
                     report.summary())


def _so_far(report: CycleReport) -> CycleReport:
    """A copy of a running check's report, marked ``running`` (the check goes on changing its own).

    Each part is copied in one step, which the running thread cannot interleave with.
    """
    return dataclasses.replace(
        report,
        listed=dict(report.listed),
        dispatched=[dataclasses.replace(entry) for entry in list(report.dispatched)],
        blocked=dict(report.blocked),
        skipped=dict(report.skipped),
        providers_skipped=dict(report.providers_skipped),
        errors=list(report.errors),
        reconciled=dict(report.reconciled),
        outbox=dict(report.outbox),
        running=True,
    )


def wait_for_checks(timeout: float | None = None) -> bool:
    """Wait for the checks still running after their webhook answered (and the tracker writes of
    GitHub's merged-PR deliveries still being sent); true when none is left.

    A test waits for them before it reads what they did; gunicorn's worker waits for them when it
    stops gracefully. They are daemon threads, so a process that exits without waiting ends them
    wherever they are; the reconciler then ends the job of a launch cut short ``timed_out`` /
    ``run_not_found``, as after a crash.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _running_lock:
        threads = list(_running)
    for thread in threads:
        thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    with _running_lock:
        return not _running


def checks_running() -> int:
    """How many checks are running (once no request is in flight: those that outlasted their answer)."""
    with _running_lock:
        return len(_running)


def __getattr__(name: str) -> Any:
    # ``CycleReport`` for a plugin's annotations, without importing the engine with this module
    if name == "CycleReport":
        from .services.dispatch import CycleReport

        return CycleReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHECK_FAILED",
    "CHECK_RUNNING",
    "NOT_JSON",
    "CycleReport",
    "check_issues",
    "parse_json",
    "read_json",
    "wait_for_checks",
]
