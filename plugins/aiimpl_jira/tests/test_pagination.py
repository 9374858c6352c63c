"""Every paginated read of the plugin against pages that break their pagination.

A page that says more follow but gives no way to read them (``isLast: false`` without a
``nextPageToken``, a token already read from, an empty page short of its ``total``, a page from
another ``startAt`` than the one asked, no ``total`` at all) was taken for the last: the issues,
comments or options after it were lost without a word, or, read again, never ended. Each is a failed
read, named by its request. The fake Jira answers that way (:meth:`FakeJira.alter_answers`), so
every request and every altered answer is still checked against Jira's description.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.errors import ProviderError
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.types import TriggeredPage

from aiimpl_jira.adf import adf_text
from aiimpl_jira.provider import JiraProvider
from aiimpl_jira.testing.fake_jira import FakeJira

SEARCH = "jira: POST /rest/api/3/search/jql failed: the page says more issues follow but "
NO_TOKEN = "gives no nextPageToken to read them from"
TOKEN_AGAIN = "gives back a nextPageToken the search was already read from"
REF = str(uuid.UUID(int=0x4321, version=4))


def _token(offset: int) -> str:
    """The fake's token of the page from ``offset``."""
    return base64.urlsafe_b64encode(f"page:{offset}".encode()).decode()


# -- the triggered-issue search ----------------------------------------------------------------


def _drop(*keys: str) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """An alteration that leaves ``keys`` out of the answer."""

    def alter(answer: dict[str, Any], asked: dict[str, Any]) -> None:
        for key in keys:
            answer.pop(key)

    return alter


def _no_token(answer: dict[str, Any], asked: dict[str, Any]) -> None:
    answer["isLast"] = False
    answer.pop("nextPageToken", None)


def _empty_token(answer: dict[str, Any], asked: dict[str, Any]) -> None:
    answer["isLast"] = False
    answer["nextPageToken"] = ""


def _same_token(answer: dict[str, Any], asked: dict[str, Any]) -> None:
    answer["nextPageToken"] = asked["nextPageToken"]  # the page it was read from, again


def _earlier_token(answer: dict[str, Any], asked: dict[str, Any]) -> None:
    answer["nextPageToken"] = _token(1)  # the second page's, given by the third


#: (the page that breaks, counted from 0; how it breaks; the end of the error)
_BROKEN_SEARCHES = {
    "first-page-no-token": (0, _no_token, NO_TOKEN),
    "first-page-empty-token": (0, _empty_token, NO_TOKEN),
    "later-page-no-token": (1, _no_token, NO_TOKEN),
    "later-page-empty-token": (1, _empty_token, NO_TOKEN),
    "token-given-back": (1, _same_token, TOKEN_AGAIN),
    "earlier-token-given-back": (2, _earlier_token, TOKEN_AGAIN),
}


@pytest.mark.parametrize(("broken_at", "alter", "problem"), _BROKEN_SEARCHES.values(), ids=_BROKEN_SEARCHES)
def test_a_search_page_saying_more_follow_without_a_new_token_fails_the_listing(
    jira: FakeJira,
    provider: JiraProvider,
    broken_at: int,
    alter: Callable[[dict[str, Any], dict[str, Any]], None],
    problem: str,
) -> None:
    """Taken for the last, such a page ended a listing said to be complete: the core took the issues
    after it for no longer triggered. A token given back read the same pages for ever. The listing
    fails (the poll cycle reports it and reads it all again after the back-off) before the broken
    page is handed over, and no page it did hand over says the listing is complete."""
    for n in range(1, 6):
        jira.add_issue(f"ENG-{n}")
    provider.page_size = 1
    searches = 0
    repeats = alter in (_same_token, _earlier_token)

    def answer(page: dict[str, Any], asked: dict[str, Any]) -> None:
        nonlocal searches
        index, searches = searches, searches + 1
        # (a token given back is given back again when read from, but a few times only: a search
        # reading the same pages for ever would never let this test end)
        if index == broken_at or (repeats and broken_at < index < 8):
            alter(page, asked)

    jira.alter_answers("POST", "/search/jql", answer)
    pages: list[TriggeredPage] = []

    with pytest.raises(ProviderError) as failed:
        pages.extend(provider.iter_triggered(["ENG"]))

    assert failed.value.message == SEARCH + problem and failed.value.status is None
    assert [[i.key for i in p.issues] for p in pages] == [[f"ENG-{n}"] for n in range(1, broken_at + 1)]
    assert not any(p.complete for p in pages)
    assert len(jira.requests_to("POST", "/search/jql")) == broken_at + 1


