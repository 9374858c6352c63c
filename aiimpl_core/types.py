"""Small typed values passed between the core and its plugins.

Plugins receive and return these; they never see ORM rows.
"""
from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime


class Phase(enum.StrEnum):
    """What a job does."""

    PLANNING = "planning"
    IMPLEMENTATION = "implementation"
    GAP_ANALYSIS = "gap-analysis"


class JobStatus(enum.StrEnum):
    """The reference's "Job status values"."""

    UNKNOWN = "unknown"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    REVIEW_FAILED = "review_failed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.REVIEW_FAILED, JobStatus.FAILED, JobStatus.TIMED_OUT}
)
ACTIVE_STATUSES = frozenset(set(JobStatus) - TERMINAL_STATUSES)


class TimeoutReason(enum.StrEnum):
    """Why a job ended ``timed_out``."""

    CONTAINER_TIMEOUT = "container_timeout"
    MACHINE_TIMEOUT = "machine_timeout"
    RUN_NOT_FOUND = "run_not_found"
    TIMED_OUT = "timed_out"


class LogLabel(enum.StrEnum):
    """Labels of the log excerpt posted on a terminal failure or timeout."""

    CONTAINER_FAILED = "container_failed"
    CONTAINER_TIMEOUT = "container_timeout"
    MACHINE_TIMEOUT = "machine_timeout"
    POST_PUSH_REVIEW_NOT_APPROVED = "post_push_review_not_approved"
    PR_NOT_FOUND = "pr_not_found"
    SESSION_FAILED = "session_failed"


class Stage(enum.StrEnum):
    """Where an issue stands in the reference's "Issue lifecycle"."""

    TRIGGERED = "triggered"
    PLANNING = "planning"
    PLAN_COMPLETE = "plan_complete"
    IMPLEMENTING = "implementing"
    PR_OPENED = "pr_opened"
    PLANNING_FAILED = "planning_failed"
    IMPLEMENTATION_FAILED = "implementation_failed"
    DONE = "done"


STAGE_TITLES = {
    Stage.TRIGGERED: "Triggered",
    Stage.PLANNING: "Planning",
    Stage.PLAN_COMPLETE: "Plan complete",
    Stage.IMPLEMENTING: "Implementing",
    Stage.PR_OPENED: "PR opened",
    Stage.PLANNING_FAILED: "Planning failed",
    Stage.IMPLEMENTATION_FAILED: "Implementation failed",
    Stage.DONE: "Done",
}


@dataclass(frozen=True)
class Comment:
    """A comment on a tracker issue (Markdown body)."""

    body: str
    author: str | None = None
    created_at: datetime | None = None
    id: str | None = None


@dataclass(frozen=True)
class BlockingLink:
    """Another issue that blocks this one. ``open`` is false once the blocker is done."""

    key: str
    title: str = ""
    open: bool = True


@dataclass(frozen=True)
class TrackerIssue:
    """An issue as a ticketing provider reports it.

    ``stage`` is the provider's reading of the issue's labels or status (``None`` when the issue
    shows no lifecycle stage); ``triggered`` is whether it carries the trigger (Linear label
    ``AI-Implement``, Jira status ``Ready``) right now.
    """

    key: str
    team_key: str
    title: str
    provider: str
    description: str = ""
    url: str | None = None
    state: str | None = None
    labels: tuple[str, ...] = ()
    stage: Stage | None = None
    triggered: bool = True
    blocked_by: tuple[BlockingLink, ...] = ()
    comments: tuple[Comment, ...] = ()
    remote_id: str | None = None
    updated_at: datetime | None = None

    @property
    def open_blockers(self) -> tuple[BlockingLink, ...]:
        return tuple(b for b in self.blocked_by if b.open)


@dataclass(frozen=True)
class CheckResult:
    """One thing a provider verified against its service (``aiimpl check``).

    ``name`` says what was checked (``credentials``, ``project ENG``, ``workflow acme/api``…);
    ``detail`` what was found, or why it failed — never a secret.
    """

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class TriggeredPage:
    """One page of triggered issues; ``complete`` is true on the last page of a full listing."""

    issues: tuple[TrackerIssue, ...]
    complete: bool = False


