"""Request and response schemas of the admin API (``/api/*`` behind the admin session).

The same classes parse request bodies and query strings in the views and describe them in the
OpenAPI document. Field names are camelCase as on the wire. Bodies whose rules depend on the
installed plugins (mappings) or that the CLI shares (secrets) are validated by their services;
their schemas here describe them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import request
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from ..services.settings import RUNNER_MODES
from ..types import JobStatus
from .common import INVALID_BODY, NOT_JSON, ApiError
from .runner import MAX_INT, StrictBoolean, StrictInteger, StrictString

INVALID_BODY_MESSAGE = INVALID_BODY
RUNNER_MODE_INVALID = "mode must be one of: " + ", ".join(RUNNER_MODES)
RUNNER_MODE_ENV_SET = (
    "RUNNER_MODE env var is set; persisted to DB but has no effect at runtime until the env var is unset"
)


def load(schema: Schema, data: Any, message: str, *, not_object: str = INVALID_BODY) -> dict[str, Any]:
    """Validate ``data`` with ``schema``; a non-object answers ``not_object``, a failed rule ``message``."""
    if data is NOT_JSON or not isinstance(data, dict):
        raise ApiError(400, not_object)
    try:
        return schema.load(data)
    except ValidationError:
        raise ApiError(400, message) from None


def load_ordered(schema: Schema, data: Any, rules: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Like :func:`load`, answering the message of the first field in ``rules`` that failed."""
    if data is NOT_JSON or not isinstance(data, dict):
        raise ApiError(400, INVALID_BODY)
    try:
        return schema.load(data)
    except ValidationError as exc:
        failed = exc.messages if isinstance(exc.messages, dict) else {}
        for field_name, message in rules:
            if field_name in failed:
                raise ApiError(400, message) from None
        raise ApiError(400, INVALID_BODY) from None


