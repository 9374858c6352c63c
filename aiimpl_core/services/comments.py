"""The texts AI-Implement posts on tickets, word for word as the reference gives them."""
from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator
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


# -- a runner's text, shown as written ---------------------------------------------------------
# A reason, a detail or a duration comes from the run (a tool's error output, whatever the agent
# left behind) and goes into a comment the trackers render as Markdown: ``__init__.py`` would show
# as a bold "init", ``[docs](https://…)`` as a link under our name, ``![](https://…)`` as an image
# fetched by whoever opens the issue. Backslash escapes (CommonMark: any ASCII punctuation) make
# it render as the text the run gave; the Jira plugin's ADF conversion reads them as well. Code
# spans within a line (``on branch `ai/ENG-1` ``) are kept: nothing inside one is formatted, and
# the session program writes them. What cannot start anything is left alone, so the text stays
# readable raw: an underscore inside a word (``run_not_found``), ``]``, ``:``, ``(``, ``->``.

#: what opens or closes an inline construct wherever it stands: emphasis, strike-through, a link or
#: an image (their ``[``), an autolink or HTML (``<``), an escape, a table cell, an entity's ``&``
_INLINE = re.compile(r"[\\*\[<~|]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])|&(?=#?[0-9A-Za-z]+;)")
#: what starts a block at the beginning of a line: a heading, a quote, a list item, a rule, a setext
#: underline, a table's delimiter row (``:--``; a fence's backticks and tildes and a table's pipes
#: are escaped anyway), and the indentation before it, which is dropped: four spaces after a blank
#: line would make the rest of the line code, shown with its escapes (a paragraph's lines show
#: without their indentation anyway)
_LINE_START = re.compile(r"^[ \t]*(?:([#>+=:\-])|(\d{1,9})([.)]))?", re.MULTILINE)
_TICKS = re.compile(r"`+")
#: a bare http(s) address the trackers link by themselves, with nothing that could end it early
_BARE_URL = re.compile(r"https?://[^\s<>\[\]()`*\\|]+")


def _code_spans(text: str) -> Iterator[tuple[int, int]]:
    """Where the code spans within a line of ``text`` start and end, in order. A run of backticks
    opens one that the next run of as many backticks on its line closes; a run that nothing closes
    is text. (Each line's runs are indexed by length once: a line of many unmatched runs costs
    no more than a few passes over it.)"""
    offset = 0
    for line in text.split("\n"):
        runs = [(m.start() + offset, m.end() + offset) for m in _TICKS.finditer(line)]
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, (start, end) in enumerate(runs):
            by_length[end - start].append(index)
        index = 0
        while index < len(runs):
            start, end = runs[index]
            same = by_length[end - start]
            after = bisect_right(same, index)
            if after < len(same):
                yield start, runs[same[after]][1]
                index = same[after] + 1
            else:
                index += 1
        offset += len(line) + 1


def _escape_inline(text: str) -> str:
    return _INLINE.sub(lambda m: "\\" + m.group(0), text).replace("`", "\\`")


def as_text(value: object) -> str:
    """``value`` as Markdown that renders as its text, code spans within a line kept (see above)."""
    # a carriage return ends a line for Markdown as a line feed does: one kind of line end is escaped
    text, out, done = str(value).replace("\r\n", "\n").replace("\r", "\n"), [], 0
    for start, end in _code_spans(text):
        out += [_escape_inline(text[done:start]), text[start:end]]
        done = end
    out.append(_escape_inline(text[done:]))

    def line_start(match: re.Match[str]) -> str:
        marker, number, delimiter = match.groups()
        return f"\\{marker}" if marker else f"{number}\\{delimiter}" if number else ""

    return _LINE_START.sub(line_start, "".join(out))


def as_url(value: object) -> str:
    """An http(s) address as it is (the trackers link it), anything else as text."""
    text = str(value)
    return text if _BARE_URL.fullmatch(text) else as_text(text)


def _link_target(url: str) -> str:
    """``url`` as a link's target: a parenthesis or a space would end the target early."""
    return url.replace("(", "%28").replace(")", "%29").replace(" ", "%20")


def stamp(text: str, at: datetime, log_url: str | None = None) -> str:
    """A progress comment with its timestamp and, when known, the link to the machine logs."""
    footer = at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if log_url:
        footer += f" · [Machine logs]({_link_target(log_url)})"
    return f"{text}\n\n_{footer}_"


def progress(event: str, fields: dict[str, object], at: datetime, log_url: str | None = None) -> str:
    values = dict(EVENT_FIELDS.get(event, {}))
    # (a field of white space alone is no value either: "❌ Verification failed: " was posted)
    values.update({k: str(v) for k, v in fields.items() if v is not None and str(v).strip()})
    if "reason" in values:
        # the template puts the full stop after the reason: a reason that ends a sentence (the
        # session's "… (commit abc1234).") must not make it two
        values["reason"] = values["reason"].rstrip().rstrip(".").rstrip() or "unknown error"
    shown = {k: as_url(v) if k == "prUrl" else as_text(v) for k, v in values.items()}
    if event == "verification_failed" and any(end in values["detail"].strip() for end in "\r\n"):
        shown["detail"] = _with_output(values["detail"])
    text = PROGRESS_EVENTS[event].format_map(shown)
    if event == "pr_opened" and not values["prUrl"].strip():
        text = text.removesuffix(": ")  # no address known: not a sentence ending in a colon
    return stamp(text, at, log_url)


def _with_output(detail: str) -> str:
    """A verification's detail, its first line (``exit 1``) as text and the rest, the script's
    output, as a code block the trackers show as it is (one the session fenced already is taken
    out of its fence first: escaping its backticks made the fence show as text, the output run
    together)."""
    lines = detail.replace("\r\n", "\n").replace("\r", "\n")
    first, _, output = lines.strip("\n").partition("\n")
    output = _unfenced(output.strip("\n"))
    return f"{as_text(first)}\n\n{_code_block(output)}"


def _unfenced(output: str) -> str:
    """``output`` taken out of the fence the session sends it in (a line that opens with three or
    more backticks, the output, then the same run of backticks with only blanks after it), or as
    it is when it is not so fenced. Read in one pass: a pattern with a back-reference to the fence
    took seconds on a few KB of backticks (a runner's detail), the request and the database's
    write lock held all the while."""
    opening, newline, rest = output.partition("\n")
    fence = opening[: len(opening) - len(opening.lstrip("`"))]
    rest = rest.rstrip()
    if len(fence) < 3 or not newline or not rest.endswith(fence):
        return output
    return rest[: -len(fence)].removesuffix("\n")


def _code_block(text: str) -> str:
    """``text`` in a fence longer than any run of backticks in it: nothing in it can close the block."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text.rstrip()}\n{fence}"


def failure(phase: Phase | str, reason: str) -> str:
    return FAILURE_PREFIX[Phase(phase)].format(reason=as_text(reason))


def pr_link(pr_number: int | None, pr_url: str, *, ready: bool = True) -> str:
    """The reference's pull-request link of a run that opened one: ready for review when the run
    succeeded, else (blockers, a failure or timeout after the PR was opened) said not to be, above
    the failure notice that says why."""
    label = f"PR #{pr_number}" if pr_number else "Pull request"
    if not ready:
        return f"🔗 {label} (not ready for review): {as_url(pr_url)}"
    return f"🔗 {label} is ready for review: {as_url(pr_url)}"


def log_excerpt(label: LogLabel | str, excerpt: str) -> str:
    return f"Log excerpt (`{LogLabel(label).value}`):\n\n{_code_block(excerpt)}"


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