def test_a_search_page_without_is_last_is_the_last_only_without_a_token(
    jira: FakeJira, provider: JiraProvider
) -> None:
    """(Unchanged) ``isLast`` is optional in Jira's description: a page without it goes on to its
    ``nextPageToken`` and ends the search when it gives none."""
    for n in range(1, 4):
        jira.add_issue(f"ENG-{n}")
    provider.page_size = 2
    jira.alter_answers("POST", "/search/jql", _drop("isLast"))

    pages = list(provider.iter_triggered(["ENG"]))

    assert [[i.key for i in p.issues] for p in pages] == [["ENG-1", "ENG-2"], ["ENG-3"]]
    assert [p.complete for p in pages] == [False, True]


def _clause_provider(jira: FakeJira) -> JiraProvider:
    mappings = [sample_mapping(team_key="ENG", ticketing={"provider": "jira", "jql": "labels = ai"})]
    return JiraProvider(make_context(jira.config(), mappings=lambda: mappings))


def test_get_issue_follows_a_scope_search_whose_first_page_holds_none_but_says_more_follow(
    jira: FakeJira,
) -> None:
    """Jira may answer a page with fewer issues than asked, none even, and a token for the rest: the
    issue's one-page scope search took such a page for "not matched", and a webhook for an issue in
    ``Ready`` that the mapping's clause selects dispatched nothing."""
    jira.add_issue("ENG-1", labels=["ai"])
    first = True

    def answer(page: dict[str, Any], asked: dict[str, Any]) -> None:
        nonlocal first
        if first:
            first = False
            page.update(issues=[], isLast=False, nextPageToken=_token(0))

    jira.alter_answers("POST", "/search/jql", answer)

    assert _clause_provider(jira).get_issue("ENG-1").triggered is True
    searches = jira.requests_to("POST", "/search/jql")
    assert [s.json.get("nextPageToken") for s in searches] == [None, _token(0)]
    assert all(s.json["reconcileIssues"] == [int(jira.issues["ENG-1"].id)] for s in searches)


def test_get_issue_fails_on_a_scope_search_page_saying_more_follow_without_a_token(jira: FakeJira) -> None:
    jira.add_issue("ENG-1", labels=["ai"])
    jira.alter_answers("POST", "/search/jql", lambda page, asked: page.update(issues=[], isLast=False))

    with pytest.raises(ProviderError) as failed:
        _clause_provider(jira).get_issue("ENG-1")

    assert failed.value.message == SEARCH + NO_TOKEN


# -- an issue's comments --------------------------------------------------------------------------


def _comments_path(key: str) -> str:
    return f"/rest/api/3/issue/{key}/comment"


def _empty_from(start: int) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """A page from ``start`` on that holds no comment, its ``total`` unchanged."""

    def alter(page: dict[str, Any], asked: dict[str, Any]) -> None:
        if int(asked.get("startAt", 0)) >= start:
            page["comments"] = []

    return alter


def _first_page_again(jira: FakeJira, key: str) -> Callable[[dict[str, Any], dict[str, Any]], Any]:
    """A site that ignores ``startAt``: every page is the first one (a few times, then the real
    answer, so that a read that never notices still ends)."""
    again = 0

    def alter(page: dict[str, Any], asked: dict[str, Any]) -> Any:
        nonlocal again
        if int(asked.get("startAt", 0)) == 0 or again >= 3:
            return None
        again += 1
        return jira._comments_page(
            jira.issues[key], 0, int(asked["maxResults"]), newest_first=asked.get("orderBy") == "-created"
        )

    return alter


def _comment_breaks(jira: FakeJira, key: str, start: int) -> dict[str, tuple[Any, str]]:
    """How a page of the comments of ``key`` breaks (the second, from ``start``), with the end of the
    error it is met with."""
    path = _comments_path(key)
    return {
        "empty-page": (
            _empty_from(start),
            f"GET {path}?startAt={start} failed: the page says there are "
            f"{len(jira.issues[key].comments)} comments but holds none from startAt {start}",
        ),
        "no-total": (_drop("total"), f"GET {path}?startAt=0 failed: the page does not say how many comments "
                     "there are (total)"),
        "startAt-ignored": (
            _first_page_again(jira, key),
            f"GET {path}?startAt={start} failed: the page answers from startAt 0, not the {start} asked",
        ),
    }