def load_query(schema: Schema, rules: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The request's query parameters, validated with ``schema`` as :func:`load_ordered` does.

    A parameter the schema reads that is given more than once is refused first (``status given
    more than once``): taking one of its values would answer a question the client did not ask
    (``status=failed&status=completed`` listed the failed jobs only). One it does not read is
    ignored however often it is given, as any parameter it does not read.
    """
    read = {field.data_key or name for name, field in schema.load_fields.items()}
    for name in request.args:
        if name in read and len(request.args.getlist(name)) > 1:
            raise ApiError(400, f"{name} given more than once")
    return load_ordered(schema, request.args.to_dict(), rules)


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


# -- POST /api/auth --------------------------------------------------------------------------------


class AuthRequestSchema(_Lenient):
    """Body of ``POST /api/auth``."""

    code = StrictString(
        required=True,
        validate=validate.Length(max=1024),
        metadata={"description": "the admin access code (AIIMPL_ADMIN_ACCESS_CODE)"},
    )


class AuthResponseSchema(Schema):
    """An admin session: send ``Authorization: Bearer <token>`` until ``expiresAt``."""

    token = fields.String(required=True)
    expiresAt = fields.String(required=True, metadata={"description": "ISO 8601, UTC"})


class SignOutResponseSchema(Schema):
    """The session is ended."""

    ok = fields.Boolean(required=True)


# -- jobs, steps, issues, blockers ------------------------------------------------------------------


def _no_nul(value: str) -> None:
    # PostgreSQL text cannot hold NUL: refused here, before it reaches a query
    if "\x00" in value:
        raise ValidationError("NUL is not allowed")


#: the lists the UI refreshes every few seconds (the dispatch log, issues, blockers, the outbox) are
#: answered this many rows at a time unless ``limit`` says otherwise, and never more than LIST_MAX:
#: their tables only grow (tracked issues and jobs are kept), and an answer of them all, every few
#: seconds in every open tab, would cost the server more the longer it runs
LIST_DEFAULT = 100
LIST_MAX = 500
LIMIT_RULE = ("limit", f"limit must be an integer between 1 and {LIST_MAX}")


class QueryInteger(fields.Integer):
    """A query parameter's integer: ASCII digits alone (``int()`` would also take " 5", "+5", "1_0"
    or other scripts' digits)."""

    def _validated(self, value: Any) -> int:
        if not (isinstance(value, str) and value.isascii() and value.isdigit()):
            raise self.make_error("invalid")
        return super()._validated(value)


def _limit(order: str) -> fields.Integer:
    """The ``limit`` query parameter of a list answered in ``order``."""
    return QueryInteger(
        validate=validate.Range(min=1, max=LIST_MAX),
        load_default=LIST_DEFAULT,
        metadata={"description": f"at most this many, {order} (1-{LIST_MAX}, default {LIST_DEFAULT})"},
    )


#: what ``GET /api/jobs`` filters a status by: a status, or ``active`` (any not terminal)
JOB_STATUS_FILTERS = [*(s.value for s in JobStatus), "active"]


class JobsQuerySchema(_Lenient):
    """Filters of ``GET /api/jobs``."""

    status = StrictString(
        validate=validate.OneOf(JOB_STATUS_FILTERS),
        metadata={"description": "only jobs in this status; `active`: in any status not terminal (unknown, "
                                 "dispatched, running), as `aiimpl jobs list --status active`"},
    )
    team = StrictString(
        validate=[validate.Length(min=1, max=64), _no_nul], metadata={"description": "only this team's jobs"}
    )
    issue = StrictString(
        validate=[validate.Length(min=1, max=64), _no_nul], metadata={"description": "only this issue's jobs"}
    )
    limit = _limit("newest first")


JOBS_QUERY_RULES = (
    ("status", "status must be one of: " + ", ".join(JOB_STATUS_FILTERS)),
    ("team", "team must be 1 to 64 characters"),
    ("issue", "issue must be 1 to 64 characters"),
    LIMIT_RULE,
)


class TransitionSchema(Schema):
    """One status change of a job."""

    fromStatus = fields.String(allow_none=True)
    toStatus = fields.String()
    reason = fields.String(allow_none=True)
    at = fields.String()


class JobSchema(Schema):
    """A job (one dispatch) as the dispatch log shows it."""

    id = fields.Integer()
    issueKey = fields.String()
    teamKey = fields.String()
    phase = fields.String(metadata={"description": "planning, implementation or gap-analysis"})
    status = fields.String(metadata={"description": "the reference's job status values"})
    timeoutReason = fields.String(allow_none=True)
    backend = fields.String(allow_none=True)
    runnerMode = fields.String(allow_none=True)
    shadow = fields.Boolean()
    owner = fields.String(allow_none=True)
    repo = fields.String(allow_none=True)
    baseBranch = fields.String(allow_none=True)
    branch = fields.String(allow_none=True)
    runId = fields.String(allow_none=True)
    runUrl = fields.String(allow_none=True)
    logUrl = fields.String(allow_none=True)
    prNumber = fields.Integer(allow_none=True)
    prUrl = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    logLabel = fields.String(allow_none=True)
    costUsd = fields.Float(allow_none=True)
    turns = fields.Integer(allow_none=True)
    durationSeconds = fields.Float(allow_none=True)
    createdAt = fields.String(allow_none=True)
    dispatchedAt = fields.String(allow_none=True)
    runningAt = fields.String(allow_none=True)
    finishedAt = fields.String(allow_none=True)
    launchAfter = fields.String(allow_none=True, metadata={
        "description": "the backend rate-limited the dispatch: the job, still unknown, is tried again "
                       "from this time"})


class JobDetailSchema(JobSchema):
    """A job with its status history."""

    plan = fields.String(allow_none=True)
    logExcerpt = fields.String(allow_none=True)
    transitions = fields.List(fields.Nested(TransitionSchema))


class JobStepViewSchema(Schema):
    """A pipeline step a runner reported."""

    id = fields.String(metadata={"description": "the runner's step id"})
    type = fields.String()
    status = fields.String()
    startedAt = fields.String()
    finishedAt = fields.String(allow_none=True)
    detail = fields.Raw(allow_none=True)
    source = fields.String(
        metadata={"description": "runner (/runner/progress) or session (/api/step-report)"}
    )


class IssuesQuerySchema(_Lenient):
    """Parameters of ``GET /api/issues``."""

    refresh = fields.String(
        metadata={"description": "`1` reads the triggered issues live from every configured tracker"}
    )
    limit = _limit(
        "the issues updated most recently first (the tracked issues by when the orchestrator last saw "
        "or changed them; with `refresh=1`, by the tracker's update time)"
    )


ISSUES_QUERY_RULES = (LIMIT_RULE,)


class IssueJobSchema(Schema):
    id = fields.Integer()
    phase = fields.String()
    status = fields.String()
    timeoutReason = fields.String(allow_none=True)
    prNumber = fields.Integer(allow_none=True)
    prUrl = fields.String(allow_none=True)
    createdAt = fields.String(allow_none=True)


class IssueSchema(Schema):
    """A tracked issue with its lifecycle stage and latest job."""

    issueKey = fields.String()
    teamKey = fields.String()
    provider = fields.String(allow_none=True)
    title = fields.String()
    url = fields.String(allow_none=True)
    stage = fields.String(
        allow_none=True,
        metadata={"description": "the lifecycle stage (`triggered` for a triggered issue no stage was set on "
                                 "yet); null for an issue seen without its trigger and in no stage"},
    )
    stageTitle = fields.String(allow_none=True)
    triggered = fields.Boolean()
    lastSeenAt = fields.String(allow_none=True)
    latestJob = fields.Nested(IssueJobSchema, allow_none=True)


class BlockersQuerySchema(_Lenient):
    """Parameters of ``GET /api/blockers``."""

    limit = _limit("the issues blocked longest first")


BLOCKERS_QUERY_RULES = (LIMIT_RULE,)


class BlockerSchema(Schema):
    """An issue the latest poll cycle did not dispatch, and why."""

    issueKey = fields.String()
    teamKey = fields.String()
    provider = fields.String(allow_none=True)
    reason = fields.String(metadata={"description": "concurrency, dedup, no-mapping, …"})
    message = fields.String()
    title = fields.String(allow_none=True)
    since = fields.String(metadata={"description": "when this reason first held"})
    lastSeenAt = fields.String()


# -- outbox -------------------------------------------------------------------------------------------

#: the states ``GET /api/outbox`` filters on (``shadow``: what a shadow job would have written, recorded
#: only, for an operator trying shadow mode to read)
OUTBOX_STATES = ("dead", "pending", "sending", "done", "shadow")
#: longest ``bodyPreview`` of an outbox item (a comment's body may be long)
OUTBOX_PREVIEW_CHARS = 200


class OutboxQuerySchema(_Lenient):
    """Filters of ``GET /api/outbox``."""

    state = StrictString(
        validate=validate.OneOf(OUTBOX_STATES),
        load_default="dead",
        metadata={"description": "only items in this state (default dead)"},
    )
    issueKey = StrictString(
        validate=[validate.Length(min=1, max=64), _no_nul],
        metadata={"description": "only this issue's items"},
    )
    limit = _limit("newest first")


OUTBOX_QUERY_RULES = (
    ("state", "state must be one of: " + ", ".join(OUTBOX_STATES)),
    ("issueKey", "issueKey must be 1 to 64 characters"),
    LIMIT_RULE,
)


class OutboxItemSchema(Schema):
    """A queued tracker write (its body only as a preview)."""

    id = fields.Integer()
    issueKey = fields.String()
    jobId = fields.Integer(allow_none=True)
    provider = fields.String(metadata={"description": "the ticketing provider id"})
    op = fields.String(metadata={"description": "comment, stage or done"})
    kind = fields.String(
        allow_none=True, metadata={"description": "what the comment reports (outcome, plan, …)"}
    )
    stage = fields.String(allow_none=True, metadata={"description": "the stage a `stage` write sets"})
    state = fields.String(metadata={"description": "pending, sending, done, dead or shadow"})
    attempts = fields.Integer()
    lastError = fields.String(allow_none=True, metadata={"description": "the last failure's message"})
    bodyPreview = fields.String(
        allow_none=True,
        metadata={"description": f"the comment's first characters (at most {OUTBOX_PREVIEW_CHARS})"},
    )
    createdAt = fields.String(allow_none=True, metadata={"description": "when it was first queued"})
    nextAttemptAt = fields.String(allow_none=True)
    doneAt = fields.String(allow_none=True)
    requeuedAt = fields.String(
        allow_none=True,
        metadata={"description": "when an operator last retried it, after it was given up on: its "
                                 "attempts and the time before it is given up again count from then"},
    )


class OutboxListSchema(Schema):
    """Outbox items, newest first, and how many items are in each state."""

    items = fields.List(fields.Nested(OutboxItemSchema))
    counts = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        metadata={
            "description": "items per state (of the issue, when `issueKey` is given), whatever `state` says"
        },
    )


