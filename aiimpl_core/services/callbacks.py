"""What runners report back: results, progress steps, status events, and what they ask for.

The ``/runner/*`` and session (``/api/token``, ``/api/status``, ``/api/step-report``) views parse
and authenticate; everything they change happens here. A refusal is a :class:`CallbackError`
carrying the HTTP status and the reference's ``error`` (slug or message).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flask import current_app
from sqlalchemy import String, bindparam, exists, func, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError

from .. import logs
from ..auth.nonce import INVALID_NONCE, active_job_for_nonce
from ..auth.tokens import RunClaims
from ..database import PREPARED, one_statement, per_dialect, serialized, upsert
from ..errors import AiimplError
from ..extensions import db
from ..orm import ConsumedToken, Job, JobStep, OutboxItem, TrackedIssue, iso_z, utcnow
from ..types import Comment, JobStatus, LogLabel, Phase
from . import comments as comments_mod
from . import outbox, reconcile, redaction
from .dispatch import checked_issue
from .jobs import enqueue_comment, transition
from .outcomes import Outcome, end_job

log = logging.getLogger(__name__)

MAX_REASON = 4000  # a failure reason goes into a ticket comment: keep it postable
MAX_EXCERPT = 20000
_PR_NUMBER_IN_URL = re.compile(r"/pull/(\d+)(?:[/?#]|$)")


@dataclass
class CallbackError(Exception):
    """A refused callback: ``status`` and the body ``{"error": error, **extra}``."""

    status: int
    error: str
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, **self.extra}


class _AlreadyConsumed(Exception):
    pass


def _clip(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pr_number_from_url(url: str | None) -> int | None:
    """``https://github.com/o/r/pull/42`` → 42."""
    if not url:
        return None
    match = _PR_NUMBER_IN_URL.search(url)
    if not match:
        return None
    number = int(match.group(1))
    return number if 0 < number < 2**31 else None


# -- POST /runner/result --------------------------------------------------------------------


#: The reference's "Run failure messages", recognised by how the session words them (first match).
FAILURE_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("max_turns", re.compile(r"Reached max turns", re.I)),
    ("no_changes", re.compile(r"^Nothing to commit", re.I)),
    ("push_or_pr_failed", re.compile(r"^(PR creation failed|git push failed|Push failed)", re.I)),
    ("clone_failed", re.compile(r"^(git clone failed|git checkout failed|Clone failed)", re.I)),
    ("agent_failed", re.compile(r"^LLM invocation failed", re.I)),
)
_PHASE_PREFIX = re.compile(r"^\s*(?:⚠️\s*)?(?:Planning|Implementation|Gap analysis) failed:\s*", re.I)


def strip_phase_prefix(error: str) -> str:
    """``Implementation failed: git clone failed …`` → ``git clone failed …``: the comment adds the
    phase itself (``⚠️ Implementation failed: {reason}``), so it is never said twice."""
    return _PHASE_PREFIX.sub("", error, count=1)


def failure_kind(error: str | None) -> str:
    """Which of the reference's run failures ``error`` is (``other`` when none matches)."""
    text = (error or "").strip()
    for kind, pattern in FAILURE_KINDS:
        if pattern.search(text):
            return kind
    return "other"


def _default_failure_label(phase: Phase, error: str | None) -> LogLabel:
    """``pr_not_found`` when an implementation ran through without producing a PR (the
    reference's "No changes were produced" failure), else ``session_failed``."""
    if phase is Phase.IMPLEMENTATION and failure_kind(error) == "no_changes":
        return LogLabel.PR_NOT_FOUND
    return LogLabel.SESSION_FAILED


#: the failure of a planning run that reported success without a plan
NO_PLAN = "the planning run finished without a plan"


