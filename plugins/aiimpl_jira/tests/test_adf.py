"""Markdown → ADF rendering of our comments, and ADF → Markdown of descriptions."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime

import pytest
from aiimpl_core.services import comments
from aiimpl_core.types import LogLabel, Phase

from aiimpl_jira.adf import adf_text, adf_to_markdown, markdown_to_adf
from aiimpl_jira.testing.fake_jira import adf_violations


def _para(*nodes: dict) -> dict:
    return {"type": "paragraph", "content": list(nodes)}


def _t(text: str, *marks: dict) -> dict:
    node: dict = {"type": "text", "text": text}
    if marks:
        node["marks"] = list(marks)
    return node


def test_paragraphs_and_inline_marks() -> None:
    doc = markdown_to_adf("Hello **bold** and *em* and _also em_ and ~~gone~~ and `x = 1`.\n\nSecond")
    assert doc == {
        "type": "doc",
        "version": 1,
        "content": [
            _para(
                _t("Hello "),
                _t("bold", {"type": "strong"}),
                _t(" and "),
                _t("em", {"type": "em"}),
                _t(" and "),
                _t("also em", {"type": "em"}),
                _t(" and "),
                _t("gone", {"type": "strike"}),
                _t(" and "),
                _t("x = 1", {"type": "code"}),
                _t("."),
            ),
            _para(_t("Second")),
        ],
    }


def test_links_bare_urls_and_code_inside_links() -> None:
    doc = markdown_to_adf("See [the **PR**](https://x.test/pr/1), <https://x.test/a> or https://x.test/b.")
    link1 = {"type": "link", "attrs": {"href": "https://x.test/pr/1"}}
    assert doc["content"] == [
        _para(
            _t("See "),
            _t("the ", link1),
            _t("PR", link1, {"type": "strong"}),
            _t(", "),
            _t("https://x.test/a", {"type": "link", "attrs": {"href": "https://x.test/a"}}),
            _t(" or "),
            _t("https://x.test/b", {"type": "link", "attrs": {"href": "https://x.test/b"}}),
            _t("."),
        )
    ]


@pytest.mark.parametrize("url", ["javascript:alert(document.domain)", "JavaScript:x", "data:text/html,x",
                                 "vbscript:x", "/relative/path", "ftp://x.test/f"])
def test_a_link_to_anything_but_a_web_or_mail_address_stays_text(url) -> None:
    """Comment text may come from a runner whose agent read the issue: a ``javascript:`` link must
    not become a link mark on the ticket."""
    text = f"Implementation failed: [logs]({url}) and [mail](mailto:ops@x.test)"
    doc = markdown_to_adf(text)
    assert doc["content"] == [_para(
        _t(f"Implementation failed: [logs]({url}) and "),
        _t("mail", {"type": "link", "attrs": {"href": "mailto:ops@x.test"}}),
    )]
    assert adf_violations(doc) == []


def test_code_mark_drops_other_marks() -> None:
    doc = markdown_to_adf("**bold `code` bold**")
    assert doc["content"][0]["content"][1] == _t("code", {"type": "code"})
    assert adf_violations(doc) == []


def test_snake_case_words_are_not_emphasis() -> None:
    doc = markdown_to_adf("run_not_found and post_push_review_not_approved")
    assert doc["content"] == [_para(_t("run_not_found and post_push_review_not_approved"))]


EM = {"type": "em"}
STRONG = {"type": "strong"}
STRIKE = {"type": "strike"}

# Link targets with a "_" (or another delimiter) where emphasis could close on it.
LOG_URLS = [
    "https://logs.example.com/runs/run_42/output_.log",
    "https://logs.example.com/runs/42?q=a_&b=1",
    "https://logs.example.com/runs/x_/y",
    "https://logs.example.com/runs/a_b_",
    "https://logs.example.com/runs/__x__",
    "https://logs.example.com/runs/a*b*/c~~d~~",
]


def _link(url: str) -> dict:
    return {"type": "link", "attrs": {"href": url}}


@pytest.mark.parametrize("url", LOG_URLS)
def test_machine_logs_link_in_the_italic_footer_keeps_its_whole_target(url: str) -> None:
    """CommonMark: a link's text and target bind tighter than emphasis, so the footer's ``_…_``
    does not close on a "_" inside the target (which left ``[Machine logs](`` as text, a link to
    the target's first half, and the rest as text)."""
    doc = markdown_to_adf(comments.stamp("🚀 Session machine created.", _AT, url))
    assert adf_violations(doc) == []
    footer = _para(_t("2026-01-02 03:04:05 UTC · ", EM), _t("Machine logs", EM, _link(url)))
    assert doc["content"][-1] == footer
    once = markdown_to_adf(adf_to_markdown(doc))
    assert _styled_chars(once) == _styled_chars(doc) and _hrefs(once) == {url}


@pytest.mark.parametrize(
    ("markdown", "mark"),
    [
        ("_see [logs]({url}) now_", EM),
        ("*see [logs]({url}) now*", EM),
        ("**see [logs]({url}) now**", STRONG),
        ("__see [logs]({url}) now__", STRONG),
        ("~~see [logs]({url}) now~~", STRIKE),
    ],
)
@pytest.mark.parametrize("url", LOG_URLS)
def test_emphasis_around_a_link_never_closes_in_its_target(markdown: str, mark: dict, url: str) -> None:
    doc = markdown_to_adf(markdown.format(url=url))
    assert adf_violations(doc) == []
    assert doc["content"] == [_para(_t("see ", mark), _t("logs", mark, _link(url)), _t(" now", mark))]


@pytest.mark.parametrize("url", LOG_URLS)
def test_a_bare_url_inside_emphasis_is_not_split_by_it(url: str) -> None:
    """A bare URL the converter links is whole, however many delimiters it holds."""
    for markdown in (f"_logs at {url} now_", f"*logs at {url} now*", f"**logs at {url} now**"):
        mark = STRONG if markdown.startswith("**") else EM
        doc = markdown_to_adf(markdown)
        assert adf_violations(doc) == []
        expected = _para(_t("logs at ", mark), _t(url, mark, _link(url)), _t(" now", mark))
        assert doc["content"] == [expected], markdown
    assert markdown_to_adf(f"logs at {url}")["content"] == [_para(_t("logs at "), _t(url, _link(url)))]


@pytest.mark.parametrize(
    ("markdown", "url"),
    [
        (
            "_logs at https://logs.example.com/runs/run_42/output_.log_",
            "https://logs.example.com/runs/run_42/output_.log",
        ),
        ("_logs at https://logs.example.com/a_b_", "https://logs.example.com/a_b"),
        ("*logs at https://logs.example.com/a*", "https://logs.example.com/a"),
        ("**logs at https://logs.example.com/a**", "https://logs.example.com/a"),
        ("_logs at https://logs.example.com/a._", "https://logs.example.com/a"),
    ],
)
def test_emphasis_ending_with_a_bare_url_closes_on_its_last_delimiter(markdown: str, url: str) -> None:
    """As in GitHub's Markdown, a URL's trailing delimiter may close the emphasis it ends (when
    nothing else does), and its trailing full stop is text."""
    doc = markdown_to_adf(markdown)
    assert adf_violations(doc) == []
    mark = STRONG if markdown.startswith("**") else EM
    assert adf_text(doc) == markdown.strip("*_")
    assert doc["content"][0]["content"][1] == _t(url, mark, _link(url))
    assert all(mark in node.get("marks", ()) for node in doc["content"][0]["content"])


def test_emphasis_never_closes_in_a_code_span_or_on_an_escaped_delimiter() -> None:
    """Code spans and backslash escapes bind tighter than emphasis too (CommonMark)."""
    doc = markdown_to_adf("*run `a*b` now* and _keep \\_ this_")
    assert doc["content"] == [
        _para(_t("run ", EM), _t("a*b", {"type": "code"}), _t(" now", EM), _t(" and "), _t("keep _ this", EM))
    ]


CODE = {"type": "code"}


@pytest.mark.parametrize(
    ("markdown", "content"),
    [
        ("``a`b``", [_t("a`b", CODE)]),
        # CommonMark: only a run of exactly the opening's length closes (a longer one or a shorter
        # one is code), and a run that none closes is text, all of its backticks
        ("`a``b` and ``c```d``", [_t("a``b", CODE), _t(" and "), _t("c```d", CODE)]),
        ("```a``", [_t("```a``")]),
        ("a ``b` c", [_t("a ``b` c")]),
        ("an ``unclosed run then `x`", [_t("an ``unclosed run then "), _t("x", CODE)]),
        ("` `` `", [_t("``", CODE)]),
        # a code span does not cross a line break
        ("`a\nb`", [_t("`a"), {"type": "hardBreak"}, _t("b`")]),
        # an escaped backtick is text, and the rest of its run opens; a backslash in code is code
        ("\\``a` b", [_t("`"), _t("a", CODE), _t(" b")]),
        ("`a\\`b`", [_t("a\\", CODE), _t("b`")]),
        # beside and inside links and emphasis
        (
            "*see `a*b`* and [`c`](https://x.test/c) `[d](https://x.test/d)`",
            [
                _t("see ", EM),
                _t("a*b", CODE),
                _t(" and "),
                _t("c", {"type": "link", "attrs": {"href": "https://x.test/c"}}, CODE),
                _t(" "),
                _t("[d](https://x.test/d)", CODE),
            ],
        ),
        ("**a ``b`` c** `https://x.test/e`", [_t("a ", STRONG), _t("b", CODE), _t(" c", STRONG), _t(" "),
                                              _t("https://x.test/e", CODE)]),
    ],
)
def test_a_code_span_closes_at_the_next_run_of_its_own_length(markdown: str, content: list) -> None:
    doc = markdown_to_adf(markdown)
    assert doc["content"] == [_para(*content)]
    assert adf_violations(doc) == []


def test_code_block_with_language_and_longer_fence() -> None:
    doc = markdown_to_adf("````text\nline ``` inside\n````")
    assert doc["content"] == [
        {
            "type": "codeBlock",
            "attrs": {"language": "text"},
            "content": [{"type": "text", "text": "line ``` inside"}],
        }
    ]


def test_nested_lists_and_ordered_start() -> None:
    doc = markdown_to_adf("3. three\n   - sub a\n   - sub b\n4. four")
    assert doc["content"] == [
        {
            "type": "orderedList",
            "attrs": {"order": 3},
            "content": [
                {
                    "type": "listItem",
                    "content": [
                        _para(_t("three")),
                        {
                            "type": "bulletList",
                            "content": [
                                {"type": "listItem", "content": [_para(_t("sub a"))]},
                                {"type": "listItem", "content": [_para(_t("sub b"))]},
                            ],
                        },
                    ],
                },
                {"type": "listItem", "content": [_para(_t("four"))]},
            ],
        }
    ]


def test_headings_quotes_rules_and_line_breaks() -> None:
    doc = markdown_to_adf("## Title\n\n> quoted\n\n---\n\nline one\nline two")
    assert doc["content"] == [
        {"type": "heading", "attrs": {"level": 2}, "content": [_t("Title")]},
        {"type": "blockquote", "content": [_para(_t("quoted"))]},
        {"type": "rule"},
        _para(_t("line one"), {"type": "hardBreak"}, _t("line two")),
    ]


@pytest.mark.parametrize(
    ("markdown", "text"),
    [
        ("## Port the parser to C#", "Port the parser to C#"),
        ("# foo#", "foo#"),
        ("## C# ##", "C#"),
        ("### foo ### b", "foo ### b"),
        ("## foo ##   ", "foo"),
        ("### foo \\###", "foo ###"),
        ("## ##", ""),
        ("##", ""),
        ("#", ""),
    ],
)
def test_a_closing_run_of_hashes_counts_only_after_a_space(markdown: str, text: str) -> None:
    """CommonMark: a heading's closing ``#`` run follows a space or tab, or is all its text."""
    [heading] = markdown_to_adf(markdown)["content"]
    assert heading["type"] == "heading"
    assert adf_text(heading) == text


@pytest.mark.parametrize(
    "line", ["# a" + " " * 50_000 + "x", "## x" + " #" * 25_000 + " y", "#" + " " * 50_000]
)
def test_a_long_heading_line_converts_in_linear_time(line: str) -> None:
    import time

    started = time.process_time()
    [heading] = markdown_to_adf(line)["content"]
    assert time.process_time() - started < 3  # (milliseconds; a pattern that backtracks: minutes)
    assert heading["type"] == "heading"


def test_empty_markdown_is_an_empty_document() -> None:
    assert markdown_to_adf("") == {"type": "doc", "version": 1, "content": []}


_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

REFERENCE_COMMENTS = [
    *(
        comments.progress(
            event,
            {
                "prNumber": 42,
                "prUrl": "https://github.com/acme/api/pull/42",
                "detail": "3 tests failed",
                "duration": "12m",
                "reason": "exit 1",
            },
            _AT,
            "https://fly.test/logs/m1",
        )
        for event in comments.PROGRESS_EVENTS
    ),
    comments.failure(Phase.PLANNING, "LLM invocation failed with exit code 1 … Reached max turns (50)"),
    comments.failure(Phase.IMPLEMENTATION, "PR creation failed with HTTP 422: A pull request already exists"),
    comments.pr_link(42, "https://github.com/acme/api/pull/42"),
    comments.log_excerpt(
        LogLabel.SESSION_FAILED, "Traceback (most recent call last):\n  ```boom```\nError: *x*"
    ),
    comments.plan_ready("## Plan\n\n1. Add `export()`\n2. Test it\n   - unit\n   - api", "Move to `Ready`."),
    comments.merged(42, "abcdef1234567"),
    comments.progress("session_created", {}, _AT, "https://logs.example.com/runs/run_42/output_.log"),
]


def _hrefs(node: object) -> set[str]:
    if isinstance(node, dict):
        found = {m["attrs"]["href"] for m in node.get("marks") or () if m.get("type") == "link"}
        for child in node.get("content") or ():
            found |= _hrefs(child)
        return found
    return set()


@pytest.mark.parametrize("markdown", REFERENCE_COMMENTS)
def test_every_comment_we_post_is_valid_adf_and_keeps_its_text(markdown: str) -> None:
    doc = markdown_to_adf(markdown)
    assert adf_violations(doc) == []
    text = adf_text(doc)
    # every word survives, Markdown syntax aside ([label](url) keeps its label; the URL is the href)
    visible = re.sub(r"\[([^\]]*)\]\(([^)]*)\)", r"\1", markdown)
    for word in visible.split():
        bare = word.replace("`", "").strip("*_#>-")
        if bare and not re.fullmatch(r"\d+\.", bare):
            assert bare.rstrip(".") in text.replace("`", ""), word
    for url in re.findall(r"https?://[^\s)>]+", markdown):
        url = url.rstrip(".,")
        assert url in _hrefs(doc) or url in text, url


def _styled_chars(node: dict, blocks: tuple[str, ...] = ()) -> list[tuple]:
    """Each visible character with its enclosing block types and its marks (order-free)."""
    if node.get("type") == "text":
        marks = frozenset(json.dumps(m, sort_keys=True) for m in node.get("marks") or ())
        return [(blocks, ch, marks) for ch in node["text"] if not ch.isspace()]
    inner = blocks if node.get("type") in ("doc", "paragraph") else (*blocks, node["type"])
    return [c for child in node.get("content") or () for c in _styled_chars(child, inner)]


@pytest.mark.parametrize("markdown", REFERENCE_COMMENTS)
def test_markdown_round_trips(markdown: str) -> None:
    once = adf_to_markdown(markdown_to_adf(markdown))
    assert _styled_chars(markdown_to_adf(once)) == _styled_chars(markdown_to_adf(markdown))


def test_description_from_the_official_example_reads_as_markdown(aiimpl_specs_dir: str) -> None:
    with open(os.path.join(aiimpl_specs_dir, "jira", "swagger-v3.v3.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    example = spec["paths"]["/rest/api/3/issue/{issueIdOrKey}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["example"]
    issue = json.loads(example) if isinstance(example, str) else example
    description = issue["fields"]["description"]
    assert adf_violations(description) == []
    assert adf_to_markdown(description).strip() == adf_text(description).strip()
    assert adf_to_markdown(description).strip()


def test_adf_to_markdown_of_rich_nodes() -> None:
    doc = {
        "type": "doc",
        "version": 1,
        "content": [
            {
                "type": "paragraph",
                "content": [
                    {"type": "mention", "attrs": {"id": "abc", "text": "@Mia"}},
                    {"type": "text", "text": " see "},
                    {"type": "inlineCard", "attrs": {"url": "https://x.test/c"}},
                    {"type": "text", "text": " "},
                    {"type": "emoji", "attrs": {"shortName": ":smile:", "text": "😄"}},
                ],
            },
            {"type": "panel", "attrs": {"panelType": "info"}, "content": [_para(_t("inside a panel"))]},
            {
                "type": "table",
                "content": [
                    {
                        "type": "tableRow",
                        "content": [
                            {"type": "tableHeader", "content": [_para(_t("A"))]},
                            {"type": "tableHeader", "content": [_para(_t("B"))]},
                        ],
                    },
                    {
                        "type": "tableRow",
                        "content": [
                            {"type": "tableCell", "content": [_para(_t("1"))]},
                            {"type": "tableCell", "content": [_para(_t("2"))]},
                        ],
                    },
                ],
            },
        ],
    }
    assert (
        adf_to_markdown(doc)
        == "@Mia see https://x.test/c 😄\n\ninside a panel\n\n| A | B |\n|---|---|\n| 1 | 2 |"
    )


def test_adf_to_markdown_keeps_cards_task_states_and_dates() -> None:
    # a link pasted as a card or an embed is a block of its own, with no text but its address
    task = {"type": "taskItem", "attrs": {"localId": "a", "state": "DONE"}, "content": [_t("Export CSV")]}
    todo = {"type": "taskItem", "attrs": {"localId": "b", "state": "TODO"}, "content": [_t("Export PDF")]}
    doc = {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "blockCard", "attrs": {"url": "https://x.test/spec"}},
            {"type": "embedCard", "attrs": {"url": "https://x.test/design", "layout": "center"}},
            {"type": "taskList", "attrs": {"localId": "l"}, "content": [task, todo]},
            _para(_t("Due "), {"type": "date", "attrs": {"timestamp": "1767225600000"}}),
        ],
    }
    assert adf_to_markdown(doc) == (
        "https://x.test/spec\n\nhttps://x.test/design\n\n- [x] Export CSV\n- [ ] Export PDF\n\nDue 2026-01-01"
    )


def test_adf_to_markdown_keeps_a_decision_with_a_date_or_a_status() -> None:
    decision = {
        "type": "decisionItem",
        "attrs": {"localId": "d1", "state": "DECIDED"},
        "content": [
            _t("Ship by "),
            {"type": "date", "attrs": {"timestamp": "1767225600000"}},
            _t(", rollout "),
            {"type": "status", "attrs": {"text": "Approved", "color": "green", "localId": "s"}},
        ],
    }
    doc = {
        "type": "doc",
        "version": 1,
        "content": [{"type": "decisionList", "attrs": {"localId": "l"}, "content": [decision]}],
    }
    assert adf_to_markdown(doc) == "Ship by 2026-01-01, rollout [Approved]"


def test_adf_to_markdown_keeps_the_caption_of_an_image() -> None:
    image = {
        "type": "mediaSingle",
        "attrs": {"layout": "center"},
        "content": [
            {"type": "media", "attrs": {"id": "f1", "type": "file", "collection": "c"}},
            {"type": "caption", "content": [_t("The "), _t("new", {"type": "strong"}), _t(" login screen")]},
        ],
    }
    doc = {"type": "doc", "version": 1, "content": [_para(_t("Before:")), image, _para(_t("After."))]}
    assert adf_to_markdown(doc) == "Before:\n\nThe **new** login screen\n\nAfter."


def test_adf_to_markdown_of_missing_or_plain_descriptions() -> None:
    assert adf_to_markdown(None) == ""
    assert adf_to_markdown("plain text") == "plain text"


def test_a_list_item_starting_with_a_list_starts_with_an_empty_paragraph() -> None:
    """ADF's listItem starts with a paragraph (or a code block); lists may only follow it."""
    nested = {"type": "bulletList", "content": [{"type": "listItem", "content": [_para(_t("a"))]}]}
    item = {"type": "listItem", "content": [_para(), nested]}
    assert markdown_to_adf("- - a")["content"] == [{"type": "bulletList", "content": [item]}]
    assert markdown_to_adf("1. - a")["content"] == [
        {"type": "orderedList", "attrs": {"order": 1}, "content": [item]}
    ]
    for markdown in ("- - a", "1. - a"):
        assert adf_violations(markdown_to_adf(markdown)) == []
        assert adf_to_markdown(markdown_to_adf(markdown)) == markdown


def test_a_heading_rule_or_quote_inside_a_quote_keeps_its_text() -> None:
    doc = markdown_to_adf("> ## Risk `x`\n> Data loss\n>\n> ---\n>\n> > nested *quote*")
    assert doc["content"] == [
        {
            "type": "blockquote",
            "content": [
                _para(_t("Risk ", {"type": "strong"}), _t("x", {"type": "code"})),
                _para(_t("Data loss")),
                _para(_t("nested "), _t("quote", {"type": "em"})),
            ],
        }
    ]
    assert adf_violations(doc) == []


def test_a_quote_or_heading_inside_a_list_item_keeps_its_text() -> None:
    doc = markdown_to_adf("1. Update the schema\n   > Note: keep the old column\n2. # Deploy\n\n   ---")
    assert doc["content"] == [
        {
            "type": "orderedList",
            "attrs": {"order": 1},
            "content": [
                {
                    "type": "listItem",
                    "content": [_para(_t("Update the schema")), _para(_t("Note: keep the old column"))],
                },
                {"type": "listItem", "content": [_para(_t("Deploy", {"type": "strong"}))]},
            ],
        }
    ]
    assert adf_violations(doc) == []


NESTING = [
    "1. Update the schema\n   > Note: keep the old column until the backfill ran\n2. Deploy",
    "> ## Risk\n> Data loss if the migration runs twice",
    "- item\n\n  ---\n  after rule",
    "> > nested quote text",
    "> - a\n>   > quoted in a list in a quote\n> ### end",
    "- - nested item\n- second",
    "1. - a\n2. b",
    "-  \n  - child",
    "- > quoted text in item",
    "- ```\n  code first\n  ```\n  - then a list",
]


@pytest.mark.parametrize("markdown", NESTING)
def test_nested_blocks_are_valid_adf_and_lose_no_text(markdown: str) -> None:
    doc = markdown_to_adf(markdown)
    assert adf_violations(doc) == []
    # every letter of the Markdown, in order (adf_text joins the blocks without separators)
    assert re.sub("[^A-Za-z]", "", adf_text(doc)) == re.sub("[^A-Za-z]", "", markdown)


def test_a_backslash_escapes_any_ascii_punctuation() -> None:
    # CommonMark: \< \$ \@ … show the character itself, and an escaped marker starts no emphasis
    doc = markdown_to_adf("a \\< b \\$ \\@ \\\"q\\\" \\_\\_init\\_\\_.py \\*x\\*")
    assert adf_violations(doc) == []
    assert adf_text(doc) == 'a < b $ @ "q" __init__.py *x*'
    assert _styled_chars(doc) == [c for c in _styled_chars(doc) if not c[2]]  # no marks


RUN_TEXTS = [
    "__init__.py raised",
    "see [the docs](https://evil.example/phish) for more",
    "![pixel](https://evil.example/p.png?leak=1)",
    "**bold** *em* ~~gone~~ `code`",
    "# Heading\n- item\n1. first\n> quoted\n---",
    "```\nfenced\n```",
    "back\\slash \\* escaped &amp;",
    "pushed on branch `ai/ENG-1` (commit 67fd990)",
    " ! [remote rejected] HEAD -> ai/ENG-1 (pre-receive hook declined)",
]


def _shown(node: object) -> str:
    """The text a reader sees, line breaks as spaces."""
    if isinstance(node, dict):
        if node.get("type") == "hardBreak":
            return " "
        own = str(node.get("text", "")) if node.get("type") == "text" else ""
        return own + "".join(_shown(c) for c in node.get("content") or [])
    return ""


def _styled(node: object) -> list[tuple[str, str]]:
    """(mark, text) of every marked text node; a link whose text is its own address is no disguise."""
    if not isinstance(node, dict):
        return []
    found = [
        (m["type"], node.get("text", "")) for m in node.get("marks") or ()
        if not (m["type"] == "link" and m.get("attrs", {}).get("href") == node.get("text"))
    ]
    for child in node.get("content") or ():
        found += _styled(child)
    return found


@pytest.mark.parametrize("text", RUN_TEXTS)
def test_a_runs_text_in_a_comment_reaches_jira_as_that_text(text: str) -> None:
    """The core escapes a run's own text (a failure's reason) so that it renders as written; this
    conversion reads the escapes: no mark or block comes of it but a code span's (a bare address
    is linked as itself, as in any comment), and the text is the run's."""
    doc = markdown_to_adf(comments.failure(Phase.IMPLEMENTATION, text))
    assert adf_violations(doc) == []
    assert [block["type"] for block in doc["content"]] == ["paragraph"]
    assert [mark for mark, _ in _styled(doc) if mark != "code"] == []
    # (its characters, but white space and the backticks a code span drops)
    shown, written = _shown(doc).replace("`", ""), f"⚠️ Implementation failed: {text}".replace("`", "")
    assert "".join(shown.split()) == "".join(written.split())


#: Lines where the delimiters or brackets open what nothing closes; a conversion that looks for a
#: closer from each of them, to the line's end, takes quadratic time (seconds on these).
UNCLOSED = ["_a ", "__a ", "x __a", "*a ", "_http://x.test/a_ ", "[a ", "[a](b", "<http://a"]


@pytest.mark.parametrize("unit", UNCLOSED)
def test_a_line_of_unclosed_openers_converts_in_linear_time(unit: str) -> None:
    import gc
    import time

    markdown = (unit * (50_000 // len(unit) + 1))[:50_000]
    # the conversion's own CPU time: not the other processes' share of the machine, nor a full
    # collection of the test worker's whole heap, which a loaded run saw take seconds
    gc.disable()
    try:
        started = time.process_time()
        doc = markdown_to_adf(markdown)
        took = time.process_time() - started
    finally:
        gc.enable()
    # (about a tenth of a second; a quadratic search took ten seconds and more)
    assert took < 3
    assert adf_violations(doc) == []
    assert re.sub("[^A-Za-z]", "", adf_text(doc)) == re.sub("[^A-Za-z]", "", markdown)


#: A long run of backticks that no run of its length closes, and a code fence line whose blanks
#: end in a backtick: a pattern that tries every opening length with every closing place took
#: minutes on the first two (time cubic in the run's length), one that backtracks over the
#: blanks seconds on the last.
BACKTICK_LINES = ["x" + "`" * 31_999, "a" + "`" * 16_000 + "a" * 15_999, "```" + " " * 31_996 + "`"]


@pytest.mark.parametrize("line", BACKTICK_LINES, ids=["run-at-the-end", "run-then-text", "fence"])
def test_a_line_of_backtick_runs_converts_in_linear_time(line: str) -> None:
    import gc
    import time

    gc.disable()  # (the conversion's own CPU time, as above)
    try:
        started = time.process_time()
        doc = markdown_to_adf(line)
        took = time.process_time() - started
    finally:
        gc.enable()
    assert took < 3  # (milliseconds)
    assert adf_violations(doc) == []
    assert adf_text(doc).strip("` ") == line.strip("` ")


def _reference_atoms(text: str) -> list[tuple]:
    """The atoms of ``text`` by their definition, slowly: at each position in turn, a run of
    backticks is a code span up to the next run of its length on its line, or text when there is
    none; anything else is what ``_ATOM`` matches there."""
    from aiimpl_jira import adf

    found: list[tuple] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "`":
            opened = len(text) - len(text[pos:].lstrip("`"))
            ticks = opened - pos
            line = text[opened:].split("\n")[0]
            close = next((m for m in re.finditer("`+", line) if len(m.group()) == ticks), None)
            if close is None:
                pos = opened
                continue
            found.append((pos, opened + close.end(), "code", text[opened : opened + close.start()]))
            pos = opened + close.end()
            continue
        match = adf._ATOM.match(text, pos)
        if match is None:
            pos += 1
            continue
        found.append((*match.span(), match.lastgroup, None))
        pos = match.end()
    return found


def test_the_linear_finders_find_what_the_patterns_find() -> None:
    """:class:`_EmphasisFinder` and :func:`_atoms` stand in for searches of ``_EMPHASIS`` and for
    :func:`_reference_atoms`: on any text (here many random ones of the characters that matter)
    they agree."""
    import random

    from aiimpl_jira import adf

    def described(match: object) -> tuple | None:
        if match is None:
            return None
        group = match.lastgroup  # type: ignore[attr-defined]
        return (match.start(), match.end(), group, match.start(group), match.end(group))  # type: ignore

    alphabet = [*"*_~`[]()<>\\ \n\ta1.!-\x00\u00a0é", "http://", "https://", "**", "__", "~~", "``", "```"]
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        finder = adf._EmphasisFinder(text)
        for pos in range(len(text) + 1):
            assert described(finder.search(pos)) == described(adf._EMPHASIS.search(text, pos)), (text, pos)
        assert [
            (*m.span(), m.lastgroup, m.group("code_text")) for m in adf._atoms(text)
        ] == _reference_atoms(text), text


@pytest.mark.parametrize(
    "line",
    ["- " * 3000 + "x", "> " * 3000 + "x", ">" * 5000 + "x", "1. " * 2000 + "x"],
    ids=["items", "quotes", "quote-markers", "numbered-items"],
)
def test_nesting_thousands_deep_keeps_its_text_within_the_stack(line: str) -> None:
    # each level is a recursion: past MAX_NESTING what is inside is read as a paragraph, markers kept
    doc = markdown_to_adf(f"{line}\n\nafter")
    assert adf_violations(doc) == []
    assert adf_text(doc).endswith("xafter")


def test_a_document_nested_past_the_stack_reads_as_its_text() -> None:
    node: dict = {"type": "paragraph", "content": [{"type": "text", "text": "deepest"}]}
    for level in range(5000):
        item = [{"type": "paragraph", "content": [{"type": "text", "text": f"level {level}"}]}, node]
        node = {"type": "bulletList", "content": [{"type": "listItem", "content": item}]}
    doc = {"type": "doc", "version": 1, "content": [_para(_t("Intro")), node]}
    lines = adf_to_markdown(doc).split("\n")
    assert lines[0] == "Intro" and lines[-1] == "deepest" and lines[-2] == "level 0"
    assert len(lines) == 1 + 5000 + 1
