"""Request and response schemas of the integration and callback API.

The ``/runner/*`` and ``/trigger/gap-fill`` endpoints answer a failed validation with one slug,
the ``/api/*`` session endpoints with one message: always the *first* failing rule, in the order
of the reference's tables. Marshmallow reports every failing field at once, so each schema
carries its rules as an ordered list of (error path, answer) and :func:`first_error` picks the
first that matches. A path ``("comments", "*")`` matches any error inside an element of a list; a
path that ends at a field matches an error of that field itself (missing, null, wrong type, a
failed validator), never one of a field nested in it: ``("step",)`` is "step is missing or not an
object", so a bad ``step.finished_at`` must not be answered with it. An error no rule names is
answered with the schema's ``FALLBACK``, which names the field (by its dotted path) and so never
claims a condition that does not hold.

Fields are strict: no string→number or number→bool coercion, booleans are not integers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from ..auth.tokens import AUDIENCES  # noqa: F401 - re-exported for the OpenAPI description
from ..services.mappings import TEAM_KEY_RE
from ..types import LogLabel, Phase
from .common import NOT_JSON, read_json

MAX_INT = 2**31 - 1  # the database's INTEGER
#: A result's own comments are posted on the issue while the request waits: a handful, each of a
#: size every tracker takes (GitHub's limit is 65,536 characters; Jira Cloud's is 32,767).
MAX_RESULT_COMMENTS = 20
MAX_COMMENT_CHARS = 32_767
#: a step's time stamps (the database column's size)
STEP_TIME_CHARS = 64
#: a URL a runner reports (``prUrl``, ``logUrl``)
MAX_URL_CHARS = 2000

#: Sentinel for "the body is missing or is not JSON".


#: The callbacks read their bodies with the one reader every endpoint uses.
read_json_body = read_json


# -- strict fields --------------------------------------------------------------------------


class StrictString(fields.String):
    """A string, never a number or a boolean."""


class StrictInteger(fields.Integer):
    """An integer, never a boolean, a float or a numeric string."""

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        return value

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(min=0, max=MAX_INT))
        super().__init__(strict=True, **kwargs)


class StrictNumber(fields.Float):
    """A finite JSON number (int or float), never a boolean or a string."""

    def _validated(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.make_error("special")
        try:
            return float(value)
        except OverflowError:  # an integer beyond a double's range (1 followed by 400 zeros)
            raise self.make_error("special") from None


class StrictBoolean(fields.Boolean):
    """``true`` or ``false`` only."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


# -- the ordered-rules machinery -----------------------------------------------------------


class OrderedRulesSchema(Schema):
    """A schema whose validation failure is answered with one code, the first of ``RULES``.

    ``RULES`` is a sequence of ``(path, answer)``; errors on fields no rule names are answered
    with ``FALLBACK``: a slug (the field's dotted path goes alongside it, in ``field``) or a
    message with a ``{field}`` placeholder.
    """

    RULES: ClassVar[Sequence[tuple[tuple[str, ...], str]]] = ()
    FALLBACK: ClassVar[str] = "invalid_field"
    #: when set, a rule's field that is a string, only too long (a :data:`TOO_LONG` validator), is
    #: answered with this instead of the rule's answer: ``{field}`` and ``{limit}`` are filled in
    TOO_LONG_ANSWER: ClassVar[str | None] = None
    #: when set, a rule's field that is there but no string is answered with this instead of the
    #: rule's answer (a rule whose condition is only "missing"): ``{field}`` is filled in
    NOT_A_STRING_ANSWER: ClassVar[str | None] = None
    #: when set, a rule's field that is a whole number, only larger than a :data:`TOO_LARGE`
    #: validator allows, is answered with this: ``{field}`` and ``{limit}`` (the number) are filled in
    TOO_LARGE_ANSWER: ClassVar[str | None] = None

    class Meta:
        unknown = EXCLUDE  # runners may send more than we read


#: the message of a length validator whose failure :class:`OrderedRulesSchema` can tell apart
TOO_LONG = "at most {max} characters"
#: the message of a range validator's maximum that :class:`OrderedRulesSchema` can tell apart
TOO_LARGE = "no more than {max}"


