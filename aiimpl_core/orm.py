"""Database models (SQLAlchemy 2 typed). "Model" means the AI model in this project, hence ``orm``.

Every schema change is an Alembic migration under ``aiimpl_core/migrations``.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import db
from .types import ACTIVE_STATUSES, MappingView


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_z(value: datetime | None) -> str | None:
    """A time as the API and the CLI answer it: UTC, ISO 8601 ending in ``Z`` (a naive value is
    taken as UTC, as the database stores times)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_ACTIVE_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(ACTIVE_STATUSES)))


class Mapping(db.Model):
    """A project mapping: one tracker team → one GitHub repository and its execution settings."""

    __tablename__ = "mappings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_key: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[str] = mapped_column(String(100))
    repo: Mapped[str] = mapped_column(String(100))
    default_branch: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(64), default="anthropic")
    aws_region: Mapped[str | None] = mapped_column(String(64))
    execution_mode: Mapped[str] = mapped_column(String(64), default="github-actions")
    machine_cpus: Mapped[int | None] = mapped_column(Integer)
    machine_memory_mb: Mapped[int | None] = mapped_column(Integer)
    session_mode: Mapped[str] = mapped_column(String(32), default="autonomous")
    branch_prefix: Mapped[str] = mapped_column(String(100), default="ai/")
    extra_env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    max_in_progress: Mapped[int | None] = mapped_column(Integer)
    planning_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    planning_workflow_file: Mapped[str | None] = mapped_column(String(255))
    ticketing: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def view(self) -> MappingView:
        return MappingView(
            team_key=self.team_key,
            owner=self.owner,
            repo=self.repo,
            default_branch=self.default_branch,
            provider=self.provider,
            aws_region=self.aws_region,
            execution_mode=self.execution_mode,
            machine_cpus=self.machine_cpus,
            machine_memory_mb=self.machine_memory_mb,
            session_mode=self.session_mode,
            branch_prefix=self.branch_prefix,
            extra_env=dict(self.extra_env or {}),
            max_in_progress=self.max_in_progress,
            planning_enabled=self.planning_enabled,
            planning_workflow_file=self.planning_workflow_file,
            ticketing=dict(self.ticketing or {}),
            paused=self.paused,
        )


class TrackedIssue(db.Model):
    """A tracker issue the orchestrator has seen, with its lifecycle stage.

    ``trigger_consumed`` is set when a job is created for the trigger the issue shows, and cleared
    when the orchestrator itself removes the trigger in the tracker (``trigger_cleared_at``) or a
    complete listing no longer shows it — so a trigger is dispatched once, and re-applying it
    runs again.
    """

    __tablename__ = "tracked_issues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_key: Mapped[str] = mapped_column(String(64), unique=True)
    team_key: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str | None] = mapped_column(Text)
    stage: Mapped[str | None] = mapped_column(String(32))
    stage_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    triggered: Mapped[bool] = mapped_column(Boolean, default=False)
    trigger_consumed: Mapped[bool] = mapped_column(Boolean, default=False)
    trigger_cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    plan: Mapped[str | None] = mapped_column(Text)
    plan_job_id: Mapped[int | None] = mapped_column(Integer)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def run_name_for(issue_key: str, phase: str, job_id: int) -> str:
    """What :attr:`Job.run_name` is for a job with these fields."""
    return f"AI-Implement {issue_key} {phase} job-{job_id}"


class Job(db.Model):
    """One dispatch: one run of one phase for one issue.

    At most one non-terminal job exists per issue: a partial unique index enforces it in the
    database, whatever number of processes dispatch.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_active_issue",
            "issue_key",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
        Index("ix_jobs_status_backend", "status", "backend"),
        Index("ix_jobs_repo_pr", "owner", "repo", "pr_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_key: Mapped[str] = mapped_column(String(64), index=True)
    team_key: Mapped[str] = mapped_column(String(64), index=True)
    mapping_id: Mapped[int | None] = mapped_column(ForeignKey("mappings.id", ondelete="SET NULL"))
    provider: Mapped[str | None] = mapped_column(String(64))  # ticketing provider of the issue
    phase: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default="unknown")
    timeout_reason: Mapped[str | None] = mapped_column(String(32))
    backend: Mapped[str | None] = mapped_column(String(64))
    runner_mode: Mapped[str | None] = mapped_column(String(32))
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(100))
    repo: Mapped[str | None] = mapped_column(String(100))
    base_branch: Mapped[str | None] = mapped_column(String(255))
    branch: Mapped[str | None] = mapped_column(String(255))
    run_id: Mapped[str | None] = mapped_column(String(255), index=True)
    run_url: Mapped[str | None] = mapped_column(Text)
    log_url: Mapped[str | None] = mapped_column(Text)
    pr_number: Mapped[int | None] = mapped_column(Integer)
    pr_url: Mapped[str | None] = mapped_column(Text)
    merge_sha: Mapped[str | None] = mapped_column(String(64))
    plan: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    log_label: Mapped[str | None] = mapped_column(String(64))
    log_excerpt: Mapped[str | None] = mapped_column(Text)
    cost_usd: Mapped[float | None] = mapped_column()
    turns: Mapped[int | None] = mapped_column(Integer)
    duration_seconds: Mapped[float | None] = mapped_column()
    nonce_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    running_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: the session lifetime its session was dispatched with (``AIIMPL_SESSION_LIFETIME_SECONDS``
    #: then): a later change of the setting does not move it (none: dispatched before 0010)
    lifetime_seconds: Mapped[int | None] = mapped_column(Integer)
    #: while its backend has rate-limited the dispatch (the job still ``unknown``, nothing started):
    #: when the dispatcher may try it again; cleared by the poller that takes the try
    launch_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    transitions: Mapped[list[JobTransition]] = relationship(
        back_populates="job", order_by="JobTransition.id", cascade="all, delete-orphan"
    )
    steps: Mapped[list[JobStep]] = relationship(
        back_populates="job", order_by="JobStep.id", cascade="all, delete-orphan"
    )

    #: the nonce whose hash the job was created with, until its session request is built (never
    #: stored: only its hash is)
    unsent_nonce = None

    @property
    def run_name(self) -> str:
        """The run's name at the backend (a GitHub Actions run's ``run-name``), by which a run is
        linked to its job: derived from the job, so a new job is one ``INSERT``."""
        return run_name_for(self.issue_key, self.phase, self.id)


class JobTransition(db.Model):
    """A job status change, with its time."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="transitions")