def result_outcome(data: dict[str, Any]) -> tuple[Outcome, bool]:
    """The :class:`Outcome` a validated result body means, and whether the runner's comments are
    already carried by it (a plan taken from the comments is posted once, as the plan)."""
    phase = Phase(data["phase"])
    pr_url = data.get("prUrl") or None
    pr_number = data.get("prNumber") or pr_number_from_url(pr_url)
    error = _clip(strip_phase_prefix(data["error"]) if data.get("error") else None, MAX_REASON) or None
    excerpt = _clip(data.get("logExcerpt") or None, MAX_EXCERPT)
    common: dict[str, Any] = {
        "pr_url": pr_url,
        "pr_number": pr_number,
        "cost_usd": data.get("costUsd"),
        "turns": data.get("turns"),
        "duration_seconds": data.get("durationSeconds"),
    }
    if data["outcome"] == "success":
        if phase is Phase.PLANNING:
            plan = data.get("plan") if (data.get("plan") or "").strip() else None
            from_comments = plan is None
            if plan is None:
                plan = "\n\n".join(c["body"] for c in data["comments"] if c["body"].strip()) or None
            if plan is None:
                # nothing to approve: offered as "Plan complete", its approval would only plan again
                return Outcome(
                    JobStatus.FAILED, reason=NO_PLAN, log_label=LogLabel.SESSION_FAILED, log_excerpt=excerpt,
                    **common,
                ), False
            return Outcome(JobStatus.COMPLETED, plan=plan, **common), from_comments
        review = data.get("review")
        if review is not None and review["approved"] is False:
            blockers = [b for b in review.get("blockers") or [] if b.strip()]
            excerpt = "\n".join(f"- {b}" for b in blockers) or excerpt
            return Outcome(
                JobStatus.REVIEW_FAILED,
                reason=error,
                log_label=LogLabel.POST_PUSH_REVIEW_NOT_APPROVED,
                log_excerpt=_clip(excerpt, MAX_EXCERPT),
                **common,
            ), False
        return Outcome(JobStatus.COMPLETED, **common), False
    label = LogLabel(data["logLabel"]) if data.get("logLabel") else _default_failure_label(phase, error)
    if label in TIMEOUT_LABELS:
        # the run exceeded its time budget: timed out, with the reason its runner's lifetime
        # gives (set by :func:`record_result`, which knows the job's runner)
        return Outcome(
            JobStatus.TIMED_OUT, reason=error, timeout_reason=label.value, log_label=label,
            log_excerpt=excerpt, **common,
        ), False
    return Outcome(
        JobStatus.FAILED, reason=error or "the run failed", log_label=label, log_excerpt=excerpt, **common
    ), False


#: log labels that make a failure result a timeout
TIMEOUT_LABELS = (LogLabel.MACHINE_TIMEOUT, LogLabel.CONTAINER_TIMEOUT)


def _timeout_of(job: Job) -> LogLabel:
    """The lifetime timeout of the job's runner (:func:`~.reconcile.lifetime_reason`); a machine's
    when its backend is no longer installed. Its class says it, as for the reconciler: an instance
    whose set-up fails in this process (a setting the web process lacks) refused the result."""
    backend = current_app.extensions["aiimpl"].classes["runner"].get(job.backend or "")
    if backend is None:
        return LogLabel.MACHINE_TIMEOUT
    return LogLabel(reconcile.lifetime_reason(backend).value)


