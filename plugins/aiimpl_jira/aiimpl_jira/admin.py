"""The Jira configuration helpers behind ``/api/jira/*``: JQL check, fields, field options.

Views and commands call these; they raise :class:`~aiimpl_core.errors.ProviderError` when Jira
fails and :class:`JqlInvalid` when Jira refuses a clause.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiimpl_core.errors import AiimplError, ProviderError

from .config import SORTS, clause_problem
from .provider import JiraProvider

# Jira answers these for fields that have no contexts or whose type has no options (system
# fields, text fields): "no selectable options", not a failure.
_NO_OPTIONS_STATUSES = (400, 404)


class JqlInvalid(AiimplError):
    """Jira (or the orchestrator's own rule) refuses a JQL clause; the message says why."""


@dataclass(frozen=True)
class JqlCheck:
    """A clause Jira accepted, as Jira normalised it, with its warnings."""

    jql: str
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"valid": True, "jql": self.jql, "warnings": list(self.warnings)}


def jira_messages(detail: object) -> str | None:
    """The messages of a Jira ``ErrorCollection`` body, joined."""
    if not isinstance(detail, dict):
        return None
    messages = [str(m) for m in detail.get("errorMessages") or ()]
    errors = detail.get("errors")
    if isinstance(errors, dict):
        messages.extend(str(v) for v in errors.values())
    return "; ".join(messages) or None


def check_jql(provider: JiraProvider, jql: str) -> JqlCheck:
    """Parse ``jql`` with Jira (strict validation).

    :raises JqlInvalid: with Jira's validation message, or when the clause sorts (it is ANDed into
        the trigger query, which has its own ``ORDER BY``).
    """
    try:
        parsed = provider.client.parse_jql([jql])
    except ProviderError as exc:
        if exc.status == 400:  # Jira refused the query itself: its message is the validation message
            raise JqlInvalid(jira_messages(exc.detail) or exc.message) from None
        raise
    entry = parsed[0] if parsed else {}
    errors = [str(e) for e in entry.get("errors") or ()]
    if errors:
        raise JqlInvalid("; ".join(errors))
    # (an ORDER BY inside a string, ``summary ~ "order by"``, is text and does not sort)
    problem = clause_problem(jql)
    if problem == SORTS:
        raise JqlInvalid("The JQL clause must not contain ORDER BY")
    if problem:
        raise JqlInvalid(f"The JQL clause {problem}")
    return JqlCheck(
        jql=str(entry.get("query") or jql), warnings=[str(w) for w in entry.get("warnings") or ()]
    )


def list_fields(provider: JiraProvider) -> list[dict[str, Any]]:
    """Every Jira field (system and custom), sorted by name."""
    out = [
        {
            "id": str(f.get("id", "")),
            "key": str(f.get("key") or f.get("id") or ""),
            "name": str(f.get("name") or f.get("id") or ""),
            "custom": bool(f.get("custom", False)),
            "clauseNames": sorted(str(c) for c in f.get("clauseNames") or ()),
            "type": (f.get("schema") or {}).get("type"),
        }
        for f in provider.client.fields()
        if isinstance(f, dict) and f.get("id")
    ]
    out.sort(key=lambda f: (f["name"].casefold(), f["id"]))
    return out


def field_options(provider: JiraProvider, field_id: str) -> list[dict[str, Any]]:
    """The selectable options of a field over all its contexts; empty when it has none."""
    client = provider.client
    try:
        contexts = client.field_contexts(field_id)
    except ProviderError as exc:
        if exc.status in _NO_OPTIONS_STATUSES:
            return []
        raise
    out: list[dict[str, Any]] = []
    for context in contexts:
        try:
            values = client.context_options(field_id, str(context.get("id")))
        except ProviderError as exc:
            if exc.status in _NO_OPTIONS_STATUSES:
                continue
            raise
        for option in values:
            out.append(
                {
                    "id": str(option.get("id", "")),
                    "value": str(option.get("value", "")),
                    "disabled": bool(option.get("disabled", False)),
                    "contextId": str(context.get("id", "")),
                    "contextName": str(context.get("name", "")),
                    "parentId": option.get("optionId"),
                }
            )
    return out
