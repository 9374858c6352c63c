"""Linear configuration: the connection (environment or a stored secret) and a mapping's settings.

The connection comes from ``AIIMPL_LINEAR_*`` variables, declared here as
:class:`~aiimpl_core.providers.ConfigVar` so the core lists them and reads them from the
environment. The API key may instead be stored as the global secret ``LINEAR_API_KEY``.

A mapping's ``ticketing`` object (``{"provider": "linear"}``) is checked by
:func:`validate_ticketing`; every message names the field. Linear needs no per-mapping settings:
the mapping's ``teamKey`` is the Linear team key, and labels are found or created in that team.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiimpl_core.errors import ProviderConfigError
from aiimpl_core.providers import ConfigVar
from aiimpl_core.types import Stage

PROVIDER_ID = "linear"
DEFAULT_API_URL = "https://api.linear.app/graphql"
#: Name of the global secret that may hold the personal API key.
API_KEY_SECRET = "LINEAR_API_KEY"
#: Linear answers at most this many nodes per connection page.
MAX_PAGE_SIZE = 250
#: Linear rejects a webhook delivery older than this; we do too (replay protection).
WEBHOOK_WINDOW_SECONDS = 60.0

CONFIG_VARS: tuple[ConfigVar, ...] = (
    ConfigVar(
        "AIIMPL_LINEAR_API_KEY",
        "Linear personal API key (sent as `Authorization: <key>`); "
        "may instead be stored as the global secret LINEAR_API_KEY",
        sensitive=True,
    ),
    ConfigVar(
        "AIIMPL_LINEAR_OAUTH_TOKEN",
        "Linear OAuth access token (sent as `Authorization: Bearer <token>`), instead of an API key",
        sensitive=True,
    ),
    ConfigVar("AIIMPL_LINEAR_API_URL", "Linear GraphQL endpoint", default=DEFAULT_API_URL),
    ConfigVar(
        "AIIMPL_LINEAR_WEBHOOK_SECRET",
        "Signing secret of the Linear webhook that posts to "
        "/api/linear/webhook (checks the Linear-Signature header)",
        sensitive=True,
    ),
    ConfigVar(
        "AIIMPL_LINEAR_PAGE_SIZE",
        "Issues per page when listing triggered issues (1-250; a bigger page "
        "costs more of Linear's hourly complexity budget on every poll)",
        default="50",
    ),
    ConfigVar("AIIMPL_LINEAR_TIMEOUT", "Seconds before a Linear API call times out", default="15"),
)

#: The trigger a person adds.
TRIGGER_LABEL = "AI-Implement"

#: The reference's lifecycle table, Linear column (failed stages have no label: AI labels are removed).
STAGE_LABELS: dict[Stage, str] = {
    Stage.PLANNING: "AI-Planning",
    Stage.PLAN_COMPLETE: "Plan-Complete",
    Stage.IMPLEMENTING: "AI-Working",
    Stage.PR_OPENED: "Ready for Review",
}
#: Every label the orchestrator owns; setting a stage removes the others, never a person's labels.
AI_LABELS: tuple[str, ...] = (TRIGGER_LABEL, *STAGE_LABELS.values())
#: Label name (case-folded, as Linear compares names) -> stage.
LABEL_STAGES: dict[str, Stage] = {name.casefold(): stage for stage, name in STAGE_LABELS.items()}

#: Workflow state types of a finished issue (Linear's ``WorkflowState.type`` is one of "triage",
#: "backlog", "unstarted", "started", "completed", "canceled", "duplicate"). An issue in one of them
#: is not dispatched (the triggered listing filters them out), even with the trigger label left on
#: it, and as a blocker no longer blocks: an issue marked a duplicate of another is closed too.
CLOSED_STATE_TYPES = frozenset({"completed", "canceled", "duplicate"})
DONE_STATE_TYPE = "completed"

#: Settings a mapping's ``ticketing`` object may carry for Linear.
TICKETING_KEYS = ("provider",)
_TEAM_KEY = re.compile(r"[A-Za-z0-9]{1,7}")


def _text(config: Mapping[str, Any], name: str) -> str | None:
    value = config.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(config: Mapping[str, Any], name: str, default: float, low: float, high: float) -> float:
    raw = _text(config, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ProviderConfigError(f"{name} must be a number", provider=PROVIDER_ID) from None
    if not low <= value <= high:
        raise ProviderConfigError(f"{name} must be between {low:g} and {high:g}", provider=PROVIDER_ID)
    return value


@dataclass(frozen=True)
class LinearSettings:
    """The Linear connection of this orchestrator, read from the application's configuration."""

    api_url: str
    api_key: str | None
    oauth_token: str | None
    webhook_secret: str | None
    page_size: int
    timeout: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LinearSettings:
        return cls(
            api_url=_text(config, "AIIMPL_LINEAR_API_URL") or DEFAULT_API_URL,
            api_key=_text(config, "AIIMPL_LINEAR_API_KEY"),
            oauth_token=_text(config, "AIIMPL_LINEAR_OAUTH_TOKEN"),
            webhook_secret=webhook_secret(config),
            page_size=int(_number(config, "AIIMPL_LINEAR_PAGE_SIZE", 50, 1, MAX_PAGE_SIZE)),
            timeout=_number(config, "AIIMPL_LINEAR_TIMEOUT", 15.0, 1, 300),
        )


def webhook_secret(config: Mapping[str, Any]) -> str | None:
    """The webhook's signing secret, read alone: a listing setting out of range (which fails
    every call of the connection) does not keep deliveries from being verified."""
    return _text(config, "AIIMPL_LINEAR_WEBHOOK_SECRET")


def authorization_header(api_key: str | None, oauth_token: str | None) -> str | None:
    """Linear's two schemes: a personal API key is sent bare, an OAuth token as ``Bearer``."""
    if api_key:
        return api_key
    if oauth_token:
        return f"Bearer {oauth_token}"
    return None


def validate_ticketing(mapping: Mapping[str, Any]) -> None:
    """Check the Linear part of a mapping (camelCase keys, as posted to ``POST /api/mappings``).

    :raises ProviderConfigError: with a message naming the field.
    """
    ticketing = mapping.get("ticketing")
    if ticketing is None:
        ticketing = {}
    if not isinstance(ticketing, Mapping):
        raise ProviderConfigError("ticketing must be an object", provider=PROVIDER_ID)
    provider = ticketing.get("provider", PROVIDER_ID)
    if provider != PROVIDER_ID:
        return  # another tracker's settings are that tracker's business
    unknown = sorted(str(k) for k in ticketing if k not in TICKETING_KEYS)
    if unknown:
        raise ProviderConfigError(
            f"ticketing.{unknown[0]} is not a Linear setting (allowed: {', '.join(TICKETING_KEYS)})",
            provider=PROVIDER_ID,
        )
    team_key = mapping.get("teamKey")
    if isinstance(team_key, str) and team_key and not _TEAM_KEY.fullmatch(team_key):
        raise ProviderConfigError(
            "teamKey must be a Linear team key (1 to 7 letters or digits, e.g. ENG)", provider=PROVIDER_ID
        )
