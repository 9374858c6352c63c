"""How a job ends: its terminal status, the issue's stage, and the outcome comments.

Used by ``/runner/result``, the reconciler (timeouts, failed runs) and the dispatcher (a refused
dispatch). Ending is compare-and-set: whoever ends a job first wins, and the loser changes nothing.
The caller commits, then delivers the outbox (``outbox.deliver(issue_keys=[job.issue_key])``).

An issue that is done (its pull request was merged: :mod:`.merge`) leaves "done" only by a new
trigger, whose claim sets its stage. A job that ends afterwards (it was still verifying or
reviewing when a person or GitHub's auto-merge merged the PR, or a gap-analysis on it) records its
status and posts what reports its run — the failure notice and the log excerpt — but moves no stage
and posts nothing that asks for the issue to be acted on: neither "ready for review" nor a plan to
approve. The decision is taken on the issue's row read under its row lock (:func:`locked_issue`),
the one the merge takes, so a merge committing at the same moment is never missed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from sqlalchemy import func, select

from ..extensions import db
from ..orm import Blocker, Job, OutboxItem, TrackedIssue, utcnow
from ..types import JobStatus, LogLabel, Phase, Stage, TimeoutReason
from . import blockers, comments
from .jobs import enqueue_comment, set_stage, tracked_issue, transition

log = logging.getLogger(__name__)


def approve_hint(provider_id: str) -> str:
    """The plan comment's last line: how to approve it, in the words of the issue's tracker
    (its ``trigger_hint``)."""
    tracker = current_app.extensions["aiimpl"].classes["ticketing"].get(provider_id)
    how = getattr(tracker, "trigger_hint", "") if tracker is not None else ""
    return ("To approve the plan and start the implementation, apply the trigger again"
            + (f" ({how})." if how else "."))


FAILED_STAGE = {
    Phase.PLANNING: Stage.PLANNING_FAILED,
    Phase.IMPLEMENTATION: Stage.IMPLEMENTATION_FAILED,
}


@dataclass(frozen=True)
class Outcome:
    """What is known about how a job ended.

    :param status: a terminal status.
    :param reason: the underlying failure message (``{reason}`` of the failure comment).
    :param timeout_reason: with ``timed_out``.
    :param log_label: label of the log excerpt, when there is one.
    :param log_excerpt: already redacted by whoever captured it.
    :param session_comment: whether a session that announced itself and did not say how it ended
        gets the reference's ``⚠️ Session failed`` / ``timed out`` comment: for the endings the
        reconciler finds (a machine killed, out of memory, past its lifetime, gone); not for a
        runner's own result (it said what it had to) nor an operator's cancel (no error of the run).
    """

    status: JobStatus
    reason: str | None = None
    timeout_reason: str | None = None
    log_label: LogLabel | None = None
    log_excerpt: str | None = None
    pr_url: str | None = None
    pr_number: int | None = None
    plan: str | None = None
    cost_usd: float | None = None
    turns: int | None = None
    duration_seconds: float | None = None
    session_comment: bool = True

    def __post_init__(self) -> None:
        # a reason of white space alone is none (the comment would end after its colon), and a
        # reason is said without the line breaks around it; so is an excerpt of nothing
        if isinstance(self.reason, str):
            object.__setattr__(self, "reason", self.reason.strip() or None)
        if isinstance(self.log_excerpt, str) and not self.log_excerpt.strip():
            object.__setattr__(self, "log_excerpt", None)


def end_job(job: Job, outcome: Outcome) -> bool:
    """End ``job`` with ``outcome``; return false (changing nothing) when it had already ended."""
    assert outcome.status.terminal, outcome.status
    fields: dict[str, object] = {}
    for attr in ("pr_url", "pr_number", "plan", "cost_usd", "turns", "duration_seconds"):
        value = getattr(outcome, attr)
        if value is not None:
            fields[attr] = value
    if outcome.reason:
        fields["error"] = outcome.reason
    if outcome.log_label:
        fields["log_label"] = outcome.log_label.value
    if outcome.log_excerpt:
        fields["log_excerpt"] = outcome.log_excerpt
    moved = transition(job, outcome.status, reason=outcome.reason or outcome.timeout_reason,
                       timeout_reason=outcome.timeout_reason, **fields)
    if not moved:
        return False
    _report(job, outcome)
    db.session.flush()
    return True


def locked_issue(issue_key: str, *, team_key: str | None, provider: str) -> TrackedIssue:
    """The issue's row, read afresh under its row lock: ``SELECT … FOR UPDATE`` on PostgreSQL
    (waiting for a merge or an ending of the issue that holds it, then reading what it committed),
    the transaction's own ``BEGIN IMMEDIATE`` on SQLite. Created when the issue has none yet.

    Take it after writing the job's row (an ending's compare-and-set, the merge's record of the
    merge commit): both lock the job's row first, then the issue's, so neither waits on the other
    in a circle.
    """
    row = db.session.scalar(
        select(TrackedIssue)
        .where(TrackedIssue.issue_key == issue_key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return row or tracked_issue(issue_key, team_key=team_key, provider=provider)


def _comment(job: Job, kind: str, body: str) -> None:
    enqueue_comment(job.issue_key, body, provider=job.provider or "", kind=kind, job=job,
                    dedupe_key=f"outcome:{job.id}:{kind}")


#: the session's own progress comments that say how it ended (``POST /api/status``)
_SESSION_ENDINGS = ("session_failed", "session_timed_out")


def _session_ending(job: Job, outcome: Outcome, reason: str, now: datetime) -> None:
    """The reference's ``⚠️ Session failed: … Machine will be cleaned up.`` (or ``Session timed
    out``) for a session that announced itself (``session_created``) and ended without saying how:
    a machine killed or out of memory, past its lifetime, or destroyed, which the reconciler found.
    Queued under the key the session's own event has, so it is never posted twice, and not at all
    when the session said either."""
    keys = [f"status:{job.id}:{event}" for event in ("session_created", *_SESSION_ENDINGS)]
    said = set(db.session.scalars(select(OutboxItem.dedupe_key).where(OutboxItem.dedupe_key.in_(keys))))
    if keys[0] not in said or said & set(keys[1:]):
        return
    timed_out = (outcome.status is JobStatus.TIMED_OUT
                 and outcome.timeout_reason != TimeoutReason.RUN_NOT_FOUND.value)
    event = "session_timed_out" if timed_out else "session_failed"
    body = comments.progress(event, {"reason": reason}, now, job.log_url or job.run_url)
    enqueue_comment(job.issue_key, body, provider=job.provider or "", kind=f"progress:{event}", job=job,
                    dedupe_key=f"status:{job.id}:{event}")


def _triggered_again(job: Job) -> bool:
    """Whether a person applied the trigger again while ``job`` ran: its issue was seen triggered
    (its ``dedup`` blocker, "Waiting for the in-flight job") first after the job's own stage change
    had taken the trigger off (a wait that began before, for the job's own trigger, begins again when
    a read of the issue after that shows the trigger: :func:`.blockers.record_many`; a listing,
    which may lag behind the tracker, counts only once such a read confirms it:
    :func:`.blockers.unconfirmed`). Its end-of-run stage change is then left out — it would take
    the newer trigger off too (on Jira, move the issue out of Ready), and the wait would never end
    in a dispatch — and the next cycle dispatches the issue again. A stage change of the job never
    delivered (given up on, or shadow mode) took no trigger off: the ending sets its stage."""
    started = (
        select(func.min(OutboxItem.done_at))
        .where(OutboxItem.job_id == job.id, OutboxItem.op == "stage", OutboxItem.state == "done")
        .scalar_subquery()
    )
    again = select(Blocker.id).where(
        Blocker.issue_key == job.issue_key, Blocker.reason == blockers.DEDUP, Blocker.first_seen_at > started
    )
    if db.session.scalar(again) is None:
        return False
    log.info("%s was triggered again while job %s ran: its stage is left to the next run",
             job.issue_key, job.id)
    return True


def _report(job: Job, outcome: Outcome) -> None:
    phase = Phase(job.phase)
    provider = job.provider or ""
    status = outcome.status
    now = utcnow()
    failed_stage = FAILED_STAGE.get(phase)
    tracked = None
    if status in (JobStatus.COMPLETED, JobStatus.REVIEW_FAILED) or failed_stage is not None:
        # all but a gap-analysis failure depend on whether the issue is done
        tracked = locked_issue(job.issue_key, team_key=job.team_key, provider=provider)
    done = tracked is not None and tracked.stage == Stage.DONE.value

    if status is JobStatus.COMPLETED:
        assert tracked is not None
        if phase is Phase.PLANNING:
            if done:  # the merge closed the issue out: no plan waits for its approval
                return
            tracked.plan = outcome.plan or job.plan
            tracked.plan_job_id = job.id
            set_stage(
                job.issue_key, Stage.PLAN_COMPLETE, provider=provider, job=job, now=now, tracked=tracked
            )
            plan = outcome.plan or job.plan or "(empty plan)"
            _comment(job, "plan", comments.plan_ready(plan, approve_hint(provider)))
        elif phase is Phase.GAP_ANALYSIS:
            # its PR was open already: the issue's stage and plan are left as they are (a plan
            # planned since waits for its approval), the link is posted again as the branch changed
            if job.pr_url and not done:
                _comment(job, "pr", comments.pr_link(job.pr_number, job.pr_url))
        else:
            tracked.plan = None  # a plan is used once; a new trigger plans again
            if done:  # merged already: not "ready for review", and "done" stays
                return
            if not _triggered_again(job):
                set_stage(job.issue_key, Stage.PR_OPENED, provider=provider, job=job, now=now,
                          tracked=tracked)
            if job.pr_url:
                _comment(job, "pr", comments.pr_link(job.pr_number, job.pr_url))
        return

    if status is JobStatus.TIMED_OUT:
        reason = outcome.reason or comments.timed_out_reason(outcome.timeout_reason or "timed_out")
    else:
        reason = outcome.reason or "the run failed"
    if status is not JobStatus.REVIEW_FAILED and outcome.session_comment:
        _session_ending(job, outcome, reason, now)
    if phase is Phase.IMPLEMENTATION and job.pr_url and not done:
        # the run opened its PR, then its review found blockers, or it failed or timed out
        _comment(job, "pr", comments.pr_link(job.pr_number, job.pr_url, ready=False))
    if status is JobStatus.REVIEW_FAILED:
        reason = outcome.reason or "the post-push review flagged blockers"
        _comment(job, "failure", comments.failure(phase, reason))
        _comment(job, "log", comments.log_excerpt(LogLabel.POST_PUSH_REVIEW_NOT_APPROVED,
                                                  outcome.log_excerpt or reason))
        if failed_stage is not None and not done and not _triggered_again(job):
            set_stage(job.issue_key, failed_stage, provider=provider, job=job, now=now, tracked=tracked)
        return

    # failed or timed_out
    _comment(job, "failure", comments.failure(phase, reason))
    label = outcome.log_label
    if label is None and status is JobStatus.TIMED_OUT and outcome.timeout_reason in (
        LogLabel.MACHINE_TIMEOUT.value, LogLabel.CONTAINER_TIMEOUT.value
    ):
        label = LogLabel(outcome.timeout_reason)
    if label is not None:
        _comment(job, "log", comments.log_excerpt(label, outcome.log_excerpt or reason))
    if failed_stage is not None and not done and not _triggered_again(job):
        set_stage(job.issue_key, failed_stage, provider=provider, job=job, now=now, tracked=tracked)
