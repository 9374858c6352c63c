"""Jira configuration: the connection (environment) and a mapping's ``ticketing`` settings.

The connection comes from ``AIIMPL_JIRA_*`` variables, declared here as
:class:`~aiimpl_core.providers.ConfigVar` so the core lists them and reads them from the
environment. A mapping's ``ticketing`` object (``{"provider": "jira", "jql": "..."}``) is
checked by :class:`TicketingSettingsSchema`; every message names the field.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiimpl_core.providers import ConfigVar
from aiimpl_core.types import Stage
from marshmallow import RAISE, Schema, ValidationError, fields, validates

CONFIG_VARS: tuple[ConfigVar, ...] = (
    ConfigVar("AIIMPL_JIRA_URL", "Jira Cloud site URL, e.g. https://acme.atlassian.net"),
    ConfigVar(
        "AIIMPL_JIRA_SITE_URL",
        "Site URL of the issue links (…/browse/KEY) when AIIMPL_JIRA_URL is not the site, as with "
        "OAuth 2.0's https://api.atlassian.com/ex/jira/<cloudId> (default: AIIMPL_JIRA_URL)",
    ),
    ConfigVar("AIIMPL_JIRA_EMAIL", "Account email for basic authentication (with AIIMPL_JIRA_API_TOKEN)"),
    ConfigVar("AIIMPL_JIRA_API_TOKEN", "API token of that account (basic authentication)", sensitive=True),
    ConfigVar(
        "AIIMPL_JIRA_BEARER_TOKEN",
        "OAuth 2.0 or personal access token, instead of email + API token",
        sensitive=True,
    ),
    ConfigVar(
        "AIIMPL_JIRA_WEBHOOK_SECRET",
        "Shared secret of POST /api/jira/webhook "
        "(query parameter `secret`, header X-Aiimpl-Webhook-Secret, or X-Hub-Signature HMAC)",
        sensitive=True,
    ),
    ConfigVar(
        "AIIMPL_JIRA_PROJECTS",
        "Comma-separated project keys; when set, only these of the mapped projects are searched and "
        "dispatched, by the poll and the webhook",
    ),
)

#: The trigger: a person moves the issue to this status.
TRIGGER_STATUS = "Ready"

#: The reference's lifecycle table, Jira column.
STAGE_STATUS: dict[Stage, str] = {
    Stage.TRIGGERED: TRIGGER_STATUS,
    Stage.PLANNING: "Planning",
    Stage.PLAN_COMPLETE: "Plan Approved",
    Stage.IMPLEMENTING: "Implementing",
    Stage.PR_OPENED: "PR Ready",
    Stage.PLANNING_FAILED: "Planning Failed",
    Stage.IMPLEMENTATION_FAILED: "Implementation Failed",
}
#: Status name (case-folded) → stage; ``Ready`` reads as "triggered", not as a stage.
STATUS_STAGE: dict[str, Stage] = {
    name.casefold(): stage for stage, name in STAGE_STATUS.items() if stage is not Stage.TRIGGERED
}

#: The category key Jira gives statuses that count as finished.
DONE_CATEGORY = "done"


def _split(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        parts = value.split(",")
    else:
        parts = [str(v) for v in value]  # type: ignore[union-attr]
    return tuple(p.strip() for p in parts if p and p.strip())


@dataclass(frozen=True)
class JiraSettings:
    """The Jira connection of this orchestrator, read from the application's configuration."""

    url: str | None
    email: str | None
    api_token: str | None
    bearer_token: str | None
    webhook_secret: str | None
    projects: tuple[str, ...]
    #: the site the issue links lead to, when ``url`` (the API's base) is not it
    site_url: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> JiraSettings:
        def get(name: str) -> str | None:
            value = config.get(name)
            return str(value).strip() or None if value not in (None, "") else None

        url = get("AIIMPL_JIRA_URL")
        return cls(
            url=url.rstrip("/") if url else None,
            email=get("AIIMPL_JIRA_EMAIL"),
            api_token=get("AIIMPL_JIRA_API_TOKEN"),
            bearer_token=get("AIIMPL_JIRA_BEARER_TOKEN"),
            webhook_secret=get("AIIMPL_JIRA_WEBHOOK_SECRET"),
            projects=_split(config.get("AIIMPL_JIRA_PROJECTS")),
            site_url=(get("AIIMPL_JIRA_SITE_URL") or "").rstrip("/") or None,
        )

    @property
    def configured(self) -> bool:
        """A site URL and one complete set of credentials."""
        return bool(self.url and (self.bearer_token or (self.email and self.api_token)))

    def auth_header(self) -> str:
        """The ``Authorization`` header value; a bearer token wins over basic credentials."""
        if self.bearer_token:
            return f"Bearer {self.bearer_token}"
        raw = f"{self.email or ''}:{self.api_token or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def __repr__(self) -> str:  # never print credentials, even in a debugger or a log line
        return f"JiraSettings(url={self.url!r}, projects={self.projects!r}, configured={self.configured})"


ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
#: :func:`clause_problem`'s findings, said after the field's name (``ticketing.jql …``)
SORTS = "must be a filter clause without ORDER BY"
UNBALANCED = "has unbalanced quotes or parentheses"