# -- checks ------------------------------------------------------------------------------------------


class CheckSchema(Schema):
    """One thing ``GET /api/checks`` verified."""

    kind = fields.String(
        metadata={"description": "ticketing, runner, github, model (what a session on a backend that "
                                 "keeps secrets needs to reach its model, e.g. Anthropic's API key), "
                                 "secrets (stored secrets the key cannot decrypt), settings (a setting "
                                 "that names what is not installed) or database (this host's clock is "
                                 "off the database server's)"}
    )
    provider = fields.String(metadata={"description": "the provider id (`github` for GitHub)"})
    name = fields.String(metadata={"description": "what was checked (`credentials`, `project ENG`, …)"})
    status = fields.String(metadata={"description": "ok, failed or skipped"})
    detail = fields.String(metadata={"description": "what was found, or why it failed"})


class ChecksSchema(Schema):
    """Answer of ``GET /api/checks``."""

    checks = fields.List(fields.Nested(CheckSchema))
    failed = fields.Integer(metadata={"description": "how many checks failed"})
    summary = fields.String(
        metadata={"description": "the last line of `aiimpl check`: how many passed, failed and were "
                                 "skipped (`7 checks: 0 passed, 7 skipped (nothing is configured to "
                                 "check yet)`)"}
    )


# -- mappings ----------------------------------------------------------------------------------------


