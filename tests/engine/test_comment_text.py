"""A run's own text (a failure's reason, a verification's detail, a log excerpt) reads on the
ticket as the run wrote it: the trackers render comments as Markdown, and nothing in that text may
format, link, embed an image or escape its code block. Code spans within a line stay code spans
(the session program writes them; nothing inside one is formatted).

Checked with a CommonMark renderer (markdown-it-py, the reference implementation's rules): what
the comment renders to, as text, is the run's text (backticks aside: a code span shows without
them).
"""
from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from aiimpl_core.services import comments
from aiimpl_core.types import LogLabel, Phase

MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])  # as GitHub-flavoured trackers do
AT = datetime(2026, 12, 3, 16, 0, tzinfo=UTC)


def rendered_text(markdown: str) -> tuple[str, str]:
    """The HTML of ``markdown``, and its text with the markup taken out and line breaks as spaces."""
    out = MD.render(markdown)
    text = html.unescape(re.sub(r"<[^>]+>", "", out))
    return out, " ".join(text.split())


def as_rendered(text: str) -> str:
    return " ".join(text.split())


def without_ticks(text: str) -> str:
    """The characters of ``text`` but backticks and white space (a code span drops its delimiters
    and one space of padding on each side)."""
    return "".join(text.replace("`", "").split())


#: rendered HTML that holds nothing but text, line breaks and code spans
PLAIN = re.compile(r"(?:<p>(?:[^<]|<code>|</code>|<br />)*</p>\n)+")
#: the same, then one code block (a verification's output, shown as the script printed it)
WITH_OUTPUT = re.compile(r"(?:<p>(?:[^<]|<code>|</code>|<br />)*</p>\n)+(?:<pre><code>[^<]*</code></pre>\n)?")


