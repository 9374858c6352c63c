"""The texts AI-Implement posts on tickets, word for word as the reference gives them."""
from __future__ import annotations

from datetime import datetime

from ..types import LogLabel, Phase

#: ``/api/status`` event types and their progress comments. ``{…}`` fields come from the event.
PROGRESS_EVENTS: dict[str, str] = {
    "session_created": "🚀 Session machine created. Cloning repo and running setup…",
    "environment_ready": "✅ Environment ready. Claude is implementing…",
    "pr_opened": "📝 Claude finished. PR #{prNumber} opened: {prUrl}",
    "verification_started": "🧪 Running verification script…",
    "verification_passed": "✅ Verification passed",
    "verification_failed": "❌ Verification failed: {detail}",
    "session_cleaned_up": "🧹 Session machine cleaned up. Duration: {duration}",
    "session_failed": "⚠️ Session failed: {reason}. Machine will be cleaned up.",
    "session_timed_out": "⚠️ Session timed out: {reason}. Machine will be cleaned up.",
}

#: Fields each event needs, and what to put when a runner leaves one out.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "pr_opened": {"prNumber": "?", "prUrl": ""},
    "verification_failed": {"detail": "see the logs"},
    "session_cleaned_up": {"duration": "unknown"},
    "session_failed": {"reason": "unknown error"},
    "session_timed_out": {"reason": "time budget exceeded"},
}

FAILURE_PREFIX = {
    Phase.PLANNING: "⚠️ Planning failed: {reason}",
    Phase.IMPLEMENTATION: "⚠️ Implementation failed: {reason}",
    Phase.GAP_ANALYSIS: "⚠️ Gap analysis failed: {reason}",
}


def stamp(text: str, at: datetime, log_url: str | None = None) -> str:
    """A progress comment with its timestamp and, when known, the link to the machine logs."""
    footer = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if log_url:
        footer += f" · [Machine logs]({log_url})"
    return f"{text}\n\n_{footer}_"


def progress(event: str, fields: dict[str, object], at: datetime, log_url: str | None = None) -> str:
    values = dict(EVENT_FIELDS.get(event, {}))
    values.update({k: str(v) for k, v in fields.items() if v not in (None, "")})
    if "reason" in values:
        # the template puts the full stop after the reason: a reason that ends a sentence (the
        # session's "… (commit abc1234).") must not make it two
        values["reason"] = values["reason"].rstrip().rstrip(".").rstrip() or "unknown error"
    return stamp(PROGRESS_EVENTS[event].format_map(values), at, log_url)


def failure(phase: Phase | str, reason: str) -> str:
    return FAILURE_PREFIX[Phase(phase)].format(reason=reason)


def pr_link(pr_number: int | None, pr_url: str) -> str:
    label = f"PR #{pr_number}" if pr_number else "Pull request"
    return f"🔗 {label} is ready for review: {pr_url}"


def log_excerpt(label: LogLabel | str, excerpt: str) -> str:
    fence = "````" if "```" in excerpt else "```"
    return f"Log excerpt (`{LogLabel(label).value}`):\n\n{fence}\n{excerpt.rstrip()}\n{fence}"


def plan_ready(plan: str, approve_hint: str) -> str:
    return f"📋 Plan ready for review.\n\n{plan.strip()}\n\n{approve_hint}"


def merged(pr_number: int | None, sha: str | None) -> str:
    short = f" ({sha[:7]})" if sha else ""
    return f"🎉 PR #{pr_number} merged{short}. Closing this issue out."


def timed_out_reason(reason: str) -> str:
    return {
        "run_not_found": "no run was linked to the dispatch within the time limit (run_not_found)",
        "machine_timeout": "the session machine exceeded its lifetime (machine_timeout)",
        "container_timeout": "the local Docker session exceeded its lifetime (container_timeout)",
        "timed_out": "the GitHub Actions run reported a timeout (timed_out)",
    }.get(reason, reason)