def clause_problem(jql: str) -> str | None:
    """What makes ``jql`` unfit to be ANDed, in parentheses, to the trigger query; ``None`` when
    nothing does.

    Read as JQL reads it: text inside '…' or "…" (where a backslash escapes the next character,
    as it does outside them) is a value, so its parentheses, quotes and words count for nothing
    (``summary ~ "order by"``, ``summary ~ ":("``). Outside strings the parentheses must nest: a
    ``)`` that closes more than was opened would close the parentheses the clause is put in, and
    what follows it (``labels = x) OR (project is not EMPTY``) would widen the search to every
    project's issues.
    """
    outside: list[str] = []  # the clause with each string's text taken out
    quote: str | None = None
    depth = 0
    escaped = False
    for char in jql:
        if escaped:
            escaped = False
            if quote is None:
                outside.append("_")  # part of an unquoted word (``a\ order`` is one value)
            continue
        if char == "\\":
            escaped = True
            continue
        if quote is not None:
            if char == quote:
                quote = None
                outside.append(char)
            continue
        if char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                return UNBALANCED
        outside.append(char)
    if quote is not None or escaped or depth != 0:
        return UNBALANCED
    if ORDER_BY.search("".join(outside)):
        return SORTS
    return None


class TicketingSettingsSchema(Schema):
    """A mapping's ``ticketing`` settings for Jira.

    ``jql`` is an optional clause ANDed to the trigger query of the mapping's project
    (``status = "Ready" AND project = "ENG" AND (<jql>)``), so it may not sort.
    """

    class Meta:
        unknown = RAISE

    provider = fields.String(required=True)
    jql = fields.String(allow_none=True)

    @validates("provider")
    def _provider(self, value: str, **_: Any) -> None:
        if value != "jira":
            raise ValidationError("must be 'jira'")

    @validates("jql")
    def _jql(self, value: str | None, **_: Any) -> None:
        if value is None:
            return
        problem = clause_problem(value)
        if problem:
            raise ValidationError(problem)


def ticketing_errors(settings: object) -> str | None:
    """The first problem of a mapping's ``ticketing`` object as ``ticketing.<field> <problem>``."""
    if not isinstance(settings, Mapping):
        return "ticketing must be an object"
    try:
        TicketingSettingsSchema().load(dict(settings))
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        name, problems = sorted(messages.items())[0]
        problem = problems[0] if isinstance(problems, list) and problems else str(problems)
        if problem == "Unknown field.":
            return f"ticketing.{name} is not a Jira setting (allowed: provider, jql)"
        if problem == "Not a valid string.":
            return f"ticketing.{name} must be a string"
        if problem == "Missing data for required field.":
            return f"ticketing.{name} is required"
        return f"ticketing.{name} {problem}"
    return None