class JobStep(db.Model):
    """A pipeline step a runner reported (``/runner/progress`` or ``/api/step-report``)."""

    __tablename__ = "job_steps"
    __table_args__ = (UniqueConstraint("job_id", "step_id", name="uq_job_steps_job_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # (found by the unique constraint's index, which starts with it: no index of its own)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[str] = mapped_column(String(64))
    finished_at: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(32), default="runner")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    job: Mapped[Job] = relationship(back_populates="steps")


class OutboxItem(db.Model):
    """A write to a tracker (comment, stage change, done) kept until it succeeds.

    Written in the same transaction as the state change that causes it, delivered right after
    commit and retried by every poll cycle, so a tracker outage delays comments but never loses
    them; ``dedupe_key`` makes each one happen once.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "state", "next_attempt_at"),
        # an issue's items, and whether any of them waits, in one probe: with the state beside the
        # key, "does anything of this issue wait" never walks the pending index, whose entries for
        # every item taken and sent since the last vacuum are still there on PostgreSQL
        Index("ix_outbox_issue_state", "issue_key", "state"),
        # an id is never given twice, also on SQLite once the newest items were pruned: the id keys
        # the identity of the comment an item posts (outbox.comment_ref)
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    op: Mapped[str] = mapped_column(String(16))  # comment | stage | done
    provider: Mapped[str] = mapped_column(String(64))
    issue_key: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str | None] = mapped_column(String(64))  # progress event, outcome, plan, log …
    body: Mapped[str | None] = mapped_column(Text)  # comment Markdown
    stage: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    remote_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: when an operator last put it back in the queue after it was given up on: its new series of
    #: attempts counts from then, ``created_at`` staying the time it was first queued
    requeued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Blocker(db.Model):
    """Why an eligible issue was not dispatched in the latest cycle (the Blockers view)."""

    __tablename__ = "blockers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_key: Mapped[str] = mapped_column(String(64), unique=True)
    team_key: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Setting(db.Model):
    """A persisted global setting (the runner mode …)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ConsumedToken(db.Model):
    """A single-use run token that was used. Its primary key makes consumption atomic."""

    __tablename__ = "consumed_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int | None] = mapped_column(Integer)
    consumed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(db.Model):
    """A webhook delivery already handled (GitHub's ``X-GitHub-Delivery``, a tracker's id)."""

    __tablename__ = "webhook_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    event: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Secret(db.Model):
    """A team or global secret; the value is encrypted and never returned by the API."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("scope", "name", name="uq_secrets_scope_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))  # "" for global, else the team key
    name: Mapped[str] = mapped_column(String(255))
    value_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AuthFailure(db.Model):
    """Recent wrong admin codes per client, to slow down guessing across workers and hosts."""

    __tablename__ = "auth_failures"

    client: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EndedAdminSession(db.Model):
    """An admin session ended by its sign-out before its time: its token is refused by every
    worker and host until it would have expired anyway (then housekeeping removes the row)."""

    __tablename__ = "ended_admin_sessions"

    session_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Lease(db.Model):
    """A named lease held by one process for a while (one poll cycle at a time per connection)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StoredSessionPackage(db.Model):
    """A wheel of the session program that GitHub Actions workflows were synced to pin, kept so
    that it is still served by its hash after a deploy serves another
    (:func:`aiimpl_core.session_package.pin`); housekeeping removes it long after its last pin."""

    __tablename__ = "session_packages"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_pinned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