def _field_messages(errors: Any, path: tuple[str, ...]) -> Any:
    """The messages of the field at ``path`` in marshmallow's errors (``None`` when it has none)."""
    node = errors
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _only(errors: Any, path: tuple[str, ...], prefix: str) -> str | None:
    """The field's message when the field at ``path`` failed only with messages that start with
    ``prefix`` (one validator's, such as :data:`TOO_LONG`'s)."""
    node = _field_messages(errors, path)
    if isinstance(node, list) and node and all(isinstance(m, str) and m.startswith(prefix) for m in node):
        return str(node[0])
    return None


def _not_a_string(errors: Any, path: tuple[str, ...]) -> bool:
    """Whether the field at ``path`` failed only for not being a string (marshmallow's message)."""
    return _field_messages(errors, path) == [fields.String.default_error_messages["invalid"]]


def _own_error(node: Any) -> bool:
    """Whether ``node`` (a field's entry in marshmallow's errors) is an error of the field itself:
    a list of messages, or a nested schema's ``_schema`` (the value is not an object)."""
    return isinstance(node, list) or (isinstance(node, dict) and "_schema" in node)


def _matches(errors: Any, path: tuple[str, ...]) -> bool:
    node = errors
    for part in path:
        if not isinstance(node, dict):
            return False
        if part == "*":
            keys = [k for k in node if isinstance(k, int)]
            if not keys:
                return False
            node = node[min(keys)]
            continue
        if part not in node:
            return False
        node = node[part]
    return path[-1] == "*" or _own_error(node)


def error_path(errors: Any) -> str | None:
    """The dotted path of the first failing field in ``errors`` (``step.finished_at``).

    It stops at a list's elements and at a nested schema's own error, whose field it names.
    """
    parts: list[str] = []
    node = errors
    while isinstance(node, dict):
        keys = sorted(k for k in node if isinstance(k, str) and k != "_schema")
        if not keys:
            break
        parts.append(keys[0])
        node = node[keys[0]]
    return ".".join(parts) or None


def first_error(schema: OrderedRulesSchema, errors: Mapping[str, Any]) -> tuple[str, str | None]:
    """The answer of the first rule that matches ``errors``, and the field it concerns.

    With no matching rule: ``FALLBACK`` with the failing field's dotted path (substituted for its
    ``{field}``, if it has one).
    """
    for path, answer in schema.RULES:
        if _matches(errors, path):
            field_name = ".".join(p for p in path if p != "*")
            if "*" in path:
                return answer, field_name
            limit = _only(errors, path, "at most ") if schema.TOO_LONG_ANSWER else None
            if limit is not None:
                return schema.TOO_LONG_ANSWER.format(field=field_name, limit=limit), field_name
            if schema.NOT_A_STRING_ANSWER and _not_a_string(errors, path):
                return schema.NOT_A_STRING_ANSWER.format(field=field_name), field_name
            over = _only(errors, path, "no more than ") if schema.TOO_LARGE_ANSWER else None
            if over is not None:
                limit = over.removeprefix("no more than ")
                return schema.TOO_LARGE_ANSWER.format(field=field_name, limit=limit), field_name
            return answer, field_name
    field_name = error_path(errors)
    return schema.FALLBACK.replace("{field}", field_name or "body"), field_name


class BodyError(Exception):
    """A body failed validation; ``answer`` is the reference's slug or message."""

    def __init__(self, answer: str, field: str | None = None) -> None:
        super().__init__(answer)
        self.answer = answer
        self.field = field


def load(schema: OrderedRulesSchema, data: Any, *, not_object: str) -> dict[str, Any]:
    """Validate ``data``; raise :class:`BodyError` with the first failing rule's answer.

    :param not_object: the answer when ``data`` is missing or not a JSON object.
    """
    if data is NOT_JSON or not isinstance(data, dict):
        raise BodyError(not_object)
    try:
        return schema.load(data)
    except ValidationError as exc:
        errors = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        answer, field_name = first_error(schema, errors)
        raise BodyError(answer, field_name) from None


# -- POST /runner/result --------------------------------------------------------------------


class ResultCommentSchema(Schema):
    """A comment the runner wants on the issue."""

    class Meta:
        unknown = EXCLUDE

    body = StrictString(
        required=True,
        validate=validate.Length(max=MAX_COMMENT_CHARS),
        metadata={"description": f"Markdown body, at most {MAX_COMMENT_CHARS:,} characters"},
    )