def record_result(claims: RunClaims, data: dict[str, Any]) -> dict[str, Any]:
    """End the job of a result token; consume the token in the same transaction.

    :raises CallbackError: ``missing_prUrl`` and ``phase_mismatch`` (400, in the table's order),
        ``job_not_found`` (404), ``already_consumed`` (409).
    """
    if isinstance(data.get("prUrl"), str):
        # a blank URL is no URL (spaces around one mean nothing either)
        data = {**data, "prUrl": data["prUrl"].strip() or None}
    if data["outcome"] == "success" and data["phase"] == Phase.IMPLEMENTATION.value and not data.get("prUrl"):
        raise CallbackError(400, "missing_prUrl")
    if data["phase"] != claims.phase:
        raise CallbackError(400, "phase_mismatch")
    known = db.session.get(Job, claims.job_id)
    if known is not None:
        data = redaction.redact_data(known, data)  # the runner's text is stored and posted
    db.session.commit()
    outcome, comments_in_plan = result_outcome(data)
    try:
        with serialized():
            # read under the row lock the ending's compare-and-set takes (PostgreSQL: FOR NO KEY
            # UPDATE; SQLite's BEGIN IMMEDIATE serializes already): a concurrent move to another
            # active status (the first progress step, the reconciler linking the run) is waited
            # for and read, so the ending does not compare against a status gone meanwhile, fail,
            # and lose the result with its single-use token
            job = db.session.get(Job, claims.job_id, with_for_update={"key_share": True},
                                 populate_existing=True)
            if job is None:
                raise CallbackError(404, "job_not_found")
            # The primary key on jti is the single-use guarantee: a second post (even a
            # concurrent one in another process) fails here and its transaction changes nothing.
            db.session.add(ConsumedToken(jti=claims.jti, job_id=job.id))
            try:
                db.session.flush()
            except IntegrityError:
                raise _AlreadyConsumed() from None
            if not comments_in_plan:
                for index, comment in enumerate(data["comments"]):
                    if comment["body"].strip():
                        enqueue_comment(
                            job.issue_key,
                            comment["body"],
                            provider=job.provider or "",
                            kind="runner",
                            job=job,
                            dedupe_key=f"result:{job.id}:{index}",
                        )
            if outcome.status is JobStatus.TIMED_OUT:
                label = _timeout_of(job)
                outcome = replace(outcome, timeout_reason=label.value, log_label=label)
            # (the runner said how its run ended: no ⚠️ Session comment is added for it)
            ended = end_job(job, replace(outcome, session_comment=False))
            if ended:
                # the reconciler may have seen the run over before this result came: the start of
                # the grace it counted has no more use
                reconcile.forget_run_ended(job.id)
            answer: dict[str, Any] = {"jobId": job.id, "status": job.status, "ended": ended}
            if outcome.status is JobStatus.FAILED:
                answer["failureKind"] = failure_kind(outcome.reason)
            issue_key = job.issue_key
    except _AlreadyConsumed:
        raise CallbackError(409, "already_consumed") from None
    except IntegrityError:
        # the concurrent loser can also trip over the winner's rows on PostgreSQL
        raise CallbackError(409, "already_consumed") from None
    deliver_quietly(issue_key)
    return answer


def deliver_quietly(issue_key: str) -> None:
    """Deliver an issue's queued tracker writes now; a failure leaves them for the poller."""
    try:
        outbox.deliver(issue_keys=[issue_key])
    except Exception:  # noqa: BLE001 - the answer does not depend on the tracker
        db.session.rollback()
        log.warning("delivering comments of %s failed; they stay queued", issue_key, exc_info=True)


# -- steps (POST /runner/progress, POST /api/step-report) -----------------------------------


_STEP_FIELDS = ("type", "status", "started_at", "finished_at", "updated_at")


def _updated_fields(with_detail: bool) -> tuple[str, ...]:
    """What a later report of a step replaces (its detail only when it brings one)."""
    return _STEP_FIELDS + (("detail",) if with_detail else ())


@per_dialect
def _step_upsert(with_detail: bool) -> Any:
    """The step upsert statement (building ``excluded`` is not cheap)."""
    table = JobStep.__table__  # a Core statement: no ORM bookkeeping per report
    insert = upsert(table)
    return insert.on_conflict_do_update(
        index_elements=[table.c.job_id, table.c.step_id],
        set_={name: insert.excluded[name] for name in _updated_fields(with_detail)},
    )


#: the most steps a job keeps: the progress token and the nonce are in the session's environment,
#: readable by the agent and whatever the repository runs, and each new step id was a new row of up
#: to a body's size, all answered at once by the admin's steps view. A step the job has is still
#: updated at the cap. (Reports at once may each take the last place: a few over, never without
#: bound.)
MAX_JOB_STEPS = 1000
TOO_MANY_STEPS = "too_many_steps"


def _at_step_cap(job_id: int, step_id: str) -> bool:
    """Whether the job has :data:`MAX_JOB_STEPS` steps, none of them ``step_id`` (read in the
    session's transaction)."""
    steps = JobStep.__table__
    count = select(func.count()).where(steps.c.job_id == job_id).scalar_subquery()
    known = exists().where(steps.c.job_id == job_id, steps.c.step_id == step_id)
    return bool(db.session.scalar(select((count >= MAX_JOB_STEPS) & ~known)))