@pytest.mark.parametrize("broken", ["empty-page", "no-total", "startAt-ignored"])
def test_get_issue_fails_on_a_broken_page_of_its_comments(
    jira: FakeJira, provider: JiraProvider, broken: str
) -> None:
    """Taken for the last, such a page lost the agent the comments after it (and a site ignoring
    ``startAt`` handed over the first page twice, the last comments never): reading the issue fails,
    as when Jira cannot be reached."""
    jira.add_issue("ENG-1")
    for n in range(120):  # a page of 100, and more
        jira.add_comment("ENG-1", f"note {n}")
    alter, problem = _comment_breaks(jira, "ENG-1", 100)[broken]
    jira.alter_answers("GET", "/issue/ENG-1/comment", alter)

    with pytest.raises(ProviderError) as failed:
        provider.get_issue("ENG-1")

    assert failed.value.message == f"jira: {problem}" and failed.value.status is None


def test_get_issue_reads_every_comment_when_its_first_page_does_not_say_how_many(
    jira: FakeJira, provider: JiraProvider
) -> None:
    """The issue's embedded first page of comments without a ``total`` was taken for all of them."""
    jira.add_issue("ENG-1")
    for n in range(7):  # the fake embeds 5
        jira.add_comment("ENG-1", f"note {n}")
    jira.alter_answers(
        "GET", "/issue/ENG-1", lambda issue, asked: _drop("total")(issue["fields"]["comment"], asked)
    )

    comments = provider.get_issue("ENG-1").comments

    assert [c.body for c in comments] == [f"note {n}" for n in range(7)]


@pytest.mark.parametrize("broken", ["empty-page", "no-total", "startAt-ignored"])
def test_a_retry_fails_on_a_broken_page_of_the_comments_instead_of_posting_again(
    jira: FakeJira, provider: JiraProvider, broken: str
) -> None:
    """The copy a lost answer stored lies past the retry's first page: taken for the last, a broken
    page had the retry post the comment a second time. The try fails instead (the outbox tries again
    later), and nothing is posted."""
    jira.add_issue("ENG-1")
    provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=False)
    for n in range(200):
        jira.add_comment("ENG-1", f"note {n}")
    # the pages from 0 (the 50 newest), from 50 (100), from 150: the copy is the oldest
    alter, problem = _comment_breaks(jira, "ENG-1", 50)[broken]
    jira.alter_answers("GET", "/issue/ENG-1/comment", alter)
    posts = len(jira.requests_to("POST", "/issue/ENG-1/comment"))

    with pytest.raises(ProviderError) as failed:
        provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=True)

    assert failed.value.message == f"jira: {problem}"
    assert [adf_text(d) for d in jira.comment_docs("ENG-1")].count("lost answer") == 1
    assert len(jira.requests_to("POST", "/issue/ENG-1/comment")) == posts


def test_a_retry_fails_when_the_comment_list_says_more_follow(jira: FakeJira, provider: JiraProvider) -> None:
    """``POST /comment/list`` is paginated, without a parameter to ask for a later page: an answer
    that leaves comments asked for to a page that cannot be read lost the copy among them, and the
    retry posted the comment a second time."""
    jira.add_issue("ENG-1")
    provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=False)
    for n in range(3):
        jira.add_comment("ENG-1", f"note {n}")

    def first_half(page: dict[str, Any], asked: dict[str, Any]) -> None:
        page["values"] = page["values"][2:]  # (the two oldest, the copy among them, left to a next page)
        page["isLast"] = False

    jira.alter_answers("POST", "/comment/list", first_half)

    with pytest.raises(ProviderError) as failed:
        provider.post_comment_once("ENG-1", "lost answer", ref=REF, retry=True)

    assert failed.value.message == (
        "jira: POST /rest/api/3/comment/list failed: the answer to 4 comment ids of ENG-1 says more of "
        "them follow (isLast: false), which this operation cannot be asked for"
    )
    assert [adf_text(d) for d in jira.comment_docs("ENG-1")].count("lost answer") == 1


# -- a field's contexts and options (the admin UI) ------------------------------------------------


FIELD = "customfield_10010"


@pytest.fixture
def options(jira: FakeJira, provider: JiraProvider) -> tuple[str, str]:
    """A select field with 120 options in one context (a page of 100, and more): the context and the
    path of its options."""
    jira.add_select_field(FIELD, "Area", {"Default": [f"Area {n}" for n in range(120)]})
    context = jira.contexts[FIELD][0]["id"]
    return context, f"/rest/api/3/field/{FIELD}/context/{context}/option"


