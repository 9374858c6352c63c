"""The ``linear`` ticketing provider against the fake Linear server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.errors import NotFound, ProviderConfigError, ProviderError, ProviderNotConfigured
from aiimpl_core.testing.contract import TicketingProviderContract, make_context, sample_mapping
from aiimpl_core.types import Stage

from aiimpl_linear.client import LinearClient
from aiimpl_linear.provider import LinearProvider
from aiimpl_linear.queries import COMMENTS_PAGE, FIRST_COMMENTS, LIST_RELATIONS, RELATIONS_PAGE
from aiimpl_linear.testing import FakeLinear

AI = {"AI-Implement", "AI-Planning", "Plan-Complete", "AI-Working", "Ready for Review"}


class TestLinearContract(TicketingProviderContract):
    @pytest.fixture
    def ticketing_provider(self, provider: LinearProvider) -> LinearProvider:
        return provider

    @pytest.fixture
    def contract_issue_key(self, fake: FakeLinear) -> str:
        return fake.add_issue("ENG", "Contract issue", labels=["AI-Implement", "bug"])["identifier"]


# -- listing ------------------------------------------------------------------------------------


def test_iter_triggered_reads_everything_in_one_query_per_page(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_team("OPS")
    blocker = fake.add_issue("ENG", "Schema migration", labels=[])
    done_blocker = fake.add_issue("ENG", "Old work", labels=[], state="Done")
    issue = fake.add_issue(
        "ENG", "Fix login", labels=["AI-Implement", "bug", "Plan-Complete"], description="Steps to reproduce"
    )
    fake.add_blocker(blocker["identifier"], issue["identifier"])
    fake.add_blocker(done_blocker["identifier"], issue["identifier"])
    other = fake.add_issue("OPS", "Rotate keys")  # a team without a mapping is listed too
    fake.add_issue("ENG", "Not triggered", labels=["bug"])
    fake.add_issue("ENG", "Already done", state="Done")
    fake.requests.clear()

    pages = list(provider.iter_triggered(["ENG"]))

    assert len(pages) == 1 and pages[0].complete
    assert fake.operations() == ["TriggeredIssues"]
    by_key = {i.key: i for i in pages[0].issues}
    assert set(by_key) == {issue["identifier"], other["identifier"]}
    listed = by_key[issue["identifier"]]
    assert (
        listed.team_key == "ENG"
        and listed.title == "Fix login"
        and listed.description == "Steps to reproduce"
    )
    assert listed.provider == "linear" and listed.triggered and listed.state == "Todo"
    assert listed.url == f"https://linear.app/fake/issue/{issue['identifier']}"
    assert set(listed.labels) == {"AI-Implement", "bug", "Plan-Complete"}
    assert listed.stage is Stage.PLAN_COMPLETE
    assert {(b.key, b.open) for b in listed.blocked_by} == {
        (blocker["identifier"], True),
        (done_blocker["identifier"], False),
    }
    assert [b.key for b in listed.open_blockers] == [blocker["identifier"]]
    assert by_key[other["identifier"]].team_key == "OPS"


def test_iter_triggered_paginates_600_issues_in_3_calls(fake: FakeLinear) -> None:
    for n in range(600):
        fake.add_issue("ENG", f"Issue {n}")
    provider = LinearProvider(make_context({**fake.config(), "AIIMPL_LINEAR_PAGE_SIZE": "250"}))
    fake.requests.clear()

    pages = list(provider.iter_triggered(["ENG"]))

    assert [len(p.issues) for p in pages] == [250, 250, 100]
    assert [p.complete for p in pages] == [False, False, True]
    assert fake.operations() == ["TriggeredIssues"] * 3
    assert [r.variables["after"] is None for r in fake.requests] == [True, False, False]
    keys = [i.key for p in pages for i in p.issues]
    assert len(set(keys)) == 600
    assert max(r.complexity for r in fake.requests) <= 10_000


def test_iter_triggered_with_nothing_triggered_yields_one_complete_page(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_issue("ENG", "Quiet", labels=["bug"])
    pages = list(provider.iter_triggered(["ENG"]))
    assert len(pages) == 1 and pages[0].complete and pages[0].issues == ()


def test_iter_triggered_lets_go_of_each_answer_before_handing_its_page_over(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """A page's parsed answer is not held while the caller checks and records the page."""
    fake.add_issue("ENG", "Fix login")
    pages = provider.iter_triggered(["ENG"])
    page = next(pages)
    assert [i.title for i in page.issues] == ["Fix login"]
    assert pages.gi_frame is not None
    assert not {"data", "connection", "info"} & set(pages.gi_frame.f_locals)
    pages.close()


def _altered_answers(
    monkeypatch: pytest.MonkeyPatch, operation: str, alter: Callable[[dict[str, Any], dict[str, Any]], None]
) -> None:
    """Have each ``operation`` answer altered in place by ``alter(data, variables)`` before the
    provider reads it. The request itself still goes to the fake, which checks it against the
    schema."""
    real = LinearClient.execute

    def execute(self: LinearClient, op: str, variables: Any = None) -> dict[str, Any]:
        data = real(self, op, variables)
        if op == operation:
            alter(data, dict(variables or {}))
        return data

    monkeypatch.setattr(LinearClient, "execute", execute)