def _upsert_step(job: Job, step: dict[str, Any], source: str) -> str:
    """Insert the step, or update it when the job already has a step of that id, in one atomic
    statement (two reports of one step at once cannot both insert). The step keeps the source
    that first reported it, and its detail when a later report has none. Its text is redacted
    with the job's secrets.

    :returns: the step's id as stored.
    :raises CallbackError: 409 when the job has :data:`MAX_JOB_STEPS` steps and not this one.
    """
    detail = _detail_of(step)
    values = _redacted_step(redaction.redactor_for(job), _step_values(job.id, step, source), detail)
    if _at_step_cap(job.id, values["step_id"]):
        raise CallbackError(409, f"A job keeps at most {MAX_JOB_STEPS} steps")
    db.session.execute(_step_upsert(detail is not None), values)
    return values["step_id"]


def _detail_of(step: dict[str, Any]) -> dict[str, Any] | None:
    detail = step.get("detail")
    if detail is not None and not isinstance(detail, dict):
        detail = {"text": detail}
    return detail


#: a step's columns that hold the runner's text (besides its detail)
_STEP_TEXT = ("step_id", "type", "status", "started_at", "finished_at")
_STEP_COLUMN_CHARS = {name: JobStep.__table__.c[name].type.length for name in _STEP_TEXT}


def _redacted_step(redactor: Any, values: dict[str, Any], detail: dict[str, Any] | None) -> dict[str, Any]:
    """A step's row with every secret masked in the runner's text: its id, type, status and
    times as well as its detail (keys included), since a runner is not trusted to redact them."""
    values = dict(values)
    for name in _STEP_TEXT:
        if isinstance(values[name], str):
            # cut to its column again: a masked secret shorter than the mark made the text longer
            # (PostgreSQL refused the step with a 500, SQLite stored it past its column's size)
            values[name] = redactor.text(values[name])[: _STEP_COLUMN_CHARS[name]]
    if detail is not None:
        values["detail"] = redactor.data(detail) if redaction.has_text(detail) else detail
    return values


def _step_values(job_id: int, step: dict[str, Any], source: str) -> dict[str, Any]:
    """A step's row (without its detail) as the upsert statements' parameters."""
    now = utcnow()
    return {
        "job_id": job_id,
        "step_id": step["id"],
        "source": source,
        "type": step["type"],
        "status": step["status"],
        "started_at": step["started_at"],
        "finished_at": step.get("finished_at"),
        "created_at": now,
        "updated_at": now,
    }


def _mark_running(job: Job, why: str) -> None:
    # late reports after the job ended are recorded but never change its status
    if JobStatus(job.status) in (JobStatus.UNKNOWN, JobStatus.DISPATCHED):
        transition(job, JobStatus.RUNNING, reason=why)