class ReviewSchema(Schema):
    """The post-push review's verdict."""

    class Meta:
        unknown = EXCLUDE

    approved = StrictBoolean(required=True)
    blockers = fields.List(StrictString(), load_default=list)


class RunnerResultSchema(OrderedRulesSchema):
    """Body of ``POST /runner/result``: the final outcome of a run."""

    RULES = (
        (("comments", "*"), "invalid_comment_shape"),
        (("comments",), "invalid_comments"),
        (("outcome",), "invalid_outcome"),
        (("phase",), "invalid_phase"),
    )

    outcome = StrictString(required=True, validate=validate.OneOf(["success", "failure"]))
    phase = StrictString(required=True, validate=validate.OneOf([p.value for p in Phase]))
    comments = fields.List(
        fields.Nested(ResultCommentSchema),
        required=True,
        validate=validate.Length(max=MAX_RESULT_COMMENTS),
        metadata={"description": f"at most {MAX_RESULT_COMMENTS} comments to post on the issue"},
    )
    prUrl = StrictString(allow_none=True, validate=validate.Length(max=MAX_URL_CHARS))
    prNumber = StrictInteger(allow_none=True)
    plan = StrictString(allow_none=True)
    error = StrictString(allow_none=True)
    logExcerpt = StrictString(allow_none=True)
    logLabel = StrictString(allow_none=True, validate=validate.OneOf([label.value for label in LogLabel]))
    review = fields.Nested(ReviewSchema, allow_none=True)
    costUsd = StrictNumber(allow_none=True, validate=validate.Range(min=0))
    turns = StrictInteger(allow_none=True)
    durationSeconds = StrictNumber(allow_none=True, validate=validate.Range(min=0))


class RunnerResultResponseSchema(Schema):
    """Answer of ``POST /runner/result``."""

    jobId = fields.Integer()
    status = fields.String(metadata={"description": "the job's status after the result (terminal)"})
    ended = fields.Boolean(metadata={"description": "false when the job had already ended (e.g. timed out)"})
    failureKind = fields.String(
        metadata={
            "description": "with a failure: max_turns, agent_failed, no_changes, push_or_pr_failed, "
            "clone_failed or other (the reference's run failure messages)"
        }
    )


# -- POST /runner/progress and POST /api/step-report ----------------------------------------


class StepSchema(Schema):
    """One pipeline step as a runner reports it. Fields beyond these are kept as its detail."""

    class Meta:
        unknown = EXCLUDE

    id = StrictString(
        required=True, validate=[validate.Length(min=1), validate.Length(max=255, error=TOO_LONG)]
    )
    type = StrictString(required=True, validate=validate.Length(max=255, error=TOO_LONG))
    status = StrictString(required=True, validate=validate.Length(max=64, error=TOO_LONG))
    started_at = StrictString(required=True, validate=validate.Length(max=STEP_TIME_CHARS, error=TOO_LONG))
    finished_at = StrictString(allow_none=True, validate=validate.Length(max=STEP_TIME_CHARS))
    #: any JSON value: one that is not an object is kept as ``{"text": value}``
    detail = fields.Raw(allow_none=True)


class RunnerProgressSchema(OrderedRulesSchema):
    """Body of ``POST /runner/progress``."""

    RULES = (
        (("step", "id"), "invalid_step_id"),
        (("step", "started_at"), "invalid_step_started_at"),
        (("step", "status"), "invalid_step_status"),
        (("step", "type"), "invalid_step_type"),
        (("step",), "step_required"),
    )
    # a bad optional step field (``finished_at``) is the FALLBACK: invalid_field, field step.finished_at

    step = fields.Nested(StepSchema, required=True)


BAD_FINISHED_AT = f"step.finished_at must be a string of at most {STEP_TIME_CHARS} characters"


class StepReportSchema(OrderedRulesSchema):
    """Body of ``POST /api/step-report`` (nonce-authenticated)."""

    RULES = (
        (("nonce",), "nonce is required"),
        (("step", "id"), "step.id is required and must be a string"),
        (("step", "type"), "step.type is required and must be a string"),
        (("step", "status"), "step.status is required and must be a string"),
        (("step", "started_at"), "step.started_at is required and must be a string"),
        (("step",), "step is required"),
        # beyond the reference: its optional field, in the style of the rows above
        (("step", "finished_at"), BAD_FINISHED_AT),
    )
    FALLBACK = "{field} is invalid"
    # beyond the reference: a required field that is a string, only too long, says so
    TOO_LONG_ANSWER = "{field} must be a string of {limit}"

    # (an empty nonce is a string, so not "nonce is required": no active job matches it, 403)
    nonce = StrictString(required=True)
    step = fields.Nested(StepSchema, required=True)


