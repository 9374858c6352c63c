"""The prompts the session gives the agent, built from ``/runner/planning-context``."""

from __future__ import annotations

import json
import re
from typing import Any

REVIEW_MARKER = "You are the post-push reviewer"


def _issue_block(ctx: dict[str, Any]) -> str:
    issue = ctx.get("issue") or {}
    lines = [f"# {issue.get('key', '')}: {issue.get('title', '')}".rstrip(": ")]
    if issue.get("url"):
        lines.append(f"Issue: {issue['url']}")
    lines += ["", "## Description", "", (issue.get("description") or "(no description)").strip()]
    comments = [
        c for c in issue.get("comments") or [] if isinstance(c, dict) and (c.get("body") or "").strip()
    ]
    omitted = issue.get("commentsOmitted")
    if comments:
        lines += ["", "## Comments", ""]
        if isinstance(omitted, int) and omitted > 0:
            lines += [f"({omitted} older comments are left out; the newest follow.)", ""]
        for c in comments:
            who = c.get("author") or "someone"
            lines += [f"### {who}", "", c["body"].strip(), ""]
    return "\n".join(lines).rstrip()


def implementation(ctx: dict[str, Any], *, branch: str) -> str:
    parts = [
        "You are implementing a tracker issue in this repository (the current directory).",
        "Make the code changes the issue asks for, with tests where the project has them.",
        "Edit files only; do not commit, push or open pull requests: that is done for you after you finish.",
        f"Your changes will be pushed to the branch `{branch}` and opened as a pull request.",
        "",
        _issue_block(ctx),
    ]
    if ctx.get("plan"):
        parts += [
            "",
            "## Approved plan",
            "",
            "Follow this plan, which a person approved:",
            "",
            str(ctx["plan"]).strip(),
        ]
    return "\n".join(parts) + "\n"


def planning(ctx: dict[str, Any]) -> str:
    lines = [
        "You are planning the implementation of a tracker issue in this repository",
        "(the current directory). Read the code, then write a concise implementation plan: the files",
        "to change, the approach, the tests to add and the risks. Do not modify any file. Your final",
        "answer is the plan itself, in Markdown; it is posted on the issue for a person to approve.",
        "",
        _issue_block(ctx),
    ]
    return "\n".join(lines) + "\n"


def gap_analysis(ctx: dict[str, Any], *, pr_number: int | None) -> str:
    pr = f"pull request #{pr_number}" if pr_number else "the open pull request"
    lines = [
        f"This repository is checked out at the branch of {pr}, which implements the tracker",
        "issue below. Compare what the branch does with what the issue asks for and implement",
        "whatever is missing. Edit files only; do not commit or push: that is done for you.",
        "If nothing is missing, change nothing and say so.",
        "",
        _issue_block(ctx),
    ]
    return "\n".join(lines) + "\n"


def review(ctx: dict[str, Any], diff: str, verification: str | None) -> str:
    parts = [
        f"{REVIEW_MARKER} of a pull request that implements the tracker issue below.",
        "Review the diff for correctness, missing pieces of the issue, broken tests, security problems and",
        "leaked secrets. Do not modify any file.",
        "Answer with one JSON object on the last line, exactly of this shape:",
        '{"approved": true, "blockers": []}',
        'or {"approved": false, "blockers": ["<one line per problem that must be fixed before merging>"]}.',
        "",
        _issue_block(ctx),
        "",
        "## Diff",
        "",
        "```diff",
        diff.rstrip(),
        "```",
    ]
    if verification is not None:
        parts += ["", "## Verification script output", "", "```", verification.rstrip(), "```"]
    return "\n".join(parts) + "\n"


#: how much of the text after a "{" is decoded at first (a verdict is short); doubled while the
#: decoder stops at the end of what it was given, where the rest of the text may decide
REVIEW_WINDOW = 1024
#: how far past the place its error names the JSON decoder may have read: a literal it did not
#: match (``-Infinity``), a pair of ``\u`` escapes, an exponent without digits: a dozen characters
_DECODER_LOOKAHEAD = 64


def _decode_at(decoder: json.JSONDecoder, text: str, start: int) -> Any:
    """The JSON value that starts at ``text[start]``, as ``decoder.raw_decode(text, start)`` gives
    it, or its ``ValueError``.

    A ``JSONDecodeError`` counts the lines of its whole document up to its position: decoded in
    place, every failed try from a "{" of a long answer would cost the length of the text before
    it (``"{" * 400_000`` took half a minute). A window of the text after the "{" is decoded
    instead, ended by a NUL, which is no part of any JSON value (the strict decoder's strings
    refuse control characters): a value decoded from it is the one the whole text gives, and an
    error well before its end is one the rest of the text cannot change. Only an error at its end
    needs more.
    """
    size = REVIEW_WINDOW
    while start + size < len(text):
        try:
            return decoder.raw_decode(text[start : start + size] + "\0")[0]
        except json.JSONDecodeError as error:
            if error.pos < size - _DECODER_LOOKAHEAD:
                raise
        size *= 2
    return decoder.raw_decode(text[start:])[0]


def parse_review(text: str) -> tuple[bool, list[str]] | None:
    """``(approved, blockers)`` from the reviewer's answer, or ``None`` when it gave no verdict."""
    # the last JSON object that decodes, read from each "{" backwards: a blocker that quotes code
    # (``returns {}``, ``${VAR}``) holds braces of its own, which a pattern cannot balance
    # (only a "{" that a key follows: any other one is no object, or an empty one, never a verdict)
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r'\{(?=[ \t\n\r]*")', text)]
    for start in reversed(starts):
        try:
            value = _decode_at(decoder, text, start)
        except (ValueError, RecursionError):  # (nested deeper than Python's stack: no verdict)
            continue
        if isinstance(value, dict) and isinstance(value.get("approved"), bool):
            blockers = value.get("blockers") or []
            if not isinstance(blockers, list):
                blockers = [blockers]
            clean = [str(b).strip() for b in blockers if str(b).strip()]
            return (value["approved"] and not clean), clean
    stripped = text.strip().splitlines()
    if stripped and stripped[-1].strip().upper() in ("APPROVE", "APPROVED"):
        return True, []
    return None