@per_dialect
def _progress_upsert(with_detail: bool) -> Any:
    """One statement that upserts a step of an existing job, and returns the job's status, only
    while the state the step's redaction was keyed by is the state now
    (:func:`~aiimpl_core.services.redaction.state_columns`, of the job's team and mapping as bound
    parameters: they never change for a job; the state seen is bound as ``mapping_state`` and
    ``secrets_state``). The step's row is selected from the job's: no job, or a secret or the
    mapping changed since, and there is no row, no insert and nothing returned. ``RETURNING``
    reads the status by a subquery. SQLite and PostgreSQL share the syntax; it spares a round
    trip and a statement per report. A report without a detail keeps the one stored."""
    jobs, steps = Job.__table__, JobStep.__table__
    names = (
        "step_id", "source", "type", "status", "started_at", "finished_at", "created_at", "updated_at"
    ) + (("detail",) if with_detail else ())
    mapping, secrets = redaction.state_columns(bindparam("team_key"), bindparam("mapping_id"))
    # SQLite reads ``INSERT … SELECT … ON CONFLICT`` unambiguously only when the SELECT has a
    # WHERE clause, which this one always has
    # (a new step only below the cap: a step the job has is updated whatever its number of steps)
    known = exists().where(steps.c.job_id == jobs.c.id, steps.c.step_id == bindparam("step_id"))
    count = select(func.count()).where(steps.c.job_id == jobs.c.id).scalar_subquery()
    rows = select(jobs.c.id, *(bindparam(n, type_=steps.c[n].type) for n in names)).where(
        jobs.c.id == bindparam("job_id"),
        mapping.is_not_distinct_from(bindparam("mapping_state", type_=String())),
        secrets.is_not_distinct_from(bindparam("secrets_state", type_=String())),
        or_(known, count < bindparam("max_steps")),
    )
    insert = upsert(steps).from_select(["job_id", *names], rows)
    insert = insert.on_conflict_do_update(
        index_elements=[steps.c.job_id, steps.c.step_id],
        set_={name: insert.excluded[name] for name in _updated_fields(with_detail)},
    )
    # written out: SQLAlchemy renders a RETURNING clause's columns unqualified and does not
    # correlate a subquery there with the table the statement writes
    status = literal_column(
        f"(SELECT {jobs.name}.status FROM {jobs.name} WHERE {jobs.name}.id = {steps.name}.job_id)",
        type_=jobs.c.status.type,
    )
    return insert.returning(status).execution_options(**{PREPARED: True})


def _job_owner(job_id: int) -> redaction.Owner:
    """The job's team and mapping with the state of its secrets and mapping, read now.

    :raises CallbackError: ``job_not_found`` (404).
    """
    row = db.session.execute(redaction.JOB_OWNER, {"job_id": job_id}).first()
    db.session.commit()
    if row is None:
        raise CallbackError(404, "job_not_found")
    return redaction.Owner(row.team_key, row.mapping_id, (row.mapping, row.secrets), row.nonce_hash)


#: how many times a report is redacted and written again when the secrets keep changing under it
_REDACTION_TRIES = 5


def record_progress(job_id: int, step: dict[str, Any]) -> dict[str, Any]:
    """Record a ``/runner/progress`` step; the first report moves the job to ``running``.

    The step's text (id, type, status, times, detail) is redacted with the job's secrets before
    the write, which stays one statement: with the redactor of the state this process saw last
    for the job, written only if that is still the state. Should a secret or the mapping have
    changed since (or the job be gone), nothing is written; the state is read again and the step
    redacted with the new state's redactor, so no one ever reads a step redacted with stale
    values. The write commits on its own; a job still ``dispatched`` (or ``unknown``) is moved to
    ``running`` after it, by a compare-and-set that leaves a job ended meanwhile as it is.
    """
    remembered = owner = redaction.remembered_owner(job_id)
    detail = _detail_of(step)
    for _ in range(_REDACTION_TRIES):
        if owner is None:  # the job's first report to this process, or its state changed
            owner = _job_owner(job_id)
        values = _redacted_step(redaction.redactor_for(owner), _step_values(job_id, step, "runner"), detail)
        values.update(team_key=owner.team_key, mapping_id=owner.mapping_id,
                      mapping_state=owner.state[0], secrets_state=owner.state[1], max_steps=MAX_JOB_STEPS)
        statement = _progress_upsert(detail is not None)
        with one_statement() as connection:
            written = connection.execute(statement, values).first()
        if written is not None:
            break
        # nothing written: the job is gone (404), its secrets or mapping changed (written again
        # with the state read now), or, the state unchanged, it is at the step cap (asked only
        # then: a report that is written costs no more statements)
        seen, owner = owner, _job_owner(job_id)
        if owner.state == seen.state:
            capped = _at_step_cap(job_id, values["step_id"])
            db.session.commit()
            if capped:
                raise CallbackError(409, TOO_MANY_STEPS)
    else:
        raise RuntimeError(f"the secrets of job {job_id} kept changing while its progress was recorded")
    if owner is not remembered:
        redaction.remember_owner(job_id, owner)
    status = written[0]
    if JobStatus(status) in (JobStatus.UNKNOWN, JobStatus.DISPATCHED):
        with serialized():
            job = db.session.get_one(Job, job_id)
            _mark_running(job, "the runner reported progress")
            status = job.status
    return {"ok": True, "jobId": job_id, "status": status, "stepId": values["step_id"]}