class ProgressResponseSchema(Schema):
    """Answer of ``POST /runner/progress`` and ``POST /api/step-report``."""

    ok = fields.Boolean()
    jobId = fields.Integer()
    status = fields.String(metadata={"description": "the job's status (unchanged once terminal)"})
    stepId = fields.String()


# -- GET /runner/planning-context -----------------------------------------------------------


class ContextCommentSchema(Schema):
    body = fields.String()
    author = fields.String(allow_none=True)
    createdAt = fields.String(allow_none=True)


class ContextIssueSchema(Schema):
    key = fields.String()
    title = fields.String()
    description = fields.String()
    url = fields.String(allow_none=True)
    comments = fields.List(
        fields.Nested(ContextCommentSchema),
        metadata={"description": "the newest comments, oldest first: at most 100 and 100,000 characters "
                                 "in all, each cut to 32,767 characters"},
    )
    commentsOmitted = fields.Integer(metadata={"description": "older comments left out of `comments`"})


class ContextRepositorySchema(Schema):
    owner = fields.String()
    repo = fields.String()
    fullName = fields.String()


class PlanningContextSchema(Schema):
    """Answer of ``GET /runner/planning-context``."""

    jobId = fields.Integer()
    phase = fields.String()
    issue = fields.Nested(ContextIssueSchema)
    issueSource = fields.String(
        metadata={"description": "`tracker` (read live) or `cache` (the tracker failed)"}
    )
    trackerError = fields.String(allow_none=True)
    repository = fields.Nested(ContextRepositorySchema)
    baseBranch = fields.String()
    branch = fields.String()
    plan = fields.String(allow_none=True, metadata={"description": "the approved plan (implementation)"})
    prNumber = fields.Integer(
        allow_none=True, metadata={"description": "the PR under analysis (gap-analysis)"}
    )


# -- POST /api/token ------------------------------------------------------------------------


class TokenRequestSchema(OrderedRulesSchema):
    """Body of ``POST /api/token``.

    Only ``nonce`` and ``owner`` are read. The token is always for the job's repository, so any
    other field (a ``repo``, say) is ignored like every unknown field of a callback, whatever its
    type: refusing one the endpoint never reads would only break a session for nothing.
    """

    RULES = ((("nonce",), "nonce and owner are required"), (("owner",), "nonce and owner are required"))
    FALLBACK = "{field} is invalid"
    # beyond the reference, whose rule is for a field that is missing: a required field that is a
    # string, only too long, says so, and one that is there but no string too
    TOO_LONG_ANSWER = "{field} must be a string of {limit}"
    NOT_A_STRING_ANSWER = "{field} must be a string"

    nonce = StrictString(required=True, validate=validate.Length(min=1))
    owner = StrictString(required=True, validate=validate.Length(min=1))
    # a hint, never a reason to refuse: anything but a SHA-256 in hexadecimal is ignored
    refusedTokenSha256 = fields.Raw(
        load_default=None,
        metadata={
            "type": "string",
            "description": (
                "SHA-256 (hexadecimal) of a token GitHub refused the session (401: revoked before "
                "its expiry). The orchestrator's cached token, when it is that one, is replaced by a "
                "fresh one; anything else in this field is ignored."
            ),
        },
    )


def refused_token_digest(data: Mapping[str, Any]) -> str | None:
    """A token request's ``refusedTokenSha256`` when it is one (64 hexadecimal digits), else ``None``."""
    value = data.get("refusedTokenSha256")
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value.lower()
    return None


class TokenResponseSchema(Schema):
    """A short-lived GitHub installation token limited to the job's repository."""

    token = fields.String()
    expiresAt = fields.String()


# -- POST /api/status -----------------------------------------------------------------------


class ScalarField(fields.Field):
    """A string or a number (shown as text in a comment)."""

    default_error_messages = {"invalid": "must be a string or a number"}

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.make_error("invalid")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.make_error("invalid")
        return str(value)[:2000]