HOSTILE = [
    "__init__.py raised",
    "see [the docs](https://evil.example/phish) for more",
    "![pixel](https://evil.example/p.png?leak=1)",
    "<img src=x onerror=alert(1)> <script>alert(1)</script>",
    "**bold** *em* ~~gone~~ `code`",
    "# Heading\n- item\n+ item\n1. first\n2) second\n> quoted\n---\n===",
    "carriage\r# returns\r\n- end\r\r    lines too",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "header\n:--",
    "```\nfenced\n```",
    "~~~\nfenced\n~~~",
    "entities &amp; &#60; &lt;b&gt;",
    "back\\slash \\* escaped",
    "<https://autolink.example>",
    "trailing underscore_ and _leading",
    "snake_case_name stays readable",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_failure_reason_renders_as_its_text(text) -> None:
    out, shown = rendered_text(comments.failure(Phase.IMPLEMENTATION, text))
    assert without_ticks(shown) == without_ticks(f"⚠️ Implementation failed: {text}")
    # nothing of it became markup: paragraphs of text, no link, image, emphasis, heading, list
    assert PLAIN.fullmatch(out), out


@pytest.mark.parametrize("text", HOSTILE)
@pytest.mark.parametrize(("event", "field"), [
    ("session_failed", "reason"), ("session_timed_out", "reason"),
    ("verification_failed", "detail"), ("session_cleaned_up", "duration"),
])
def test_a_progress_field_renders_as_its_text(text, event, field) -> None:
    body = comments.progress(event, {field: text}, AT)
    out, shown = rendered_text(body.split("\n\n_")[0])  # the event's line, without its time stamp
    value = text.rstrip().rstrip(".").rstrip() if field == "reason" else text
    expected = comments.PROGRESS_EVENTS[event].format_map({field: value})
    assert without_ticks(shown) == without_ticks(expected)
    assert (WITH_OUTPUT if event == "verification_failed" else PLAIN).fullmatch(out), out


@pytest.mark.parametrize("output", [
    "2 tests failed: `x` *y* [a](b)\n  FAIL test_x.py::test_a - assert 1 == 2\n# not a heading",
    "a fence of its own:\n```\ninside\n```",
], ids=["markup", "fence"])
def test_a_verifications_output_shows_as_a_code_block_of_its_lines(output) -> None:
    """The session sends its script's output fenced, after the exit status: the status is text,
    the output one code block of its lines as printed (escaped, the fence showed as text and the
    lines ran together on one)."""
    body = comments.progress("verification_failed", {"detail": f"exit 1\n```\n{output}\n```"}, AT)
    out = MD.render(body.split("\n\n_")[0])
    block = html.escape(output, quote=False)
    assert out == f"<p>❌ Verification failed: exit 1</p>\n<pre><code>{block}\n</code></pre>\n"


def test_the_plain_check_sees_markup() -> None:
    # the counter-check: what the tests above call plain has no link, image, emphasis or block
    assert PLAIN.fullmatch(MD.render("text `code` and more\nnext line"))
    for markdown in ("*em*", "[a](https://x.example)", "![](https://x.example/p.png)", "# h", "- item",
                     "<b>x</b>", "```\ncode\n```", "a\n\n    indented"):
        assert not PLAIN.fullmatch(MD.render(markdown)), markdown


def test_readable_text_is_left_as_it_is() -> None:
    # what cannot start anything is not escaped: the comments of the reference's table read as there
    for reason in ("LLM invocation failed with exit code 1 … Reached max turns (50)",
                   "git clone failed (exit 128): fatal: repository not found",
                   "no run was linked to the dispatch within the time limit (run_not_found)",
                   "Nothing to commit: Claude left no file changes in the working tree",
                   "pushed what it had on branch `ai/ENG-1` (commit 67fd990)",
                   "HEAD -> ai/ENG-1 (pre-receive hook declined)"):
        assert comments.failure(Phase.IMPLEMENTATION, reason) == f"⚠️ Implementation failed: {reason}"


def test_code_spans_within_a_line_stay_code() -> None:
    reason = "on branch `ai/ENG-1` and ``a`b``, not `x\ny`"
    out, _ = rendered_text(comments.failure(Phase.IMPLEMENTATION, reason))
    assert re.findall(r"<code>(.*?)</code>", out) == ["ai/ENG-1", "a`b"], out


def test_a_pr_address_stays_a_link_and_anything_else_is_text() -> None:
    url = "https://github.com/acme/my_repo/pull/42"
    body = comments.progress("pr_opened", {"prNumber": 42, "prUrl": url}, AT)
    assert body.startswith(f"📝 Claude finished. PR #42 opened: {url}\n")
    out, shown = rendered_text(comments.progress("pr_opened", {"prNumber": "*7*", "prUrl": "[x](https://e.example)"},
                                                 AT).split("\n\n_")[0])
    assert shown == "📝 Claude finished. PR #*7* opened: [x](https://e.example)"
    assert "<a" not in out and "<em>" not in out
    assert comments.pr_link(42, url) == f"🔗 PR #42 is ready for review: {url}"
    assert comments.pr_link(42, url, ready=False) == f"🔗 PR #42 (not ready for review): {url}"
    assert comments.pr_link(None, url, ready=False) == f"🔗 Pull request (not ready for review): {url}"
    out, _ = rendered_text(comments.pr_link(42, "[x](https://e.example)"))
    assert "<a" not in out


def test_the_machine_logs_link_keeps_its_whole_address() -> None:
    url = "https://logs.example/run(1)/a b"
    out, _ = rendered_text(comments.stamp("✅ Verification passed", AT, url))
    assert '<a href="https://logs.example/run%281%29/a%20b">Machine logs</a>' in out


@pytest.mark.parametrize("excerpt", [
    "plain", "```\ninner fence\n```", "````\nfour\n````", "a ``````` seven", "`x`", "ends with `",
])
def test_a_log_excerpt_stays_inside_its_code_block(excerpt) -> None:
    out = MD.render(comments.log_excerpt(LogLabel.SESSION_FAILED, excerpt))
    blocks = re.findall(r"<pre><code>(.*?)</code></pre>", out, re.DOTALL)
    assert [html.unescape(b) for b in blocks] == [excerpt.rstrip() + "\n"], out


#: Markdown's punctuation, and pieces of its constructs, among a few letters and any character
MARKDOWN_BITS = st.sampled_from([*"\\`*_[]()<>!#~|&;-+=.:0123456789 \n\r\taZ", "http://x.y", "&amp;", "    ",
                                 "\n\n", "```", "~~~", "<div>", "[a]: /u"])


@settings(max_examples=500, deadline=None)
@given(st.lists(MARKDOWN_BITS | st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40)
       .map("".join))
def test_any_reason_renders_as_its_text(text) -> None:
    out, shown = rendered_text(comments.failure(Phase.PLANNING, text))
    assert without_ticks(shown) == without_ticks(f"⚠️ Planning failed: {text}")
    assert PLAIN.fullmatch(out), out
    # a code span's text is the run's, from one line
    lines = text.splitlines()
    for code in re.findall(r"<code>(.*?)</code>", out, re.DOTALL):
        assert any(html.unescape(code).strip() in line for line in lines), code


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("`ab\n ")), max_size=40))
def test_any_log_excerpt_stays_inside_its_code_block(excerpt) -> None:
    out = MD.render(comments.log_excerpt(LogLabel.SESSION_FAILED, excerpt))
    blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", out, re.DOTALL)
    assert len(blocks) == 1 and html.unescape(blocks[0]).rstrip("\n") == excerpt.rstrip().rstrip("\n"), out


def test_a_long_run_of_backticks_in_a_verifications_output_is_read_at_once() -> None:
    """A runner's detail of a few KB that opens a fence and never closes it as such took seconds
    (7-10 s for 9 KB: a pattern with a back-reference to the fence, backtracking), the request and
    the database's write lock held all the while."""
    n = 3000
    detail = "exit 1\n" + "`" * n + "\n" + "`" * n + " " * n + "x"
    started = time.monotonic()
    body = comments.progress("verification_failed", {"detail": detail}, AT)
    assert time.monotonic() - started < 2
    assert body.startswith("❌ Verification failed: exit 1\n\n" + "`" * (n + 1) + "\n" + "`" * n)


@pytest.mark.parametrize(("output", "inside"), [
    ("```\nabc\n```", "abc"),
    ("```text\nabc\n\n```  \n", "abc\n"),  # an info string; the closing fence's blanks after it
    ("````\nx `y` ```\n````", "x `y` ```"),
    ("```\n```", ""),
    ("`````\nabc\n```", "`````\nabc\n```"),  # not closed by its own fence: shown as it is
    ("``\nabc\n``", "``\nabc\n``"),  # two backticks are no fence
    ("no fence\n```", "no fence\n```"),
])
def test_a_verifications_fenced_output_is_taken_out_of_its_fence(output, inside) -> None:
    body = comments.progress("verification_failed", {"detail": f"exit 1\n{output}"}, AT)
    out = MD.render(body.split("\n\n_")[0])
    block = html.escape(inside.rstrip(), quote=False)
    assert out == f"<p>❌ Verification failed: exit 1</p>\n<pre><code>{block}\n</code></pre>\n"