def record_step_report(nonce: str, step: dict[str, Any]) -> dict[str, Any]:
    """Record a ``/api/step-report`` step for the job of ``nonce``."""
    with serialized():
        job = active_job_for_nonce(nonce)
        if job is None:
            raise CallbackError(403, INVALID_NONCE)
        step_id = _upsert_step(job, step, "session")
        _mark_running(job, "the session reported a step")
        answer = {"ok": True, "jobId": job.id, "status": job.status, "stepId": step_id}
    return answer


# -- GET /runner/planning-context -----------------------------------------------------------


#: the newest comments the planning context carries, at most, and their characters in all: an
#: issue with years of discussion must not make a prompt no agent can take
CONTEXT_MAX_COMMENTS = 100
CONTEXT_MAX_COMMENT_CHARS = 100_000
#: a longer comment is cut to this many characters (Jira Cloud's own limit on a comment body)
CONTEXT_MAX_COMMENT_LENGTH = 32_767
TRUNCATED = "\n\n… (cut: the comment is longer)"


def context_comments(comments: Sequence[Comment]) -> tuple[list[dict[str, Any]], int]:
    """The newest comments within :data:`CONTEXT_MAX_COMMENTS` and :data:`CONTEXT_MAX_COMMENT_CHARS`,
    oldest first, each cut to :data:`CONTEXT_MAX_COMMENT_LENGTH`; and how many older ones were left out.
    """
    kept: list[dict[str, Any]] = []
    budget = CONTEXT_MAX_COMMENT_CHARS
    for c in reversed(comments):
        body = c.body or ""
        if len(body) > CONTEXT_MAX_COMMENT_LENGTH:
            body = body[: CONTEXT_MAX_COMMENT_LENGTH - len(TRUNCATED)] + TRUNCATED
        if len(kept) >= CONTEXT_MAX_COMMENTS or (kept and len(body) > budget):
            break
        budget -= len(body)
        kept.append({"body": body, "author": c.author, "createdAt": iso_z(c.created_at)})
    kept.reverse()
    return kept, len(comments) - len(kept)


def planning_context(job_id: int) -> dict[str, Any]:
    """Everything the session needs to plan or implement: the issue (live from the tracker, or
    what the orchestrator knows when the tracker fails), the repository and branches, the plan.

    :raises CallbackError: ``job_not_found`` (404); ``expired`` (401) once the job has ended: its
        session has no more use for the issue, and a token that leaked no longer reads it.
    """
    job = db.session.get(Job, job_id)
    if job is None:
        raise CallbackError(404, "job_not_found")
    if JobStatus(job.status).terminal:
        raise CallbackError(401, "expired")
    tracked = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == job.issue_key))
    db.session.commit()  # no transaction held open across the tracker call
    facade = current_app.extensions["aiimpl"]
    tracker_error: str | None = None
    try:
        provider = job.provider or ""
        live = checked_issue(provider, facade.ticketing(provider).get_issue(job.issue_key))
        issue = {
            "key": live.key,
            "title": live.title,
            "description": live.description or "",
            "url": live.url,
            "comments": [],
        }
        issue["comments"], omitted = context_comments(live.comments)
        issue["commentsOmitted"] = omitted
        source = "tracker"
    except Exception as exc:  # noqa: BLE001 - any tracker failure falls back to what we know
        # masked as in the log line: a tracker (or a proxy) may echo the credentials of the request,
        # which the session never holds
        tracker_error = logs.masked(
            exc.message if isinstance(exc, AiimplError) else f"unexpected error ({type(exc).__name__})"
        )
        log.warning("planning context of job %s: tracker failed: %s", job.id, tracker_error)
        issue = {
            "key": job.issue_key,
            "title": tracked.title if tracked else "",
            "description": "",
            "url": tracked.url if tracked else None,
            "comments": [],
            "commentsOmitted": 0,
        }
        source = "cache"
    phase = Phase(job.phase)
    plan = None
    if phase is Phase.IMPLEMENTATION:
        plan = job.plan or (tracked.plan if tracked else None)
    return {
        "jobId": job.id,
        "phase": phase.value,
        "issue": issue,
        "issueSource": source,
        "trackerError": tracker_error,
        "repository": {"owner": job.owner, "repo": job.repo, "fullName": f"{job.owner}/{job.repo}"},
        "baseBranch": job.base_branch,
        "branch": job.branch,
        "plan": plan,
        "prNumber": job.pr_number if phase is Phase.GAP_ANALYSIS else None,
    }