def _broken_listing(
    monkeypatch: pytest.MonkeyPatch, page_info: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    """Have each ``TriggeredIssues`` answer carry the ``pageInfo`` that ``page_info`` makes of the
    request's variables (``None``: the answer as Linear gave it)."""

    def alter(data: dict[str, Any], variables: dict[str, Any]) -> None:
        if (info := page_info(variables)) is not None:
            data["issues"]["pageInfo"] = info

    _altered_answers(monkeypatch, "TriggeredIssues", alter)


#: ``pageInfo`` of a page that says more follow without a usable cursor, made of the request's
#: variables, with the end of the error it is met with.
_NO_CURSOR = "gives no cursor to read them from (pageInfo.endCursor)"
_SAME_CURSOR = "gives back a cursor it was read from (pageInfo.endCursor)"
_BROKEN_FIRST_PAGES = {
    "null": (lambda v: {"hasNextPage": True, "endCursor": None}, _NO_CURSOR),
    "missing": (lambda v: {"hasNextPage": True}, _NO_CURSOR),
    "empty": (lambda v: {"hasNextPage": True, "endCursor": ""}, _NO_CURSOR),
}
#: (a page read from a cursor may give that cursor back too)
_BROKEN_PAGES = {
    **_BROKEN_FIRST_PAGES,
    "same": (lambda v: {"hasNextPage": True, "endCursor": v["after"]}, _SAME_CURSOR),
}


@pytest.mark.parametrize(
    "page_info",
    [{"hasNextPage": True, "endCursor": None}, {"hasNextPage": True}, {"hasNextPage": True, "endCursor": ""}],
    ids=["null", "missing", "empty"],
)
def test_a_listing_page_that_says_more_follow_without_a_cursor_is_an_error(
    fake: FakeLinear, monkeypatch: pytest.MonkeyPatch, page_info: dict[str, Any]
) -> None:
    """Taken for the end of the listing, such a page silently dropped every issue after it: the
    listing fails instead, so the poll cycle says so and the next one reads it all again."""
    for n in range(3):
        fake.add_issue("ENG", f"Issue {n}")
    provider = LinearProvider(make_context({**fake.config(), "AIIMPL_LINEAR_PAGE_SIZE": "2"}))
    _broken_listing(monkeypatch, lambda variables: page_info)

    with pytest.raises(ProviderError) as caught:
        list(provider.iter_triggered(["ENG"]))

    assert caught.value.provider == "linear"
    assert caught.value.message == (
        "Linear TriggeredIssues failed: the page says more issues follow but gives no cursor to "
        "read them from (pageInfo.endCursor)"
    )
    assert fake.operations() == ["TriggeredIssues"]  # nothing more is read of a broken answer


def test_a_listing_page_that_gives_back_the_cursor_it_was_read_from_is_an_error(
    fake: FakeLinear, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read again from the same cursor, the listing would never end; taken for its end, it dropped
    every issue after the page."""
    for n in range(5):
        fake.add_issue("ENG", f"Issue {n}")
    provider = LinearProvider(make_context({**fake.config(), "AIIMPL_LINEAR_PAGE_SIZE": "2"}))
    # the first page as Linear answers it; the second gives back the cursor it was read from
    _broken_listing(
        monkeypatch, lambda v: {"hasNextPage": True, "endCursor": v["after"]} if v["after"] else None
    )

    pages = provider.iter_triggered(["ENG"])
    first = next(pages)
    assert len(first.issues) == 2 and not first.complete
    with pytest.raises(ProviderError) as caught:
        next(pages)

    assert caught.value.message == (
        "Linear TriggeredIssues failed: the page says more issues follow but gives back a cursor "
        "it was read from (pageInfo.endCursor)"
    )


def test_a_listing_page_that_gives_back_an_earlier_cursor_is_an_error(
    fake: FakeLinear, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cursor of two pages back (A, B, A …) reads the same pages for ever too."""
    for n in range(7):
        fake.add_issue("ENG", f"Issue {n}")
    provider = LinearProvider(make_context({**fake.config(), "AIIMPL_LINEAR_PAGE_SIZE": "2"}))
    read_from: list[str] = []

    def page_info(variables: dict[str, Any]) -> dict[str, Any] | None:
        if variables["after"]:
            read_from.append(variables["after"])
        # the third page gives back the cursor the second was read from
        return {"hasNextPage": True, "endCursor": read_from[0]} if len(read_from) == 2 else None

    _broken_listing(monkeypatch, page_info)

    with pytest.raises(ProviderError) as caught:
        list(provider.iter_triggered(["ENG"]))

    assert "gives back a cursor it was read from" in caught.value.message
    assert fake.operations() == ["TriggeredIssues"] * 3


def test_trigger_label_is_matched_case_insensitively(fake: FakeLinear, provider: LinearProvider) -> None:
    issue = fake.add_issue("ENG", "Lowercase", labels=["ai-implement"])
    keys = [i.key for p in provider.iter_triggered(["ENG"]) for i in p.issues]
    assert keys == [issue["identifier"]]


def _provider_with_mappings(fake: FakeLinear, *team_keys: str) -> LinearProvider:
    """A provider whose orchestrator has Linear mappings of ``team_keys`` (and one of a Jira project)."""
    mappings = [sample_mapping(team_key=key, ticketing={"provider": "linear"}) for key in team_keys]
    mappings.append(sample_mapping(team_key="ops", ticketing={"provider": "jira"}))
    return LinearProvider(make_context(fake.config(), mappings=lambda: mappings))


def test_a_team_mapped_under_its_key_in_lower_case_is_that_mapping_s_team(fake: FakeLinear) -> None:
    """Linear's team keys are upper-case (issues ENG-1, ENG-2); the core finds an issue's mapping by
    the exact key the provider reports. A mapping saved as ``eng`` was accepted and matched no
    issue: each is reported under the key as the mapping spells it."""
    fake.add_team("OPS")
    provider = _provider_with_mappings(fake, "eng")
    key = fake.add_issue("ENG", "Blocked")["identifier"]
    for n in range(LIST_RELATIONS):  # a mapped team's issue has its other relations read
        fake.add_relation(fake.add_issue("ENG", f"Related {n}", labels=[])["identifier"], key)
    blocker = fake.add_issue("ENG", "Blocker", labels=[])["identifier"]
    fake.add_blocker(blocker, key)
    other = fake.add_issue("OPS", "Not a Linear mapping's")["identifier"]

    listed = {i.key: i for p in provider.iter_triggered(["eng"]) for i in p.issues}

    assert listed[key].team_key == "eng"
    assert [b.key for b in listed[key].open_blockers] == [blocker]
    assert listed[other].team_key == "OPS"  # (the mapping "ops" is a Jira project's)
    # read on its own (a webhook's check), and its key read as the core reads it (`aiimpl dispatch`)
    assert provider.get_issue(key).team_key == "eng"
    assert provider.team_of(key) == "eng"
    assert provider.team_of(other) == "OPS"


def test_of_mappings_whose_keys_differ_only_in_case_the_one_spelled_as_linear_wins(fake: FakeLinear) -> None:
    provider = _provider_with_mappings(fake, "eng", "ENG", "Eng")
    key = fake.add_issue("ENG", "Fix login")["identifier"]
    assert [i.team_key for p in provider.iter_triggered(["eng", "ENG", "Eng"]) for i in p.issues] == ["ENG"]
    assert provider.get_issue(key).team_key == "ENG" and provider.team_of(key) == "ENG"
    # without it, the one first in sorted order, whichever call asks
    provider = _provider_with_mappings(fake, "eng", "Eng")
    assert [i.team_key for p in provider.iter_triggered(["eng", "Eng"]) for i in p.issues] == ["Eng"]
    assert provider.get_issue(key).team_key == "Eng" and provider.team_of(key) == "Eng"


def _blocked_past(fake: FakeLinear, related: int) -> tuple[str, str]:
    """An issue ``Blocked`` with ``related`` older links of another type, which fill its first
    pages of relations, and then a blocker: its key and the blocker's."""
    key = fake.add_issue("ENG", "Blocked")["identifier"]
    for n in range(related):
        fake.add_relation(fake.add_issue("ENG", f"Related {n}", labels=[])["identifier"], key)
    blocker = fake.add_issue("ENG", "Blocker", labels=[])["identifier"]
    fake.add_blocker(blocker, key)
    return key, blocker


def test_blocker_past_the_listed_relations_is_read_with_one_more_call(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    key, blocker = _blocked_past(fake, LIST_RELATIONS)
    few = fake.add_issue("ENG", "Few relations")["identifier"]
    fake.add_relation(blocker, few)
    fake.requests.clear()

    listed = {i.key: i for p in provider.iter_triggered(["ENG"]) for i in p.issues}

    assert [b.key for b in listed[key].open_blockers] == [blocker]
    assert listed[few].blocked_by == ()
    # one more call, only for the issue whose relations did not fit, from where the listing stopped
    assert fake.operations() == ["TriggeredIssues", "IssueInverseRelations"]
    assert fake.requests[1].variables["id"] == fake.issue(key)["id"]
    assert fake.requests[1].variables["after"] is not None


def test_one_issue_whose_relations_cannot_be_read_is_left_out_not_the_listing(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """The relations past the listed page of one issue could not be read (a rate limit on that
    query, the issue deleted meanwhile): the whole listing failed, and the backed-off connection
    dispatched no issue of any team. That issue is left out (the listing not complete); the others
    are listed; another team's issue, shown as `no-mapping`, needs no relations read at all."""
    fake.add_team("OPS")
    many, other, unmapped = (fake.add_issue(team, title)["identifier"]
                             for team, title in (("ENG", "Many"), ("ENG", "Plain"), ("OPS", "Unmapped")))
    for key in (many, unmapped):
        for n in range(LIST_RELATIONS + 1):
            fake.add_relation(fake.add_issue("ENG", f"Related {key} {n}", labels=[])["identifier"], key)
    fake.limit_endpoint("IssueInverseRelations", times=5, retry_in=900)
    fake.requests.clear()

    pages = list(provider.iter_triggered(["ENG"]))

    assert sorted(i.key for p in pages for i in p.issues) == sorted([other, unmapped])
    assert [p.complete for p in pages] == [False]
    assert fake.operations().count("IssueInverseRelations") == 1  # the unmapped team's: none


def test_an_issue_deleted_before_its_other_relations_are_read_is_left_out_not_the_listing(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """Linear answers the read of a deleted issue's relations "not found", which is no remote
    failure: it escaped, and failed the listing of every team."""
    many = fake.add_issue("ENG", "Many relations")
    other = fake.add_issue("ENG", "Plain")["identifier"]
    for n in range(LIST_RELATIONS + 1):
        fake.add_relation(fake.add_issue("ENG", f"Related {n}", labels=[])["identifier"], many["identifier"])
    fake.before("IssueInverseRelations", lambda: fake.store.issues.pop(many["id"]))  # deleted meanwhile

    pages = list(provider.iter_triggered(["ENG"]))

    assert [i.key for p in pages for i in p.issues] == [other]
    assert [p.complete for p in pages] == [False]


@pytest.mark.parametrize("broken", _BROKEN_FIRST_PAGES.values(), ids=_BROKEN_FIRST_PAGES.keys())
def test_an_issue_whose_listed_relations_say_more_follow_without_a_cursor_is_left_out(
    fake: FakeLinear,
    provider: LinearProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: tuple[Callable[[dict[str, Any]], dict[str, Any]], str],
) -> None:
    """The listing's page of an issue's relations said more follow without a cursor: taken for all
    of them, the blocker past that page went unseen and the blocked issue was listed unblocked. It
    is left out of the listing with a warning, as an issue whose relations could not be read is."""
    page_info, problem = broken
    key, _blocker = _blocked_past(fake, LIST_RELATIONS)
    other = fake.add_issue("ENG", "Plain")["identifier"]

    def alter(data: dict[str, Any], variables: dict[str, Any]) -> None:
        for node in data["issues"]["nodes"]:
            if node["identifier"] == key:
                node["inverseRelations"]["pageInfo"] = page_info(variables)

    _altered_answers(monkeypatch, "TriggeredIssues", alter)
    fake.requests.clear()

    pages = list(provider.iter_triggered(["ENG"]))

    assert [i.key for p in pages for i in p.issues] == [other]
    assert [p.complete for p in pages] == [False]
    assert fake.operations() == ["TriggeredIssues"]  # nothing more is read of a broken answer
    assert (
        f"the relations of {key} could not be read (Linear TriggeredIssues failed: the page says more "
        f"relations follow but {problem})"
    ) in caplog.text


@pytest.mark.parametrize("broken", _BROKEN_PAGES.values(), ids=_BROKEN_PAGES.keys())
def test_an_issue_whose_further_relations_say_more_follow_without_a_new_cursor_is_left_out(
    fake: FakeLinear,
    provider: LinearProvider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    broken: tuple[Callable[[dict[str, Any]], dict[str, Any]], str],
) -> None:
    """A page of ``IssueInverseRelations`` said more follow without a new cursor: taken for the
    last, the blocker on the page after it went unseen and the blocked issue was listed unblocked."""
    page_info, problem = broken
    key, _blocker = _blocked_past(fake, LIST_RELATIONS + RELATIONS_PAGE)  # the listing's page and one more
    other = fake.add_issue("ENG", "Plain")["identifier"]

    def alter(data: dict[str, Any], variables: dict[str, Any]) -> None:
        data["issue"]["inverseRelations"]["pageInfo"] = page_info(variables)

    _altered_answers(monkeypatch, "IssueInverseRelations", alter)
    fake.requests.clear()

    pages = list(provider.iter_triggered(["ENG"]))

    assert [i.key for p in pages for i in p.issues] == [other]
    assert [p.complete for p in pages] == [False]
    assert fake.operations() == ["TriggeredIssues", "IssueInverseRelations"]
    assert (
        f"the relations of {key} could not be read (Linear IssueInverseRelations failed: the page says "
        f"more relations follow but {problem})"
    ) in caplog.text


@pytest.mark.parametrize("trash", [False, True], ids=["archived", "trashed"])
def test_an_issue_archived_or_in_the_trash_is_not_triggered(
    fake: FakeLinear, provider: LinearProvider, trash: bool
) -> None:
    """Read by its id (a webhook's check), an issue archived or moved to the trash with its trigger
    label still on was triggered, and dispatched; the listing never shows it."""
    key = fake.add_issue("ENG", "Gone")["identifier"]
    assert provider.get_issue(key).triggered
    fake.archive(key, trash=trash)
    assert not provider.get_issue(key).triggered
    assert [i.key for p in provider.iter_triggered(["ENG"]) for i in p.issues] == []


@pytest.mark.parametrize("state", ["Done", "Canceled", "Duplicate"])
def test_blocker_in_a_closed_state_no_longer_blocks(
    fake: FakeLinear, provider: LinearProvider, state: str
) -> None:
    """Linear's closed state types are ``completed``, ``canceled`` and ``duplicate``: an issue
    closed as a duplicate of another blocks no more than a done one."""
    key = fake.add_issue("ENG", "Blocked")["identifier"]
    blocker = fake.add_issue("ENG", "Same work", labels=[], state=state)["identifier"]
    fake.add_blocker(blocker, key)

    [listed] = [i for p in provider.iter_triggered(["ENG"]) for i in p.issues]

    assert [(b.key, b.open) for b in listed.blocked_by] == [(blocker, False)]
    assert listed.open_blockers == ()
    assert provider.get_issue(key).open_blockers == ()


@pytest.mark.parametrize("state", ["Done", "Canceled", "Duplicate"])
def test_issue_in_a_closed_state_is_not_triggered(
    fake: FakeLinear, provider: LinearProvider, state: str
) -> None:
    """A person closes an issue (as a duplicate, say) and leaves the trigger label on: the listing
    leaves it out, and read on its own (as a webhook does) it is not triggered."""
    closed = fake.add_issue("ENG", "Same as another", state=state)["identifier"]
    open_issue = fake.add_issue("ENG", "Fix login")["identifier"]

    keys = [i.key for p in provider.iter_triggered(["ENG"]) for i in p.issues]

    assert keys == [open_issue]
    assert not provider.get_issue(closed).triggered
    assert provider.get_issue(open_issue).triggered


def test_an_issue_carrying_a_retired_trigger_label_is_not_triggered(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """A retired label stays on the issues that carry it, but no one can add it any more: the
    issue is not taken for a request to implement it, listed or read on its own (as a webhook's
    check does). An active trigger label of the team still triggers."""
    old = fake.add_issue("ENG", "Labelled before the label was retired")["identifier"]
    fake.retire_label(fake.issue(old)["labelIds"][0])
    fake.add_label("AI-Implement", None)  # the workspace's label, active
    new = fake.add_issue("ENG", "Labelled since")["identifier"]

    listed = {i.key: i for p in provider.iter_triggered(["ENG"]) for i in p.issues}

    assert {key: issue.triggered for key, issue in listed.items()} == {old: False, new: True}
    assert not provider.get_issue(old).triggered
    assert provider.get_issue(new).triggered
    assert provider.get_issue(old).labels == ("AI-Implement",)  # still shown: it is on the issue


# -- reading one issue ----------------------------------------------------------------------------


def test_get_issue_reads_comments_in_order(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG", "With comments")["identifier"]
    provider.post_comment(key, "first")
    provider.post_comment(key, "second **bold**")
    issue = provider.get_issue(key)
    assert [c.body for c in issue.comments] == ["first", "second **bold**"]
    assert all(c.id and c.created_at for c in issue.comments)
    assert issue.remote_id == fake.issue(key)["id"]


def test_get_issue_reads_every_comment_oldest_first(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG", "Many runs")["identifier"]
    count = FIRST_COMMENTS + COMMENTS_PAGE + 30  # the first page, a whole IssueComments page, and more
    for n in range(count):
        fake.add_comment(key, f"comment {n}", created_at=f"2024-05-01T10:{n // 60:02d}:{n % 60:02d}.000Z")
    fake.requests.clear()

    issue = provider.get_issue(key)

    # every comment, the newest included, in the order they were written
    assert [c.body for c in issue.comments] == [f"comment {n}" for n in range(count)]
    assert fake.operations() == ["IssueWithComments", "IssueComments", "IssueComments"]
    assert all(r.variables["id"] == fake.issue(key)["id"] for r in fake.requests[1:])
    assert max(r.complexity for r in fake.requests) <= 10_000


def test_get_issue_with_a_page_of_comments_reads_them_in_one_call(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    key = fake.add_issue("ENG", "One run")["identifier"]
    for n in range(FIRST_COMMENTS):
        fake.add_comment(key, f"comment {n}")
    fake.requests.clear()

    assert len(provider.get_issue(key).comments) == FIRST_COMMENTS
    assert fake.operations() == ["IssueWithComments"]


def test_get_issue_reads_every_relation(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG", "Blocked")["identifier"]
    for n in range(120):  # more than get_issue's 50 and a whole IssueInverseRelations page of 50
        fake.add_relation(fake.add_issue("ENG", f"Related {n}", labels=[])["identifier"], key)
    blocker = fake.add_issue("ENG", "Blocker", labels=[])["identifier"]
    fake.add_blocker(blocker, key)
    fake.requests.clear()

    issue = provider.get_issue(key)

    assert [b.key for b in issue.open_blockers] == [blocker]
    assert fake.operations() == ["IssueWithComments", "IssueInverseRelations", "IssueInverseRelations"]
    assert max(r.complexity for r in fake.requests) <= 10_000
    # a page of the rest of the relations is cheap: the listing may read one for an issue each poll
    assert max(r.complexity for r in fake.requests if r.operation == "IssueInverseRelations") <= 200


#: (the query whose page breaks, the connection, what the error calls its nodes, the broken page)
_GET_ISSUE_PAGES = [
    *(("IssueWithComments", "comments", "comments", b) for b in _BROKEN_FIRST_PAGES.items()),
    *(("IssueComments", "comments", "comments", b) for b in _BROKEN_PAGES.items()),
    *(("IssueWithComments", "inverseRelations", "relations", b) for b in _BROKEN_FIRST_PAGES.items()),
    *(("IssueInverseRelations", "inverseRelations", "relations", b) for b in _BROKEN_PAGES.items()),
]


@pytest.mark.parametrize(
    ("operation", "field", "what", "broken"),
    _GET_ISSUE_PAGES,
    ids=[f"{op}-{field}-{name}" for op, field, _, (name, _) in _GET_ISSUE_PAGES],
)
def test_get_issue_whose_page_says_more_follow_without_a_new_cursor_is_an_error(
    fake: FakeLinear,
    provider: LinearProvider,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
    field: str,
    what: str,
    broken: tuple[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]],
) -> None:
    """Taken for the last, such a page of comments lost the agent the comments after it, and such a
    page of relations the blockers after it (a blocked issue read as unblocked, and dispatched):
    the read fails, as any other failed read of the issue does, naming the query that broke."""
    page_info, problem = broken[1]
    key = fake.add_issue("ENG", "Many of them")["identifier"]
    if field == "comments":  # the first page, a whole IssueComments page, and one more
        for n in range(FIRST_COMMENTS + COMMENTS_PAGE + 1):
            fake.add_comment(key, f"comment {n}", created_at=f"2024-05-01T10:{n // 60:02d}:{n % 60:02d}.000Z")
    else:  # get_issue's first 50, a whole IssueInverseRelations page, and one more
        for n in range(50 + RELATIONS_PAGE + 1):
            fake.add_relation(fake.add_issue("ENG", f"Related {n}", labels=[])["identifier"], key)

    def alter(data: dict[str, Any], variables: dict[str, Any]) -> None:
        data["issue"][field]["pageInfo"] = page_info(variables)

    _altered_answers(monkeypatch, operation, alter)
    fake.requests.clear()

    with pytest.raises(ProviderError) as caught:
        provider.get_issue(key)

    assert caught.value.provider == "linear"
    assert caught.value.message == (
        f"Linear {operation} failed: the page says more {what} follow but {problem}"
    )
    assert fake.operations()[-1] == operation  # nothing more is read of a broken answer


def test_get_issue_unknown_is_not_found(fake: FakeLinear, provider: LinearProvider) -> None:
    with pytest.raises(NotFound):
        provider.get_issue("ENG-999")


def test_post_comment_sends_markdown_unchanged(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG")["identifier"]
    body = "⚠️ Implementation failed: `git clone` failed (exit 128)\n\n- one\n- two"
    comment = provider.post_comment(key, body)
    assert comment.body == body and comment.id
    assert fake.comments_of(key) == [body]
    sent = [r for r in fake.requests if r.operation == "CreateComment"]
    assert sent[-1].variables == {"issueId": fake.issue(key)["id"], "body": body}


# -- stages -------------------------------------------------------------------------------------


def test_stage_labels_follow_the_lifecycle_and_keep_other_labels(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_label("customer", None)  # a workspace label
    key = fake.add_issue("ENG", labels=["AI-Implement", "bug", "customer"])["identifier"]

    expected = {
        Stage.PLANNING: "AI-Planning",
        Stage.PLAN_COMPLETE: "Plan-Complete",
        Stage.IMPLEMENTING: "AI-Working",
        Stage.PR_OPENED: "Ready for Review",
    }
    for stage, label in expected.items():
        provider.set_stage(key, stage)
        assert set(fake.labels_of(key)) == {"bug", "customer", label}, stage
        assert provider.get_issue(key).stage is stage

    fake.add_labels(key, "AI-Implement")  # a person approves / re-triggers
    provider.set_stage(key, Stage.IMPLEMENTATION_FAILED)
    assert set(fake.labels_of(key)) == {"bug", "customer"}
    issue = provider.get_issue(key)
    assert issue.stage is None and not issue.triggered


def test_set_stage_changes_only_our_labels_by_id(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG", labels=["AI-Implement", "bug"])["identifier"]
    provider.set_stage(key, Stage.IMPLEMENTING)
    update = [r for r in fake.requests if r.operation == "UpdateIssueLabels"][-1]
    # added/removed ids, never the full label list: a label a person adds meanwhile survives
    assert set(update.variables) == {"id", "added", "removed"}
    assert update.variables["removed"] == [fake._label_named("AI-Implement", fake.team("ENG")["id"])["id"]]


def test_set_stage_twice_sends_no_second_update(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG")["identifier"]
    provider.set_stage(key, Stage.IMPLEMENTING)
    fake.requests.clear()
    provider.set_stage(key, Stage.IMPLEMENTING)
    assert fake.operations() == ["IssueLabelsOfIssue"]


def test_missing_labels_are_created_once_in_the_team(fake: FakeLinear, provider: LinearProvider) -> None:
    first = fake.add_issue("ENG")["identifier"]
    second = fake.add_issue("ENG")["identifier"]
    provider.set_stage(first, Stage.IMPLEMENTING)
    provider.set_stage(second, Stage.IMPLEMENTING)
    provider.set_stage(first, Stage.PR_OPENED)
    provider.set_stage(second, Stage.PR_OPENED)
    assert fake.created_labels == [("AI-Working", "ENG"), ("Ready for Review", "ENG")]
    assert fake.operations().count("LabelsByName") == 2  # then cached
    # a fresh provider (another process) finds the labels instead of creating duplicates
    other = LinearProvider(make_context(fake.config()))
    third = fake.add_issue("ENG")["identifier"]
    other.set_stage(third, Stage.IMPLEMENTING)
    assert len(fake.created_labels) == 2
    assert fake.labels_of(third) == ["AI-Working"]


def test_existing_workspace_label_is_used_not_duplicated(fake: FakeLinear, provider: LinearProvider) -> None:
    workspace = fake.add_label("AI-Working", None)
    key = fake.add_issue("ENG")["identifier"]
    provider.set_stage(key, Stage.IMPLEMENTING)
    assert fake.created_labels == []
    assert fake.issue(key)["labelIds"] == [workspace["id"]]


def test_label_named_in_another_case_is_used(fake: FakeLinear, provider: LinearProvider) -> None:
    lower = fake.add_label("ai-working", "ENG")
    key = fake.add_issue("ENG")["identifier"]
    provider.set_stage(key, Stage.IMPLEMENTING)
    assert fake.created_labels == []
    assert fake.issue(key)["labelIds"] == [lower["id"]]
    assert provider.get_issue(key).stage is Stage.IMPLEMENTING


def test_label_created_concurrently_elsewhere_is_used(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG")["identifier"]
    # between our lookup and our create, another process creates the label: Linear refuses ours
    fake.before("CreateLabel", lambda: fake.add_label("AI-Working", "ENG"))
    provider.set_stage(key, Stage.IMPLEMENTING)
    assert fake.labels_of(key) == ["AI-Working"]
    assert fake.created_labels == []
    assert [r.status for r in fake.requests if r.operation == "CreateLabel"] == [200]
    assert fake.operations().count("LabelsByName") == 2


def test_label_deleted_and_created_again_in_linear_is_looked_up_again(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    first = fake.add_issue("ENG")["identifier"]
    second = fake.add_issue("ENG")["identifier"]
    provider.set_stage(first, Stage.IMPLEMENTING)  # creates AI-Working; its id is cached
    old = fake._label_named("AI-Working", fake.team("ENG")["id"])
    fake.delete_label(old["id"])  # a person deletes the label, then creates it again: a new id
    new = fake.add_label("AI-Working", "ENG")
    fake.requests.clear()

    provider.set_stage(second, Stage.IMPLEMENTING)

    assert fake.issue(second)["labelIds"] == [new["id"]]
    assert fake.operations() == [
        "IssueLabelsOfIssue",
        "UpdateIssueLabels",  # refused: the cached id is gone
        "IssueLabelsOfIssue",
        "LabelsByName",
        "UpdateIssueLabels",
    ]
    assert fake.created_labels == [("AI-Working", "ENG")]  # the new label is used, not duplicated
    fake.requests.clear()
    provider.set_stage(first, Stage.IMPLEMENTING)  # the new id is cached in turn
    assert fake.operations() == ["IssueLabelsOfIssue", "UpdateIssueLabels"]
    assert fake.issue(first)["labelIds"] == [new["id"]]


def test_a_label_a_person_renamed_is_taken_off_and_its_name_made_anew(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """A person renames "AI-Working": the process kept adding its cached id (now "AI Working (old)")
    and never took it off at the next stage (labels were removed by name), while a fresh process
    made a new "AI-Working": the processes disagreed."""
    first = fake.add_issue("ENG")["identifier"]
    second = fake.add_issue("ENG")["identifier"]
    provider.set_stage(first, Stage.IMPLEMENTING)  # creates AI-Working; its id is cached
    old = fake._label_named("AI-Working", fake.team("ENG")["id"])
    old["name"] = "AI Working (old)"

    provider.set_stage(second, Stage.IMPLEMENTING)
    assert fake.labels_of(second) == ["AI-Working"]  # made anew, under its name
    provider.set_stage(first, Stage.PR_OPENED)
    assert fake.labels_of(first) == ["Ready for Review"]  # the renamed one taken off too


def test_label_refused_again_after_a_fresh_lookup_is_not_found(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    key = fake.add_issue("ENG")["identifier"]
    fake.fail("UpdateIssueLabels", "Entity not found: IssueLabel", code="INVALID_INPUT", times=3)
    with pytest.raises(NotFound):
        provider.set_stage(key, Stage.IMPLEMENTING)
    assert fake.operations().count("UpdateIssueLabels") == 2  # tried once more, not in a loop


@pytest.mark.parametrize("retired_in", ["ENG", None])
def test_an_active_label_is_used_rather_than_a_retired_one_of_its_name(
    fake: FakeLinear, provider: LinearProvider, retired_in: str | None
) -> None:
    """A retired label cannot be applied to an issue: the team's or the workspace's active label
    of that name is, whichever of them is retired."""
    fake.add_label("AI-Working", retired_in, retired=True)
    active = fake.add_label("AI-Working", None if retired_in else "ENG")
    key = fake.add_issue("ENG")["identifier"]

    provider.set_stage(key, Stage.IMPLEMENTING)

    assert fake.issue(key)["labelIds"] == [active["id"]]
    assert fake.created_labels == [] and "RestoreLabel" not in fake.operations()


def test_a_retired_stage_label_is_restored_not_made_twice(fake: FakeLinear, provider: LinearProvider) -> None:
    """Only a retired label of the name exists: it is restored (``issueLabelRestore``), as the schema
    offers, rather than a second label made under a retired one's name."""
    retired = fake.add_label("AI-Working", "ENG", retired=True)
    key = fake.add_issue("ENG")["identifier"]

    provider.set_stage(key, Stage.IMPLEMENTING)

    assert fake.issue(key)["labelIds"] == [retired["id"]]
    assert retired["retiredAt"] is None
    assert fake.created_labels == []
    assert fake.operations() == ["IssueLabelsOfIssue", "LabelsByName", "RestoreLabel", "UpdateIssueLabels"]


def test_a_stage_label_retired_after_it_was_cached_is_restored(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    first = fake.add_issue("ENG")["identifier"]
    second = fake.add_issue("ENG")["identifier"]
    provider.set_stage(first, Stage.IMPLEMENTING)  # creates AI-Working; its id is cached
    label = fake.retire_label(fake.issue(first)["labelIds"][0])
    fake.requests.clear()

    provider.set_stage(second, Stage.IMPLEMENTING)

    assert fake.issue(second)["labelIds"] == [label["id"]] and label["retiredAt"] is None
    assert fake.operations() == [
        "IssueLabelsOfIssue",
        "UpdateIssueLabels",  # refused: the cached label is retired
        "IssueLabelsOfIssue",
        "LabelsByName",
        "RestoreLabel",
        "UpdateIssueLabels",
    ]
    assert [r.status for r in fake.requests if r.operation == "UpdateIssueLabels"] == [200, 200]
    assert fake.created_labels == [("AI-Working", "ENG")]


def test_a_retired_stage_label_on_the_issue_is_swapped_for_the_active_one(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """The issue carries a retired "AI-Working" (put on before it was retired) and a workspace
    label of the name is active: the stage is shown by the active one, the retired one taken off."""
    key = fake.add_issue("ENG", labels=["AI-Working", "bug"])["identifier"]
    retired = fake.retire_label(fake._label_named("AI-Working", fake.team("ENG")["id"])["id"])
    active = fake.add_label("AI-Working", None)

    provider.set_stage(key, Stage.IMPLEMENTING)

    labels = fake.issue(key)["labelIds"]
    assert active["id"] in labels and retired["id"] not in labels
    assert fake.labels_of(key) == ["AI-Working", "bug"] and retired["retiredAt"] is not None


def test_a_retired_stage_label_on_the_issue_is_restored_when_it_is_the_only_one(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    key = fake.add_issue("ENG", labels=["AI-Working"])["identifier"]
    retired = fake.retire_label(fake.issue(key)["labelIds"][0])

    provider.set_stage(key, Stage.IMPLEMENTING)

    assert fake.issue(key)["labelIds"] == [retired["id"]] and retired["retiredAt"] is None
    assert "UpdateIssueLabels" not in fake.operations()  # it is on the issue already


def test_a_retired_label_that_cannot_be_restored_is_a_clear_error(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_label("AI-Working", None, retired=True)  # a workspace label: restoring it may be refused
    key = fake.add_issue("ENG")["identifier"]
    fake.fail("RestoreLabel", "Forbidden", code="FORBIDDEN")

    with pytest.raises(ProviderError, match="label 'AI-Working' is retired") as caught:
        provider.set_stage(key, Stage.IMPLEMENTING)

    assert "restore it in Linear" in caught.value.message
    assert fake.created_labels == [] and fake.labels_of(key) == ["AI-Implement"]


def test_label_of_another_team_is_not_used(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_team("OPS")
    fake.add_label("AI-Working", "OPS")
    key = fake.add_issue("ENG")["identifier"]
    provider.set_stage(key, Stage.IMPLEMENTING)
    assert fake.created_labels == [("AI-Working", "ENG")]
    assert fake.labels_of(key) == ["AI-Working"]


def test_set_stage_unknown_issue_is_not_found(fake: FakeLinear, provider: LinearProvider) -> None:
    with pytest.raises(NotFound):
        provider.set_stage("ENG-404", Stage.IMPLEMENTING)


def test_set_stage_triggered_is_refused(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG")["identifier"]
    with pytest.raises(ProviderError):
        provider.set_stage(key, Stage.TRIGGERED)


# -- done ---------------------------------------------------------------------------------------


def test_mark_done_uses_the_first_completed_state_by_position(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_state("ENG", "Released", "completed", 10.0)  # listed first by the fake, but later in the flow
    key = fake.add_issue("ENG")["identifier"]
    other = fake.add_issue("ENG")["identifier"]
    provider.mark_done(key)
    provider.mark_done(other)
    assert fake.state_of(key) == "Done" and fake.state_of(other) == "Done"
    assert fake.operations().count("TeamDoneStates") == 1  # cached per team


def test_mark_done_leaves_an_issue_already_in_another_completed_state(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    # Linear's GitHub integration (or a person) may close the issue as "Released" on the merge
    fake.add_state("ENG", "Released", "completed", 10.0)
    key = fake.add_issue("ENG")["identifier"]
    fake.set_state(key, "Released")
    fake.requests.clear()

    provider.mark_done(key)

    assert fake.state_of(key) == "Released"
    assert fake.operations() == ["IssueRef"]


def test_done_state_deleted_in_linear_is_looked_up_again(fake: FakeLinear, provider: LinearProvider) -> None:
    key = fake.add_issue("ENG")["identifier"]
    other = fake.add_issue("ENG")["identifier"]
    provider.mark_done(key)  # the team's Done state is cached
    fake.set_state(key, "In Review")
    fake.delete_state("ENG", "Done")  # a person replaces Done with another completed state
    fake.add_state("ENG", "Shipped", "completed", 4.0)
    fake.requests.clear()

    provider.mark_done(other)

    assert fake.state_of(other) == "Shipped"
    assert fake.operations() == ["IssueRef", "SetIssueState", "TeamDoneStates", "SetIssueState"]


def test_mark_done_after_the_issue_moved_team(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_team("OPS")
    key = fake.add_issue("ENG")["identifier"]
    list(provider.iter_triggered(["ENG"]))  # the provider has seen the issue in ENG
    with fake.lock:
        fake.issue(key)["teamId"] = fake.team("OPS")["id"]
        fake.issue(key)["labelIds"] = []
        fake.issue(key)["stateId"] = next(
            s["id"] for s in fake.store.states.values() if s["teamId"] == fake.team("OPS")["id"]
        )
    provider.mark_done(key)
    done = fake.store.states[fake.issue(key)["stateId"]]
    assert done["name"] == "Done" and done["teamId"] == fake.team("OPS")["id"]


def test_mark_done_without_completed_state_is_a_clear_error(fake: FakeLinear) -> None:
    fake.add_team("ODD", states=[("Todo", "unstarted"), ("Closed", "canceled")])
    provider = LinearProvider(make_context(fake.config()))
    key = fake.add_issue("ODD")["identifier"]
    with pytest.raises(ProviderError, match="no completed workflow state"):
        provider.mark_done(key)


# -- configuration ------------------------------------------------------------------------------


def test_api_key_is_sent_bare(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_issue("ENG")
    list(provider.iter_triggered(["ENG"]))
    assert fake.requests[-1].authorization == fake.api_key


def test_oauth_token_is_sent_as_bearer() -> None:
    with FakeLinear(oauth_token="oauth-token-1") as fake:
        fake.add_team("ENG")
        fake.add_issue("ENG")
        provider = LinearProvider(
            make_context({"AIIMPL_LINEAR_API_URL": fake.url, "AIIMPL_LINEAR_OAUTH_TOKEN": "oauth-token-1"})
        )
        assert len([i for p in provider.iter_triggered(["ENG"]) for i in p.issues]) == 1
        assert fake.requests[-1].authorization == "Bearer oauth-token-1"
        assert fake.validation_errors == []


def test_api_key_from_a_stored_secret(fake: FakeLinear) -> None:
    asked: list[tuple[str, str | None]] = []

    def secret(name: str, scope: str | None = None) -> str | None:
        asked.append((name, scope))
        return fake.api_key if name == "LINEAR_API_KEY" else None

    provider = LinearProvider(make_context({"AIIMPL_LINEAR_API_URL": fake.url}, secret=secret))
    assert provider.is_configured()
    fake.add_issue("ENG")
    assert len([i for p in provider.iter_triggered(["ENG"]) for i in p.issues]) == 1
    assert set(asked) == {("LINEAR_API_KEY", None)}
    assert len(asked) == 1  # reused for a while, not read from the database on every call


def test_stored_secret_pasted_with_its_line_break_is_the_same_key(fake: FakeLinear) -> None:
    # the variable is read without the spaces around it; the stored secret is read the same way
    stored = {"LINEAR_API_KEY": f" {fake.api_key}\n"}
    provider = LinearProvider(
        make_context({"AIIMPL_LINEAR_API_URL": fake.url}, secret=lambda name, scope=None: stored.get(name))
    )
    fake.add_issue("ENG")
    assert len([i for p in provider.iter_triggered(["ENG"]) for i in p.issues]) == 1
    assert fake.requests[-1].authorization == fake.api_key


def test_stored_secret_of_spaces_alone_is_not_configured(fake: FakeLinear) -> None:
    provider = LinearProvider(
        make_context({"AIIMPL_LINEAR_API_URL": fake.url}, secret=lambda name, scope=None: " \n")
    )
    assert provider.is_configured() is False


def test_stored_secret_is_read_again_after_a_while(fake: FakeLinear, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiimpl_linear.provider as provider_mod

    stored = {"value": "lin_api_old"}
    provider = LinearProvider(
        make_context({"AIIMPL_LINEAR_API_URL": fake.url}, secret=lambda name, scope=None: stored["value"])
    )
    with pytest.raises(ProviderError):
        list(provider.iter_triggered(["ENG"]))  # the old key is refused
    stored["value"] = fake.api_key  # an operator stores the new key
    monkeypatch.setattr(provider_mod, "STORED_SECRET_TTL", 0.0)
    assert list(provider.iter_triggered(["ENG"]))[-1].complete
    assert fake.requests[-1].authorization == fake.api_key


def test_not_configured(fake: FakeLinear) -> None:
    provider = LinearProvider(make_context({"AIIMPL_LINEAR_API_URL": fake.url}))
    assert provider.is_configured() is False
    with pytest.raises(ProviderNotConfigured):
        list(provider.iter_triggered(["ENG"]))
    assert fake.requests == []


def test_wrong_key_is_an_error_naming_the_operation_without_the_key(fake: FakeLinear) -> None:
    provider = LinearProvider(
        make_context({**fake.config(), "AIIMPL_LINEAR_API_KEY": "lin_api_wrong_secret"})
    )
    with pytest.raises(ProviderError) as err:
        list(provider.iter_triggered(["ENG"]))
    assert "TriggeredIssues" in err.value.message and "lin_api_wrong_secret" not in err.value.message


@pytest.mark.parametrize(
    ("ticketing", "message"),
    [
        ({"provider": "linear", "teamId": "x"}, "ticketing.teamId is not a Linear setting"),
        ({"provider": "linear", "jql": "project = ENG"}, "ticketing.jql is not a Linear setting"),
        ("linear", "ticketing must be an object"),
    ],
)
def test_validate_mapping_names_the_field(provider: LinearProvider, ticketing: Any, message: str) -> None:
    with pytest.raises(ProviderConfigError, match=message):
        provider.validate_mapping({"teamKey": "ENG", "ticketing": ticketing})


def test_validate_mapping_checks_the_team_key_shape(provider: LinearProvider) -> None:
    with pytest.raises(ProviderConfigError, match="teamKey must be a Linear team key"):
        provider.validate_mapping({"teamKey": "ENG-TEAM", "ticketing": {"provider": "linear"}})
    with pytest.raises(ProviderConfigError, match="teamKey must be a Linear team key"):
        provider.validate_mapping({"teamKey": "ENG\n", "ticketing": {"provider": "linear"}})
    provider.validate_mapping({"teamKey": "ENG", "ticketing": {"provider": "linear"}})
    provider.validate_mapping({"teamKey": "ENG-TEAM", "ticketing": {"provider": "jira"}})  # not ours


def test_bad_page_size_is_a_config_error(fake: FakeLinear) -> None:
    provider = LinearProvider(make_context({**fake.config(), "AIIMPL_LINEAR_PAGE_SIZE": "500"}))
    with pytest.raises(ProviderConfigError, match="AIIMPL_LINEAR_PAGE_SIZE must be between 1 and 250"):
        list(provider.iter_triggered(["ENG"]))


def test_post_comment_on_a_deleted_issue_is_not_found(fake: FakeLinear, provider: LinearProvider) -> None:
    # Linear answers HTTP 200 with "Entity not found": the outbox gives such a write up early
    with pytest.raises(NotFound):
        provider.post_comment("ENG-999", "a comment for a deleted issue")
