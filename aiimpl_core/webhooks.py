"""What a tracker plugin's webhook view takes from the core (public API).

A webhook tells the orchestrator about an issue before the next poll cycle would: the view checks
the delivery's signature itself, then hands the issue keys to :func:`check_issues`, which reads
each issue from the tracker and takes it through the same blockers and claim as a poll cycle (an
issue dispatched by a cycle, another delivery or another host at the same moment is dispatched
once). Bodies are read with :func:`read_json` / :func:`parse_json`, as every endpoint of the core
reads its own: a body of any shape (empty, not UTF-8, too deep, ``NaN``, a NUL) gives
:data:`NOT_JSON` instead of an exception, so the view answers 400, never 500.

The view is registered with ``aiimpl_register_blueprints`` and marked
:func:`aiimpl_core.auth.public_endpoint`: it takes no admin session.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .schemas.common import NOT_JSON, parse_json, read_json

if TYPE_CHECKING:
    from .services.dispatch import CycleReport


#: what a webhook answers (as its ``reason``) when :func:`check_issues` could not run to its end:
#: the delivery is acknowledged, not bounced back, as the next poll cycle checks the issue anyway
#: (the log says why)
CHECK_FAILED = "dispatch check failed; the next poll cycle retries"


def check_issues(provider_id: str, issue_keys: Iterable[str]) -> CycleReport:
    """Check and dispatch these issues of tracker ``provider_id`` at once.

    Each key is read with the tracker's ``get_issue`` (a key the tracker has under a newer one, an
    issue moved to another team, is reported under the key ``get_issue`` answers). A triggered
    issue is dispatched or held by a blocker, as in a poll cycle; an issue without its trigger
    only has its blocker cleared. A tracker backing off after failures is not called: the report
    says so in ``providers_skipped``, and the next poll cycle checks the issue.

    :returns: the :class:`~aiimpl_core.services.dispatch.CycleReport` of the check, read by issue
        key: ``dispatched_of(key)`` (with ``job_id`` and ``status``), ``blocked[key]`` (``reason``,
        the blocker's slug, and ``message``), ``skipped[key]`` (why it needs nothing), and
        ``providers_skipped`` / ``errors`` when the check could not run to its end.
    """
    # imported when called: the engine owns dispatch, and a plugin module loads without it
    from .services.dispatch import run_cycle_for_issues

    return run_cycle_for_issues(provider_id, list(issue_keys))


def __getattr__(name: str) -> Any:
    # ``CycleReport`` for a plugin's annotations, without importing the engine with this module
    if name == "CycleReport":
        from .services.dispatch import CycleReport

        return CycleReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CHECK_FAILED", "NOT_JSON", "CycleReport", "check_issues", "parse_json", "read_json"]