# -- POST /api/status -----------------------------------------------------------------------

STATUS_FIELDS = ("prNumber", "prUrl", "detail", "duration", "reason")

_QUEUED = select(OutboxItem.id, OutboxItem.state, OutboxItem.next_attempt_at).where(
    OutboxItem.dedupe_key == bindparam("dedupe_key")
)


def status_event(nonce: str, data: dict[str, Any]) -> dict[str, Any]:
    """Turn a session's lifecycle event into its progress comment and deliver it now.

    The comment is queued with the key ``status:{job}:{event}``, so a retried event is never
    posted twice. ``session_created`` moves the job to ``running``.

    :raises CallbackError: ``Unknown event type: …`` (400), ``Invalid or expired nonce`` (403),
        ``Internal server error`` (500) when the comment could not be posted (it stays queued).
    """
    event = data["event"]
    if event not in comments_mod.PROGRESS_EVENTS:
        raise CallbackError(400, f"Unknown event type: {event}")
    now = utcnow()
    with serialized():
        # under the job's row lock: an ending of the job (the reconciler's, a result's) under way
        # is waited for, and the event is then refused (403); else the ending waits for this one,
        # and sees its comment (a session's "Session failed" and the reconciler's "Session timed
        # out" were both posted)
        job = active_job_for_nonce(nonce, for_update=True)
        if job is None:
            raise CallbackError(403, INVALID_NONCE)
        # the runner's text is redacted before any of it is stored or posted
        if any(isinstance(data.get(k), str) and data.get(k) for k in (*STATUS_FIELDS, "logUrl")):
            data = redaction.redact_data(job, data, keep=("nonce",))
        if data.get("logUrl"):
            job.log_url = data["logUrl"]
        if event == "pr_opened" and job.pr_url is None and data.get("prUrl"):
            job.pr_url = data["prUrl"]
            job.pr_number = (
                job.pr_number or _int_or_none(data.get("prNumber")) or pr_number_from_url(data["prUrl"])
            )
        if event == "session_created":
            _mark_running(job, "session created")
        fields = {k: data.get(k) for k in STATUS_FIELDS}
        if event == "pr_opened" and fields["prUrl"] in (None, ""):
            fields["prUrl"] = job.pr_url  # a runner that sends only the number: the one recorded
        if event == "pr_opened" and fields["prNumber"] in (None, ""):
            # a runner that sends only the URL: the number is the one recorded, or the URL's
            fields["prNumber"] = job.pr_number or pr_number_from_url(fields["prUrl"])
        body = comments_mod.progress(event, fields, now, job.log_url or job.run_url)
        dedupe_key = f"status:{job.id}:{event}"
        provider, kind = job.provider or "", f"progress:{event}"
        claimed: outbox.Claimed | None = None
        # the usual case: nothing of the issue waits, so the item is queued already taken and sent
        # right after the commit; else it goes out behind the earlier ones, in order (a shadow
        # job's is recorded only)
        queued = outbox.queue_taken(
            dedupe_key=dedupe_key, op="comment", provider=provider, issue_key=job.issue_key, job_id=job.id,
            kind=kind, body=body, now=now, shadow=bool(job.shadow),
        )
        duplicate = queued is None  # this event is queued already (a retry)
        if not duplicate:
            item_id, state = queued.id, queued.state
            if state == "sending":
                claimed = outbox.Claimed(item_id, "comment", provider, job.issue_key, body, None)
        else:
            mine = db.session.execute(_QUEUED, {"dedupe_key": dedupe_key}).one()
            item_id, state = mine.id, mine.state
            if state == "pending" and mine.next_attempt_at > now:
                # the runner retries: try again at once; only while it is still waiting (a poller
                # that took it since holds its lease in the same column: overwritten, the lease
                # would have seemed to run out, and this retry would have posted it a second time)
                db.session.execute(
                    update(OutboxItem)
                    .where(OutboxItem.id == item_id, OutboxItem.state == "pending",
                           OutboxItem.next_attempt_at > now)
                    .values(next_attempt_at=now),
                    execution_options={"synchronize_session": False},
                )
        issue_key = job.issue_key
    answer = {"ok": True, "event": event, "duplicate": duplicate}
    if state in ("done", "shadow"):
        return answer  # posted by an earlier try, or recorded only (shadow mode)
    if claimed is not None:
        try:
            if outbox.send_claimed(claimed, now):
                return answer
        except Exception:  # noqa: BLE001 - answered as the reference's 500 below
            db.session.rollback()
            log.exception("delivering the %s comment of %s failed", event, issue_key)
        raise CallbackError(500, "Internal server error")  # it stays queued: the poller retries
    sent: set[int] = set()
    try:
        outbox.deliver(issue_keys=[issue_key], sent=sent)
    except Exception:  # noqa: BLE001 - answered as the reference's 500 below
        db.session.rollback()
        log.exception("delivering the %s comment of %s failed", event, issue_key)
    if item_id not in sent and _settled_state(item_id) not in ("done", "shadow"):
        raise CallbackError(500, "Internal server error")
    return answer


