"""What runners report back: results, progress steps, status events, and what they ask for.

The ``/runner/*`` and session (``/api/token``, ``/api/status``, ``/api/step-report``) views parse
and authenticate; everything they change happens here. A refusal is a :class:`CallbackError`
carrying the HTTP status and the reference's ``error`` (slug or message).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from sqlalchemy import Text, bindparam, literal_column, select, update
from sqlalchemy.exc import IntegrityError

from ..auth.nonce import INVALID_NONCE, active_job_for_nonce
from ..auth.tokens import RunClaims
from ..database import per_dialect, serialized, upsert
from ..errors import AiimplError
from ..extensions import db
from ..orm import ConsumedToken, Job, JobStep, Mapping, OutboxItem, TrackedIssue, utcnow
from ..types import JobStatus, LogLabel, Phase
from . import comments as comments_mod
from . import outbox, redaction
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
            plan = data.get("plan") or None
            from_comments = plan is None
            if plan is None:
                plan = "\n\n".join(c["body"] for c in data["comments"] if c["body"].strip()) or None
            return Outcome(JobStatus.COMPLETED, plan=plan, **common), from_comments and plan is not None
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
    return Outcome(
        JobStatus.FAILED, reason=error or "the run failed", log_label=label, log_excerpt=excerpt, **common
    ), False


def record_result(claims: RunClaims, data: dict[str, Any]) -> dict[str, Any]:
    """End the job of a result token; consume the token in the same transaction.

    :raises CallbackError: ``missing_prUrl`` and ``phase_mismatch`` (400, in the table's order),
        ``job_not_found`` (404), ``already_consumed`` (409).
    """
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
            job = db.session.get(Job, claims.job_id)
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
            ended = end_job(job, outcome)
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


def _upsert_step(job: Job, step: dict[str, Any], source: str) -> None:
    """Insert the step, or update it when the job already has a step of that id, in one atomic
    statement (two reports of one step at once cannot both insert). The step keeps the source
    that first reported it, and its detail when a later report has none. A detail is redacted
    with the job's secrets."""
    detail = _detail_of(step)
    values = _step_values(job.id, step, source)
    if detail is not None:
        values["detail"] = redaction.redact_data(job, detail)
    db.session.execute(_step_upsert(detail is not None), values)


def _detail_of(step: dict[str, Any]) -> dict[str, Any] | None:
    detail = step.get("detail")
    if detail is not None and not isinstance(detail, dict):
        detail = {"text": detail}
    return detail


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
    """One statement that upserts a step of an existing job and returns the job's status: the
    step's row is selected from the job's (no row, no insert, no status: the job does not exist)
    and ``RETURNING`` reads the status by a subquery. SQLite and PostgreSQL share the syntax; it
    spares a round trip and a statement per report. With a detail, it returns also the state its
    redaction is keyed by (:func:`~aiimpl_core.services.redaction.state_sql`)."""
    jobs, steps = Job.__table__, JobStep.__table__
    names = (
        "step_id", "source", "type", "status", "started_at", "finished_at", "created_at", "updated_at"
    ) + (("detail",) if with_detail else ())
    # SQLite reads ``INSERT … SELECT … ON CONFLICT`` unambiguously only when the SELECT has a
    # WHERE clause, which this one always has
    rows = select(jobs.c.id, *(bindparam(n, type_=steps.c[n].type) for n in names)).where(
        jobs.c.id == bindparam("job_id")
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
    if not with_detail:
        return insert.returning(status)
    mapping_sql, secrets_sql = redaction.state_sql(f"{steps.name}.job_id", db.engine.dialect)
    mapping = literal_column(mapping_sql, type_=Mapping.__table__.c.updated_at.type)
    secrets = literal_column(secrets_sql, type_=Text())
    return insert.returning(status, mapping, secrets)


_steps = JobStep.__table__
_STEP_DETAIL = (
    update(_steps)
    .where(_steps.c.job_id == bindparam("of_job"), _steps.c.step_id == bindparam("of_step"))
    .values(detail=bindparam("new_detail", type_=_steps.c.detail.type))
)


def record_progress(job_id: int, step: dict[str, Any]) -> dict[str, Any]:
    """Record a ``/runner/progress`` step; the first report moves the job to ``running``.

    A detail with text is redacted with the job's secrets before the write, which stays one
    statement: with the redactor of the state this process saw last for the job, and the write
    returns the state now. Should a secret or the mapping have changed since, the detail is
    redacted again and rewritten in the same transaction, so no one ever reads it redacted with
    stale values.
    """
    values = _step_values(job_id, step, "runner")
    detail = _detail_of(step)
    owner: redaction.Owner | None = None
    if detail is not None and not redaction.has_text(detail):
        values["detail"] = detail  # nothing in it to redact (the session program's is often {})
    elif detail is not None:
        owner = redaction.remembered_owner(job_id)
        if owner is None:  # the job's first report with a detail to this process
            row = db.session.execute(redaction.JOB_OWNER, {"job_id": job_id}).first()
            if row is None:
                db.session.commit()
                raise CallbackError(404, "job_not_found")
            owner = redaction.Owner(row.team_key, row.mapping_id, (row.mapping, row.secrets))
        redactor = redaction.redactor(owner.team_key, owner.mapping_id, state=owner.state)
        values["detail"] = redactor.data(detail)
    # one statement that writes (the step, with the job's status returned): on SQLite it takes the
    # write lock itself, and holds it for less time than BEGIN IMMEDIATE
    with serialized(writes_first=True):
        written = db.session.execute(_progress_upsert(detail is not None), values).first()
        if written is None:  # no such job: nothing was written, and nothing will be
            raise CallbackError(404, "job_not_found")
        status = written[0]
        if owner is not None:
            state = (written[1], written[2])
            if state != owner.state:
                owner = redaction.Owner(owner.team_key, owner.mapping_id, state)
                again = redaction.redactor(owner.team_key, owner.mapping_id, state=state).data(detail)
                if again != values["detail"]:
                    rewrite = {"of_job": job_id, "of_step": step["id"], "new_detail": again}
                    db.session.execute(_STEP_DETAIL, rewrite)
            redaction.remember_owner(job_id, owner)
        if JobStatus(status) in (JobStatus.UNKNOWN, JobStatus.DISPATCHED):
            job = db.session.get_one(Job, job_id)
            _mark_running(job, "the runner reported progress")
            status = job.status
        answer = {"ok": True, "jobId": job_id, "status": status, "stepId": step["id"]}
    return answer


def record_step_report(nonce: str, step: dict[str, Any]) -> dict[str, Any]:
    """Record a ``/api/step-report`` step for the job of ``nonce``."""
    with serialized():
        job = active_job_for_nonce(nonce)
        if job is None:
            raise CallbackError(403, INVALID_NONCE)
        _upsert_step(job, step, "session")
        _mark_running(job, "the session reported a step")
        answer = {"ok": True, "jobId": job.id, "status": job.status, "stepId": step["id"]}
    return answer


# -- GET /runner/planning-context -----------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def planning_context(job_id: int) -> dict[str, Any]:
    """Everything the session needs to plan or implement: the issue (live from the tracker, or
    what the orchestrator knows when the tracker fails), the repository and branches, the plan."""
    job = db.session.get(Job, job_id)
    if job is None:
        raise CallbackError(404, "job_not_found")
    tracked = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == job.issue_key))
    db.session.commit()  # no transaction held open across the tracker call
    facade = current_app.extensions["aiimpl"]
    tracker_error: str | None = None
    try:
        live = facade.ticketing(job.provider or "").get_issue(job.issue_key)
        issue = {
            "key": live.key,
            "title": live.title,
            "description": live.description or "",
            "url": live.url,
            "comments": [
                {"body": c.body, "author": c.author, "createdAt": _iso(c.created_at)} for c in live.comments
            ],
        }
        source = "tracker"
    except Exception as exc:  # noqa: BLE001 - any tracker failure falls back to what we know
        tracker_error = (
            exc.message if isinstance(exc, AiimplError) else f"unexpected error ({type(exc).__name__})"
        )
        log.warning("planning context of job %s: tracker failed: %s", job.id, tracker_error)
        issue = {
            "key": job.issue_key,
            "title": tracked.title if tracked else "",
            "description": "",
            "url": tracked.url if tracked else None,
            "comments": [],
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
        raise CallbackError(400, f"Unknown event type: {event[:200]}")
    now = utcnow()
    with serialized():
        job = active_job_for_nonce(nonce)
        if job is None:
            raise CallbackError(403, INVALID_NONCE)
        if data.get("logUrl"):
            job.log_url = data["logUrl"]
        if event == "pr_opened" and job.pr_url is None and data.get("prUrl"):
            job.pr_url = data["prUrl"]
            job.pr_number = (
                job.pr_number or _int_or_none(data.get("prNumber")) or pr_number_from_url(data["prUrl"])
            )
        if event == "session_created":
            _mark_running(job, "session created")
        if any(isinstance(data.get(k), str) and data.get(k) for k in STATUS_FIELDS):
            data = redaction.redact_data(job, data, keep=("nonce",))
        body = comments_mod.progress(
            event, {k: data.get(k) for k in STATUS_FIELDS}, now, job.log_url or job.run_url
        )
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
                # the runner retries: try again at once
                db.session.execute(
                    update(OutboxItem).where(OutboxItem.id == item_id).values(next_attempt_at=now),
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
    posting it right now: its answer is that post's outcome, not a premature failure)."""
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


def github_token(nonce: str, owner: str) -> dict[str, str]:
    """A short-lived GitHub token for the job's repository.

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

        token, expires_at = github.repository_token(job_owner, job_repo)
    except AiimplError as exc:
        log.warning("GitHub token for job %s (%s/%s) failed: %s", job_id, job_owner, job_repo, exc.message)
        raise CallbackError(500, TOKEN_FAILED) from None
    except Exception as exc:  # noqa: BLE001 - never a traceback (or a key) to the session
        log.error("GitHub token for job %s failed: %s", job_id, type(exc).__name__)
        raise CallbackError(500, TOKEN_FAILED) from None
    return {"token": token, "expiresAt": _iso(expires_at) or ""}