@dataclass(frozen=True)
class MappingView:
    """A mapping (a "Project") as plugins see it. ``ticketing`` holds the tracker's own settings."""

    team_key: str
    owner: str
    repo: str
    default_branch: str
    provider: str = "anthropic"
    aws_region: str | None = None
    execution_mode: str = "github-actions"
    machine_cpus: int | None = None
    machine_memory_mb: int | None = None
    session_mode: str = "autonomous"
    branch_prefix: str = "ai/"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    max_in_progress: int | None = None
    planning_enabled: bool = False
    planning_workflow_file: str | None = None
    ticketing: Mapping[str, object] = field(default_factory=dict)
    paused: bool = False

    @property
    def ticketing_provider(self) -> str | None:
        value = self.ticketing.get("provider")
        return str(value) if value else None


@dataclass(frozen=True)
class DispatchRequest:
    """Everything a runner backend needs to start one session.

    ``env`` is the complete environment of the session program (``AIIMPL_*`` variables, model
    provider variables, ``extraEnv`` and, for backends that support secrets, the team's secrets).
    ``secret_names`` lists which keys of ``env`` hold secret values: a backend must keep those
    private (never in a public log, a label or a workflow input). ``env`` is left out of the
    request's ``repr``: a request a plugin logs whole (``log.info("dispatching %r", request)``)
    does not put the job's nonce, run tokens and secrets in the log.
    """

    job_id: int
    phase: Phase
    issue_key: str
    mapping: MappingView
    branch: str
    base_branch: str
    run_name: str
    env: Mapping[str, str] = field(repr=False)
    secret_names: frozenset[str] = frozenset()
    pr_number: int | None = None
    lifetime_seconds: int = 3600


@dataclass(frozen=True)
class DispatchResult:
    """What a backend answers to a dispatch. ``run_id`` may be unknown until the run is linked."""

    run_id: str | None = None
    run_url: str | None = None
    linked: bool = False


class RunPhase(enum.StrEnum):
    """A run's state as a backend sees it."""

    PENDING = "pending"  # accepted by the backend, not started yet
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # ended; the session reports its own result through the API
    FAILED = "failed"  # ended with an error (exit code, conclusion failure)
    TIMED_OUT = "timed_out"  # the backend stopped it for exceeding its lifetime
    NOT_FOUND = "not_found"  # the backend knows no run for this job (yet)


@dataclass(frozen=True)
class InFlightRun:
    """A non-terminal job the reconciler asks a backend about."""

    job_id: int
    phase: Phase
    issue_key: str
    mapping: MappingView
    run_id: str | None
    run_name: str
    dispatched_at: datetime
    started_at: datetime | None = None
    lifetime_seconds: int = 3600

    @classmethod
    def of_dispatch(
        cls, request: DispatchRequest, run_id: str | None, dispatched_at: datetime
    ) -> InFlightRun:
        """The run ``request``'s dispatch started, as ``poll_runs`` and ``cancel`` are asked about
        it: ``run_id`` as the dispatch answered it (``None``: found by ``run_name``)."""
        return cls(
            job_id=request.job_id,
            phase=request.phase,
            issue_key=request.issue_key,
            mapping=request.mapping,
            run_id=run_id,
            run_name=request.run_name,
            dispatched_at=dispatched_at,
            lifetime_seconds=request.lifetime_seconds,
        )


@dataclass(frozen=True)
class RunState:
    """A backend's report on one in-flight run.

    ``timeout_reason`` is set with ``phase=TIMED_OUT``; ``log_excerpt`` and ``log_label`` are
    posted on the ticket for terminal failures; ``exit_code`` when the backend knows it.
    """

    job_id: int
    phase: RunPhase
    run_id: str | None = None
    run_url: str | None = None
    timeout_reason: TimeoutReason | None = None
    log_excerpt: str | None = None
    log_label: LogLabel | None = None
    exit_code: int | None = None
    detail: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    """An active session (machine or container) as listed by ``GET /api/sessions``."""

    id: str
    backend: str
    state: str
    job_id: int | None = None
    issue_key: str | None = None
    created_at: datetime | None = None
    image: str | None = None
    region: str | None = None
    log_url: str | None = None


@dataclass(frozen=True)
class SyncResult:
    """What ``sync-workflows`` changed: paths created, updated and left unchanged; and warnings,
    what the runners of the files written will fail at though the sync succeeded (the API answers
    them, the CLI and the admin UI show them)."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