class TicketingSchema(Schema):
    """The tracker of a mapping and that tracker's own settings."""

    class Meta:
        unknown = "include"

    provider = fields.String(required=True, metadata={"description": "an installed ticketing provider id"})


class MappingInputSchema(_Lenient):
    """Body of ``POST /api/mappings``: create, or update the fields given (others keep their values;
    fields not listed here are ignored)."""

    teamKey = fields.String(
        required=True, metadata={"description": "the tracker team (Linear team key, Jira project key)"}
    )
    owner = fields.String(metadata={"description": "required unless the mapping has one"})
    repo = fields.String(metadata={"description": "required unless the mapping has one"})
    defaultBranch = fields.String(metadata={"description": "required unless the mapping has one"})
    provider = fields.String(metadata={"description": "an installed model provider id (default anthropic)"})
    awsRegion = fields.String(allow_none=True)
    executionMode = fields.String(
        metadata={"description": "an installed runner backend id (default github-actions)"}
    )
    machineCpus = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_INT))
    machineMemoryMb = fields.Integer(allow_none=True, validate=validate.Range(min=256, max=MAX_INT))
    sessionMode = fields.String(validate=validate.OneOf(["autonomous", "interactive", "hybrid"]))
    branchPrefix = fields.String(metadata={"description": "default `ai/`; git ref-name rules apply"})
    extraEnv = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    maxInProgressAiIssues = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_INT))
    planningEnabled = fields.Boolean()
    planningWorkflowFile = fields.String(allow_none=True)
    ticketing = fields.Nested(TicketingSchema, allow_none=True)
    paused = fields.Boolean()