class StatusEventSchema(OrderedRulesSchema):
    """Body of ``POST /api/status``: a lifecycle event that becomes a progress comment."""

    RULES = (
        (("nonce",), "nonce is required"),
        (("event",), "event is required"),
        (("prNumber",), "prNumber must be a string or a number"),
        (("prUrl",), f"prUrl must be a string of at most {MAX_URL_CHARS} characters"),
        (("detail",), "detail must be a string or a number"),
        (("duration",), "duration must be a string or a number"),
        (("reason",), "reason must be a string or a number"),
        (("logUrl",), f"logUrl must be an http(s) URL of at most {MAX_URL_CHARS} characters"),
    )
    FALLBACK = "{field} is invalid"
    # beyond the reference: a required field that is a string, only too long, says so
    TOO_LONG_ANSWER = "{field} must be a string of {limit}"

    # (an empty nonce is a string, so not "nonce is required": no active job matches it, 403)
    nonce = StrictString(required=True)
    event = StrictString(required=True)
    prNumber = ScalarField(allow_none=True)
    prUrl = StrictString(allow_none=True, validate=validate.Length(max=MAX_URL_CHARS))
    detail = ScalarField(allow_none=True)
    duration = ScalarField(allow_none=True)
    reason = ScalarField(allow_none=True)
    logUrl = fields.Url(
        allow_none=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=MAX_URL_CHARS),
    )


class StatusResponseSchema(Schema):
    ok = fields.Boolean()
    event = fields.String()
    duplicate = fields.Boolean(
        metadata={"description": "the event was reported before; nothing was posted twice"}
    )


# -- POST /trigger/gap-fill -----------------------------------------------------------------


GAP_FILL_BAD_BODY = "issueKey and positive integer prNumber required"
#: an issue key as the trackers write it and :meth:`TicketingProvider.team_of` reads it: a team
#: key, a dash and the issue's number (``ENG-42``); ``ENG-`` names no issue
ISSUE_KEY_RE = re.compile(rf"(?:{TEAM_KEY_RE.pattern})-[1-9][0-9]{{0,9}}", re.ASCII)


def _issue_key(value: str) -> None:
    if not ISSUE_KEY_RE.fullmatch(value):
        raise ValidationError("not an issue key")


class GapFillSchema(OrderedRulesSchema):
    """Body of ``POST /trigger/gap-fill``."""

    RULES = ((("issueKey",), GAP_FILL_BAD_BODY), (("prNumber",), GAP_FILL_BAD_BODY))
    FALLBACK = GAP_FILL_BAD_BODY
    # beyond the reference, whose rule is for a number that is no positive integer: one larger than
    # any pull request number the database holds says so
    TOO_LARGE_ANSWER = "{field} must be at most {limit}"

    issueKey = StrictString(
        required=True,
        validate=[validate.Length(min=1, max=64), _issue_key],
        metadata={"description": "a tracker issue key: a team key, a dash and the issue's number (`ENG-42`)"},
    )
    prNumber = StrictInteger(
        required=True, validate=[validate.Range(min=1), validate.Range(max=MAX_INT, error=TOO_LARGE)]
    )


class GapFillResponseSchema(Schema):
    jobId = fields.Integer()
    status = fields.String()


# -- error bodies ---------------------------------------------------------------------------


class CallbackErrorSchema(Schema):
    """An error of the integration and callback API (slug or message, as the reference says)."""

    error = fields.String(required=True)
    field = fields.String(metadata={"description": "the offending field, for `invalid_field`"})
    teamKey = fields.String(metadata={"description": "with 423 project_paused"})
    detail = fields.String(metadata={"description": "with 502 dispatch_failed: GitHub's message"})
    dispatchStatus = fields.Integer(allow_none=True, metadata={"description": "with 502 dispatch_failed"})
    jobId = fields.Integer(metadata={"description": "with 409 already_running: the job in flight"})


__all__ = [
    "BodyError",
    "CallbackErrorSchema",
    "GapFillResponseSchema",
    "GapFillSchema",
    "NOT_JSON",
    "PlanningContextSchema",
    "ProgressResponseSchema",
    "RunnerProgressSchema",
    "RunnerResultResponseSchema",
    "RunnerResultSchema",
    "StatusEventSchema",
    "StatusResponseSchema",
    "StepReportSchema",
    "StepSchema",
    "TokenRequestSchema",
    "TokenResponseSchema",
    "error_path",
    "first_error",
    "load",
    "read_json_body",
]