def _settled_state(item_id: int, wait_seconds: float = 5.0) -> str | None:
    """The item's state once no one is sending it (a concurrent retry of the same event may be
    posting it right now: its answer is that post's outcome, not a premature failure). Waited for
    at most ``wait_seconds``, within the session's shortest wait for a report's answer (its
    reserve's 5 s): a post still under way then is answered 500, which the session retries (and is
    told it was a duplicate), where an answer it stopped waiting for would hold its reports back."""
    deadline = time.monotonic() + wait_seconds
    while True:
        state = db.session.scalar(select(OutboxItem.state).where(OutboxItem.id == item_id))
        db.session.commit()
        if state != "sending" or time.monotonic() >= deadline:
            return state
        time.sleep(0.05)


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**31 else None


# -- POST /api/token ------------------------------------------------------------------------

TOKEN_FAILED = "Failed to generate token"


def github_token(nonce: str, owner: str, refused: str | None = None) -> dict[str, str]:
    """A short-lived GitHub token for the job's repository.

    :param refused: the SHA-256 of a token GitHub refused the session (revoked before its
        expiry): when it is the one this process has cached, a new one is minted instead.
    :raises CallbackError: ``Invalid or expired nonce`` / ``Owner mismatch`` (403),
        ``Failed to generate token`` (500).
    """
    job = active_job_for_nonce(nonce)
    if job is None:
        db.session.commit()
        raise CallbackError(403, INVALID_NONCE)
    job_owner, job_repo, job_id = job.owner or "", job.repo or "", job.id
    db.session.commit()
    if owner.strip().lower() != job_owner.lower():
        raise CallbackError(403, "Owner mismatch")
    try:
        from .. import github

        if refused and github.forget_refused_token(job_owner, job_repo, refused):
            log.info("GitHub refused job %s the token cached for %s/%s: minting another", job_id, job_owner,
                     job_repo)
        token, expires_at = github.repository_token(job_owner, job_repo)
    except AiimplError as exc:
        log.warning("GitHub token for job %s (%s/%s) failed: %s", job_id, job_owner, job_repo, exc.message)
        raise CallbackError(500, TOKEN_FAILED) from None
    except Exception as exc:  # noqa: BLE001 - never a traceback (or a key) to the session
        log.error("GitHub token for job %s failed: %s", job_id, type(exc).__name__)
        raise CallbackError(500, TOKEN_FAILED) from None
    return {"token": token, "expiresAt": iso_z(expires_at) or ""}