class MappingSchema(MappingInputSchema):
    """A stored mapping (a "Project")."""

    class Meta:
        unknown = RAISE

    owner = fields.String(required=True)
    repo = fields.String(required=True)
    createdAt = fields.String()
    updatedAt = fields.String()


class MappingPatchSchema(_Lenient):
    """Body of ``PATCH /api/mappings/{teamKey}``: exactly one of the two fields (others are ignored)."""

    paused = StrictBoolean()
    maxInProgressAiIssues = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=MAX_INT))


class DeletedSchema(Schema):
    deleted = fields.Boolean(required=True)
    name = fields.String(metadata={"description": "the secret deleted (the secrets' DELETE)"})


class SyncWorkflowsSchema(Schema):
    """What a workflow sync changed in the repository."""

    teamKey = fields.String()
    backend = fields.String()
    created = fields.List(fields.String())
    updated = fields.List(fields.String())
    unchanged = fields.List(fields.String())
    warnings = fields.List(fields.String(), metadata={
        "description": "what the runners of the files written will fail at though the sync succeeded "
                       "(e.g. an AIIMPL_PUBLIC_URL only the orchestrator's host reaches); empty when none"
    })


# -- runner mode ---------------------------------------------------------------------------------------


class RunnerModeRequestSchema(_Lenient):
    """Body of ``POST /api/runner-mode``."""

    mode = StrictString(required=True, validate=validate.OneOf(RUNNER_MODES))


class RunnerModeSchema(Schema):
    """The saved runner mode, the one in force, and the ``RUNNER_MODE`` override (if set)."""

    mode = fields.String(metadata={"description": "saved in the database"})
    effective = fields.String(metadata={"description": "in force (RUNNER_MODE wins)"})
    envOverride = fields.String(allow_none=True)
    warnings = fields.List(fields.String(), metadata={
        "description": "a forced mode (gha, fly, local) whose runner backend is not installed: in force, "
                       "every issue waits, blocked, until it is installed or the mode changed; saved while "
                       "RUNNER_MODE forces another, it will once it is in force"})


# -- sessions and secrets --------------------------------------------------------------------------------


class SessionSchema(Schema):
    """An active session machine or container."""

    id = fields.String()
    backend = fields.String()
    state = fields.String()
    jobId = fields.Integer(allow_none=True)
    issueKey = fields.String(allow_none=True)
    createdAt = fields.String(allow_none=True)
    image = fields.String(allow_none=True)
    region = fields.String(allow_none=True)
    logUrl = fields.String(allow_none=True)


class SessionDestroyedSchema(Schema):
    id = fields.String()
    backend = fields.String()
    destroyed = fields.Boolean()


class SecretInputSchema(_Lenient):
    """Body of a secret write (other fields are ignored); the value is stored encrypted and never
    returned."""

    name = fields.String(required=True, metadata={"description": "letters, digits and underscores"})
    value = fields.String(required=True, validate=validate.Length(min=1))


class SecretSchema(Schema):
    """A secret's name and times (never its value)."""

    name = fields.String()
    createdAt = fields.String(allow_none=True)
    updatedAt = fields.String(allow_none=True)


__all__ = [name for name in dir() if name.endswith("Schema")] + [
    "BLOCKERS_QUERY_RULES",
    "INVALID_BODY_MESSAGE",
    "ISSUES_QUERY_RULES",
    "JOBS_QUERY_RULES",
    "LIMIT_RULE",
    "LIST_DEFAULT",
    "LIST_MAX",
    "OUTBOX_PREVIEW_CHARS",
    "OUTBOX_QUERY_RULES",
    "OUTBOX_STATES",
    "load_ordered",
    "RUNNER_MODE_ENV_SET",
    "RUNNER_MODE_INVALID",
    "load",
]