def _option_breaks(jira: FakeJira, context: str) -> dict[str, tuple[Any, str]]:
    """How a page of the options breaks, with the end of the error it is met with."""

    def empty_page(page: dict[str, Any], asked: dict[str, Any]) -> None:
        if asked["startAt"] == "100":
            page.update(values=[], isLast=False)

    def first_page_again(page: dict[str, Any], asked: dict[str, Any]) -> Any:
        # a site that ignores startAt (twice, then the real answer: read for ever, this test would
        # never end)
        if asked["startAt"] not in ("100", "200"):
            return None
        first = jira.options[(FIELD, context)][:100]
        return {"startAt": 0, "maxResults": 100, "total": 120, "isLast": False, "values": first}

    return {
        "empty-page": (
            empty_page, "?startAt=100 failed: the page says more follow but holds none from startAt 100"
        ),
        "no-isLast-nor-total": (
            _drop("isLast", "total"),
            "?startAt=0 failed: the page says neither whether more follow (isLast) nor how many there are "
            "(total)",
        ),
        "startAt-ignored": (first_page_again, "?startAt=100 failed: the page answers from startAt 0, not the "
                            "100 asked"),
    }


@pytest.mark.parametrize("broken", ["empty-page", "no-isLast-nor-total", "startAt-ignored"])
def test_a_broken_page_of_a_fields_options_fails_the_read(
    jira: FakeJira, provider: JiraProvider, options: tuple[str, str], broken: str
) -> None:
    """Taken for the last, such a page lost the options after it; a site ignoring ``startAt`` (its
    pages never the last) was read for ever."""
    context, path = options
    alter, problem = _option_breaks(jira, context)[broken]
    jira.alter_answers("GET", path, alter)

    with pytest.raises(ProviderError) as failed:
        provider.client.context_options(FIELD, context)

    assert failed.value.message == f"jira: GET {path}{problem}"


def test_a_page_of_options_without_is_last_goes_on_to_its_total(
    jira: FakeJira, provider: JiraProvider, options: tuple[str, str]
) -> None:
    """A page without ``isLast`` was taken for the last: the options past the first 100 were lost."""
    context, path = options
    jira.alter_answers("GET", path, _drop("isLast"))

    values = provider.client.context_options(FIELD, context)

    assert [v["value"] for v in values] == [f"Area {n}" for n in range(120)]
    assert [r.query["startAt"] for r in jira.requests_to("GET", path)] == [["0"], ["100"]]


def test_the_admin_ui_is_told_when_a_page_of_a_fields_contexts_breaks(
    client: Any, admin_headers: dict[str, str], jira: FakeJira
) -> None:
    """The field's contexts (``startAt`` pagination, 50 a page) said more follow and held none: the
    options of the contexts after it were left out of the list without a word."""
    jira.add_select_field(FIELD, "Area", {"Default": ["API"]})
    path = f"/rest/api/3/field/{FIELD}/context"

    def more_to_come(page: dict[str, Any], asked: dict[str, Any]) -> None:
        if asked["startAt"] != "0":
            page["values"] = []
        page["isLast"] = False

    jira.alter_answers("GET", path, more_to_come)

    resp = client.get(f"/api/jira/field-options?fieldId={FIELD}", headers=admin_headers)

    assert resp.status_code == 500
    assert resp.get_json()["error"] == (
        f"jira: GET {path}?startAt=1 failed: the page says more follow but holds none from startAt 1"
    )


@pytest.mark.parametrize(("answer", "kind"), [([], "an array"), (None, "null"), ("ok", "a string")])
@pytest.mark.parametrize("read", ["listing", "issue", "comments"])
def test_an_answer_that_is_no_json_object_fails_the_read_it_answers(
    jira: FakeJira, provider: JiraProvider, monkeypatch: pytest.MonkeyPatch, answer: Any, kind: str, read: str
) -> None:
    """A proxy's (or a broken site's) JSON that is no object, where a page or an issue is: the read
    fails, named by its request, instead of an ``AttributeError`` the poll could only report as
    the plugin's bug."""
    from aiimpl_core.http import HttpClient

    jira.add_issue("ENG-1")
    path = {"listing": "/search/jql", "issue": "/issue/ENG-1", "comments": "/issue/ENG-1/comment"}[read]
    original = HttpClient.json

    def json(self: HttpClient, resp: Any) -> Any:
        return answer if resp.request.path_url.split("?")[0].endswith(path) else original(self, resp)

    monkeypatch.setattr(HttpClient, "json", json)
    if read == "comments":  # (an issue without its first page of comments reads them all)
        jira.alter_answers("GET", "/issue/ENG-1", _drop_comment_page)

    with pytest.raises(ProviderError) as failed:
        if read == "listing":
            list(provider.iter_triggered(["ENG"]))
        else:
            provider.get_issue("ENG-1")

    assert failed.value.message.startswith("jira: ") and failed.value.status is None
    assert failed.value.message.endswith(f"failed: the answer is {kind}, not a JSON object")
    assert path in failed.value.message


def _drop_comment_page(issue: dict[str, Any], asked: dict[str, Any]) -> None:
    issue["fields"].pop("comment", None)
