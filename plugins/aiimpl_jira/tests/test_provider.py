"""The ``jira`` ticketing provider against the fake Jira: search, issues, links, stages, comments."""

from __future__ import annotations

import base64

import pytest
from aiimpl_core.errors import NotFound, ProviderConfigError, ProviderError, ProviderNotConfigured
from aiimpl_core.testing.contract import TicketingProviderContract, make_context, sample_mapping
from aiimpl_core.types import Stage

from aiimpl_jira.adf import adf_text, markdown_to_adf
from aiimpl_jira.config import JiraSettings
from aiimpl_jira.provider import (
    MAX_COMMENT_CHARS,
    TRUNCATED_NOTICE,
    JiraProvider,
    fit_comment,
    trigger_jql,
    utf16_len,
)
from aiimpl_jira.testing.fake_jira import FakeJira, adf_violations


class TestJiraContract(TicketingProviderContract):
    """The core's ticketing contract, against the fake Jira."""

    @pytest.fixture
    def ticketing_provider(self, provider: JiraProvider) -> JiraProvider:
        return provider

    @pytest.fixture
    def contract_issue_key(self, jira: FakeJira) -> str:
        jira.add_issue("ENG-1", summary="Contract issue", description="Please *do* it")
        return "ENG-1"


# -- search ------------------------------------------------------------------------------------


def test_iter_triggered_pages_with_next_page_token(jira: FakeJira, provider: JiraProvider) -> None:
    for n in range(1, 8):
        jira.add_issue(f"ENG-{n}", summary=f"Issue {n}")
    jira.add_issue("ENG-8", status="To Do")
    provider.page_size = 3

    pages = list(provider.iter_triggered(["ENG"]))

    assert [len(p.issues) for p in pages] == [3, 3, 1]
    assert [p.complete for p in pages] == [False, False, True]
    assert [i.key for p in pages for i in p.issues] == [f"ENG-{n}" for n in range(1, 8)]
    searches = jira.requests_to("POST", "/rest/api/3/search/jql")
    assert len(searches) == 3, "one call per page"
    assert "nextPageToken" not in searches[0].json
    assert (
        searches[1].json["nextPageToken"]
        and searches[2].json["nextPageToken"] != searches[1].json["nextPageToken"]
    )
    assert set(searches[0].json["fields"]) >= {
        "summary",
        "description",
        "status",
        "project",
        "labels",
        "issuelinks",
    }
    assert all(r.path.endswith("/search/jql") for r in jira.requests), "never a call per issue"


def test_iter_triggered_selects_ready_issues_of_the_searched_projects(jira: FakeJira) -> None:
    jira.add_issue("ENG-1")
    jira.add_issue("ENG-2", status="Planning")
    jira.add_issue("OPS-1")
    jira.add_issue("WEB-1")
    provider = JiraProvider(make_context(jira.config(AIIMPL_JIRA_PROJECTS="ENG, WEB")))

    keys = [i.key for p in provider.iter_triggered(["ENG", "OPS"]) for i in p.issues]

    assert keys == ["ENG-1"], "OPS is mapped but not in AIIMPL_JIRA_PROJECTS; WEB is not mapped"
    jql = jira.requests_to("POST", "/search/jql")[0].json["jql"]
    assert jql.startswith('status = "Ready" AND project in ("ENG")')


def test_iter_triggered_adds_the_mapping_jql_clause(jira: FakeJira) -> None:
    jira.add_issue("ENG-1", labels=["backend"])
    jira.add_issue("ENG-2", labels=["frontend"])
    jira.add_issue("OPS-1")
    mappings = [
        sample_mapping(team_key="ENG", ticketing={"provider": "jira", "jql": "labels = backend"}),
        sample_mapping(team_key="OPS", ticketing={"provider": "jira"}),
    ]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))

    keys = sorted(i.key for p in provider.iter_triggered(["ENG", "OPS"]) for i in p.issues)

    assert keys == ["ENG-1", "OPS-1"]


def test_a_mapping_of_a_project_jira_does_not_show_leaves_the_others_polled(
    jira: FakeJira, caplog: pytest.LogCaptureFixture
) -> None:
    """A mapping naming a project deleted, renamed or that the account may not browse made Jira
    refuse the whole search ("The value 'GONE' does not exist for the field 'project'."): no
    issue of any Jira project was dispatched until the mapping was fixed."""
    jira.add_issue("ENG-1")
    jira.add_issue("OPS-1", labels=["x"])
    mappings = [
        sample_mapping(team_key="ENG", ticketing={"provider": "jira"}),
        sample_mapping(team_key="GONE", ticketing={"provider": "jira"}),
        sample_mapping(team_key="OLD", ticketing={"provider": "jira", "jql": "labels = x"}),
        sample_mapping(team_key="OPS", ticketing={"provider": "jira", "jql": "labels = x"}),
    ]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))

    with caplog.at_level("WARNING"):
        pages = list(provider.iter_triggered(["ENG", "GONE", "OLD", "OPS"]))

    assert sorted(i.key for p in pages for i in p.issues) == ["ENG-1", "OPS-1"]
    # (a listing that left projects out says nothing of which of their issues carry the trigger)
    assert [p.complete for p in pages] == [False]
    first, second = (r.json["jql"] for r in jira.requests_to("POST", "/search/jql"))
    assert '"GONE"' in first and '"OLD"' in first and '"GONE"' not in second and '"OLD"' not in second
    [said] = [r.getMessage() for r in caplog.records if "does not know the project" in r.getMessage()]
    assert said.startswith("Jira does not know the project of the mappings GONE, OLD, or does not show it")

    # none it knows: one empty page, incomplete, and no search more
    pages = list(provider.iter_triggered(["GONE"]))
    assert [(p.issues, p.complete) for p in pages] == [((), False)]
    assert len(jira.requests_to("POST", "/search/jql")) == 3


def test_a_stored_clause_that_would_widen_the_search_leaves_its_project_out(
    jira: FakeJira, caplog: pytest.LogCaptureFixture
) -> None:
    """A clause saved before it was checked as JQL reads it (or written to the database) that
    closes the parentheses it is put in selected every Ready issue of the site, in the poll and
    for a webhook's issue: its project is left out of both, with a warning."""
    jira.add_issue("ENG-1", labels=["y"])
    jira.add_issue("WEB-1")
    jira.add_issue("OPS-1", labels=["x"])
    mappings = [
        sample_mapping(team_key="ENG",
                       ticketing={"provider": "jira", "jql": "labels = x) OR (status = Ready"}),
        sample_mapping(team_key="OPS", ticketing={"provider": "jira", "jql": "labels = x"}),
    ]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))
    with caplog.at_level("WARNING"):
        pages = list(provider.iter_triggered(["ENG", "OPS"]))
        assert [i.key for p in pages for i in p.issues] == ["OPS-1"] and not pages[-1].complete
        [search] = jira.requests_to("POST", "/search/jql")
        assert "OR (status = Ready" not in search.json["jql"]
        assert provider.get_issue("ENG-1").triggered is False
    said = [r.getMessage() for r in caplog.records]
    assert ("the JQL clause of mapping ENG (ticketing.jql) has unbalanced quotes or parentheses: its issues "
            "are not polled; fix the clause") in said
    assert any(m.startswith("the JQL clause of mapping ENG") and "ENG-1 is not taken as triggered" in m
               for m in said)
    assert provider.get_issue("OPS-1").triggered is True


def test_the_fake_refuses_a_search_naming_a_project_it_does_not_have(jira: FakeJira) -> None:
    jira.add_project("ENG")
    provider = JiraProvider(make_context(jira.config()))
    with pytest.raises(ProviderError) as info:
        next(provider.client.search('project in ("ENG", "NOPE") AND project != "ALSO"', fields=["id"]))
    assert info.value.status == 400
    assert info.value.detail["errorMessages"] == [
        "The value 'NOPE' does not exist for the field 'project'.",
        "The value 'ALSO' does not exist for the field 'project'.",
    ]


def test_iter_triggered_without_projects_asks_nothing(jira: FakeJira, provider: JiraProvider) -> None:
    pages = list(provider.iter_triggered([]))
    assert len(pages) == 1 and pages[0].complete and not pages[0].issues
    assert jira.requests == []


def test_the_issue_links_lead_to_the_site_when_the_api_base_is_not_it(jira: FakeJira) -> None:
    """With an OAuth 2.0 token the API's base is https://api.atlassian.com/ex/jira/<cloudId>,
    which has no /browse pages: every comment's and pull request's link to the issue was dead."""
    jira.add_issue("ENG-1")
    site = "https://acme.atlassian.net"
    provider = JiraProvider(make_context(jira.config(AIIMPL_JIRA_SITE_URL=site + "/")))
    assert provider.get_issue("ENG-1").url == f"{site}/browse/ENG-1"
    [page] = provider.iter_triggered(["ENG"])
    assert [i.url for i in page.issues] == [f"{site}/browse/ENG-1"]
    blank = JiraProvider(make_context(jira.config(AIIMPL_JIRA_SITE_URL=" ")))
    assert blank.get_issue("ENG-1").url == f"{jira.url}/browse/ENG-1"


def test_trigger_jql_quotes_keys_and_clauses() -> None:
    jql = trigger_jql(["ENG", 'A"B'], {"ENG": "labels = x"})
    assert jql == (
        'status = "Ready" AND (project in ("A\\"B") OR (project = "ENG" AND (labels = x))) '
        "ORDER BY created ASC, key ASC"
    )


def test_search_retries_after_429_with_retry_after(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    jira.fail_next("POST", "/search/jql", 429, headers={"Retry-After": "0"})

    keys = [i.key for p in provider.iter_triggered(["ENG"]) for i in p.issues]

    assert keys == ["ENG-1"]
    assert [r.status for r in jira.requests_to("POST", "/search/jql")] == [429, 200]


# -- issues ------------------------------------------------------------------------------------


def test_issue_fields_description_and_links(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue(
        "ENG-1",
        summary="Add export",
        labels=["api"],
        description="Export **CSV**:\n\n1. endpoint\n2. tests\n\n```sql\nselect 1;\n```",
    )
    jira.add_issue("ENG-2", status="Implementing", summary="Schema change")
    jira.add_issue("ENG-3", status="Done", summary="Old blocker")
    jira.add_issue("ENG-4", status="To Do")
    jira.link_blocks("ENG-2", "ENG-1")  # ENG-2 blocks ENG-1: open
    jira.link_blocks("ENG-3", "ENG-1")  # done: not open
    jira.link_blocks("ENG-1", "ENG-4")  # ENG-1 blocks ENG-4: not a blocker of ENG-1
    jira.link_blocks("ENG-4", "ENG-1", type_name="Relates")  # another link type

    issue = provider.get_issue("ENG-1")

    assert issue.title == "Add export" and issue.team_key == "ENG" and issue.labels == ("api",)
    assert issue.triggered and issue.state == "Ready" and issue.stage is None
    assert issue.url == f"{jira.url}/browse/ENG-1"
    assert issue.description == "Export **CSV**:\n\n1. endpoint\n2. tests\n\n```sql\nselect 1;\n```"
    assert [(b.key, b.title, b.open) for b in issue.blocked_by] == [
        ("ENG-2", "Schema change", True),
        ("ENG-3", "Old blocker", False),
    ]
    assert [b.key for b in issue.open_blockers] == ["ENG-2"]
    assert [(b.key, b.open) for b in provider.get_issue("ENG-4").blocked_by] == [("ENG-1", True)]


def _nested_lists(depth: int) -> dict:
    node: dict = {"type": "paragraph", "content": [{"type": "text", "text": "deepest"}]}
    for _ in range(depth):
        first = {"type": "paragraph", "content": [{"type": "text", "text": "i"}]}
        item = {"type": "listItem", "content": [first, node]}
        node = {"type": "bulletList", "content": [item]}
    return {"type": "doc", "version": 1, "content": [node]}


def test_a_description_nested_past_the_stack_fails_no_listing(jira: FakeJira, provider: JiraProvider) -> None:
    # Jira's API stores such a description; read recursively it raised RecursionError, and the
    # poll listed none of the project's issues
    jira.add_issue("ENG-1", description=_nested_lists(200))
    jira.add_issue("ENG-2", description="plain")
    [page] = provider.iter_triggered(["ENG"])
    assert [i.key for i in page.issues] == ["ENG-1", "ENG-2"]
    assert page.issues[0].description.endswith("deepest")


def test_get_issue_triggers_only_in_the_searched_projects(jira: FakeJira) -> None:
    """As the poll: a mapped project, limited to ``AIIMPL_JIRA_PROJECTS`` when that is set."""
    for key in ("ENG-1", "OPS-1", "WEB-1"):
        jira.add_issue(key, summary=f"Issue {key}")
    mappings = [
        sample_mapping(team_key="ENG", ticketing={"provider": "jira"}),
        sample_mapping(team_key="OPS", ticketing={"provider": "jira"}),
    ]
    provider = JiraProvider(make_context(jira.config(AIIMPL_JIRA_PROJECTS="ENG"), mappings=lambda: mappings))

    issues = {key: provider.get_issue(key) for key in ("ENG-1", "OPS-1", "WEB-1")}

    assert {key: issue.triggered for key, issue in issues.items()} == {
        "ENG-1": True,
        "OPS-1": False,  # mapped, but not in AIIMPL_JIRA_PROJECTS
        "WEB-1": False,  # not mapped
    }
    assert issues["OPS-1"].title == "Issue OPS-1" and issues["OPS-1"].state == "Ready", "still read"
    assert jira.requests_to("POST", "/search/jql") == [], "no clause: no search"


def test_get_issue_triggers_only_when_the_mapping_jql_matches(jira: FakeJira) -> None:
    ai = jira.add_issue("ENG-1", labels=["ai"])
    jira.add_issue("ENG-2", labels=["manual"])
    jira.add_issue("ENG-3", status="Planning", labels=["manual"])
    mappings = [sample_mapping(team_key="ENG", ticketing={"provider": "jira", "jql": "labels = ai"})]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))

    assert provider.get_issue("ENG-1").triggered is True
    assert provider.get_issue("ENG-2").triggered is False
    assert provider.get_issue("ENG-3").triggered is False

    searches = jira.requests_to("POST", "/search/jql")
    assert len(searches) == 2, "one search per issue in Ready, none for the others"
    assert searches[0].json == {
        "jql": 'key = "ENG-1" AND (labels = ai)',
        "fields": ["id"],
        "maxResults": 1,
        "reconcileIssues": [int(ai.id)],
    }


def test_get_issue_names_an_invalid_mapping_clause(jira: FakeJira) -> None:
    jira.add_issue("ENG-1")
    mappings = [sample_mapping(team_key="ENG", ticketing={"provider": "jira", "jql": "sprintz = 3"})]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))
    with pytest.raises(ProviderError) as err:
        provider.get_issue("ENG-1")
    assert str(err.value) == (
        "the JQL clause of mapping ENG (ticketing.jql) is invalid: "
        "Field 'sprintz' does not exist or you do not have permission to view it."
    )


def test_get_issue_reads_every_comment_page(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    for n in range(7):
        provider.post_comment("ENG-1", f"note {n}")

    comments = provider.get_issue("ENG-1").comments

    assert [c.body for c in comments] == [f"note {n}" for n in range(7)]
    assert jira.requests_to("GET", "/issue/ENG-1/comment"), "the embedded first page was not enough"


def test_get_issue_not_found(jira: FakeJira, provider: JiraProvider) -> None:
    with pytest.raises(NotFound):
        provider.get_issue("ENG-404")


def test_stage_statuses_read_back(jira: FakeJira, provider: JiraProvider) -> None:
    for n, status in enumerate(
        ["Planning", "Plan Approved", "Implementing", "PR Ready", "Planning Failed", "Implementation Failed"],
        start=1,
    ):
        jira.add_issue(f"ENG-{n}", status=status)
    stages = [provider.get_issue(f"ENG-{n}").stage for n in range(1, 7)]
    assert stages == [
        Stage.PLANNING,
        Stage.PLAN_COMPLETE,
        Stage.IMPLEMENTING,
        Stage.PR_OPENED,
        Stage.PLANNING_FAILED,
        Stage.IMPLEMENTATION_FAILED,
    ]


# -- stages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "status"),
    [
        (Stage.PLANNING, "Planning"),
        (Stage.PLAN_COMPLETE, "Plan Approved"),
        (Stage.IMPLEMENTING, "Implementing"),
        (Stage.PR_OPENED, "PR Ready"),
        (Stage.PLANNING_FAILED, "Planning Failed"),
        (Stage.IMPLEMENTATION_FAILED, "Implementation Failed"),
    ],
)
def test_set_stage_moves_to_the_status(
    jira: FakeJira, provider: JiraProvider, stage: Stage, status: str
) -> None:
    jira.add_issue("ENG-1")
    provider.set_stage("ENG-1", stage)
    assert jira.issues["ENG-1"].status == status
    posted = jira.requests_to("POST", "/issue/ENG-1/transitions")
    assert len(posted) == 1 and posted[0].json == {"transition": {"id": posted[0].json["transition"]["id"]}}


def test_set_stage_is_idempotent(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    provider.set_stage("ENG-1", Stage.PLANNING)
    provider.set_stage("ENG-1", Stage.PLANNING)
    assert len(jira.requests_to("POST", "/transitions")) == 1


def test_missing_transition_names_the_workflow_gap() -> None:
    workflow = {"Ready": ["Planning"], "Planning": ["Plan Approved", "Planning Failed"]}
    with FakeJira(workflow=workflow) as jira:
        jira.add_issue("ENG-1")
        provider = JiraProvider(make_context(jira.config()))
        provider.set_stage("ENG-1", Stage.PLANNING)
        with pytest.raises(ProviderError) as err:
            provider.set_stage("ENG-1", Stage.IMPLEMENTING)
        assert str(err.value) == "no transition from 'Planning' to 'Implementing' in the workflow of ENG-1"
        assert err.value.status == 400  # a refusal no retry changes (the outbox gives it up)
        assert jira.issues["ENG-1"].status == "Planning"
        jira.assert_clean()


def test_mark_done_prefers_done_and_is_idempotent(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1", status="PR Ready")
    provider.mark_done("ENG-1")
    assert jira.issues["ENG-1"].status == "Done", 'not "Won\'t Do", also in the done category'
    provider.mark_done("ENG-1")
    assert len(jira.requests_to("POST", "/transitions")) == 1


def test_mark_done_without_a_done_transition() -> None:
    with FakeJira(workflow={"PR Ready": ["Implementing"]}) as jira:
        jira.add_issue("ENG-1", status="PR Ready")
        provider = JiraProvider(make_context(jira.config()))
        with pytest.raises(
            ProviderError, match="no transition from 'PR Ready' to a done status in the workflow of ENG-1"
        ) as err:
            provider.mark_done("ENG-1")
        assert err.value.status == 400
        jira.assert_clean()


# -- transition screens ------------------------------------------------------------------------


def test_mark_done_sets_a_required_resolution(jira: FakeJira, provider: JiraProvider) -> None:
    jira.require_resolution("Done")
    jira.add_issue("ENG-1", status="PR Ready")
    provider.mark_done("ENG-1")
    assert jira.issues["ENG-1"].status == "Done"
    assert jira.issues["ENG-1"].values["resolution"]["name"] == "Done", "not the first, Won't Do"
    [posted] = jira.requests_to("POST", "/issue/ENG-1/transitions")
    assert posted.json["fields"] == {"resolution": {"id": jira.issues["ENG-1"].values["resolution"]["id"]}}
    # the screen's fields came with the issue's transitions: no request more than without a screen
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in jira.requests] == [
        ("GET", "ENG-1"),
        ("POST", "transitions"),
    ]
    assert jira.requests[0].query["expand"] == ["transitions,transitions.fields"]


@pytest.mark.parametrize(
    ("names", "chosen"),
    [(["Won't Fix", "Fixed", "Duplicate"], "Fixed"), (["Duplicate", "Won't Fix"], "Duplicate")],
)
def test_the_resolution_is_fixed_else_the_first_without_done(
    jira: FakeJira, provider: JiraProvider, names: list[str], chosen: str
) -> None:
    jira.require_resolution("Done", names=names)
    jira.add_issue("ENG-1", status="PR Ready")
    provider.set_stage("ENG-1", Stage.DONE)
    assert jira.issues["ENG-1"].values["resolution"]["name"] == chosen


def _component_area(jira: FakeJira) -> list[dict[str, str]]:
    """A required select field on the Planning screen, whose default is its option "Frontend"; its
    options."""
    options = [{"id": "20001", "value": "Backend"}, {"id": "20002", "value": "Frontend"}]
    jira.add_screen_field(
        "Planning",
        "customfield_10060",
        "Component area",
        schema={"type": "option", "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select"},
        allowed_values=options,
        default=options[1],
    )
    return options


def test_a_required_field_with_a_default_gets_it(jira: FakeJira, provider: JiraProvider) -> None:
    _component_area(jira)
    jira.add_screen_field("Planning", "customfield_10061", "Notes", required=False)
    jira.add_issue("ENG-1")
    provider.set_stage("ENG-1", Stage.PLANNING)
    assert jira.issues["ENG-1"].status == "Planning"
    [posted] = jira.requests_to("POST", "/issue/ENG-1/transitions")
    assert posted.json["fields"] == {"customfield_10060": {"id": "20002"}}, "optional fields stay unset"


@pytest.mark.parametrize("allowed", [None, [{"id": "20001", "value": "Backend"}]])
def test_a_required_field_without_a_default_is_refused_by_name(
    jira: FakeJira, provider: JiraProvider, allowed: list[dict[str, str]] | None
) -> None:
    jira.add_screen_field("Planning", "customfield_10050", "Root cause", allowed_values=allowed)
    jira.add_issue("ENG-1")
    with pytest.raises(ProviderError) as err:
        provider.set_stage("ENG-1", Stage.PLANNING)
    assert err.value.status == 400, "refused: no retry fills the field in"
    assert str(err.value) == (
        "the transition 'Move to Planning' of ENG-1 (from 'Ready' to 'Planning') requires the field "
        "'Root cause' (customfield_10050), which is empty on the issue and has no default value to fill "
        "in: fill it in on the issue, give the field a default value or take it off the transition's "
        "screen in Jira"
    )
    assert jira.issues["ENG-1"].status == "Ready"
    assert jira.requests_to("POST", "/transitions") == []


def test_a_required_field_the_issue_already_has_is_left_as_it_is(
    jira: FakeJira, provider: JiraProvider
) -> None:
    """Summary and a custom field set earlier are required on the screen without a default: the
    transition is made without them and they keep their values, as Jira checks required fields
    against the issue after the transition. Before, the plugin refused the stage change itself
    (400, "has no default value to fill in") without sending the transition; a required field
    with a default that the issue had already set would have been overwritten with the default."""
    jira.add_screen_field("Planning", "summary", "Summary")
    jira.add_screen_field("Planning", "customfield_10050", "Root cause")
    options = _component_area(jira)
    jira.require_resolution("Planning")  # a resolution is still chosen: the plugin does not read it
    jira.add_issue("ENG-1", summary="Fix the login page")
    jira.set_field_value("ENG-1", "customfield_10050", "A race in the session store")
    jira.set_field_value("ENG-1", "customfield_10060", options[0])

    provider.set_stage("ENG-1", Stage.PLANNING)

    issue = jira.issues["ENG-1"]
    assert issue.status == "Planning"
    [posted] = jira.requests_to("POST", "/issue/ENG-1/transitions")
    assert set(posted.json["fields"]) == {"resolution"}, "the fields the issue has are left out"
    assert issue.summary == "Fix the login page"
    assert issue.values["customfield_10050"] == "A race in the session store"
    assert issue.values["customfield_10060"] == options[0], "not overwritten with the default"
    # the issue's values of the required fields were read in one request, the resolution's not
    [_, read] = jira.requests_to("GET", "/issue/ENG-1")
    assert set(read.query["fields"][0].split(",")) == {"summary", "customfield_10050", "customfield_10060"}


def test_an_empty_required_field_is_still_refused_and_a_default_still_fills_it(
    jira: FakeJira, provider: JiraProvider
) -> None:
    """Reading the issue's values changes nothing for an empty field: with a default it is sent,
    without one the stage change is refused by name before any transition is sent."""
    jira.add_screen_field("Planning", "customfield_10060", "Component area", default="Backend")
    jira.add_screen_field("Implementing", "customfield_10050", "Root cause")
    jira.add_issue("ENG-1")
    jira.set_field_value("ENG-1", "customfield_10050", "")  # emptied: as good as never set

    provider.set_stage("ENG-1", Stage.PLANNING)
    [posted] = jira.requests_to("POST", "/issue/ENG-1/transitions")
    assert posted.json["fields"] == {"customfield_10060": "Backend"}
    with pytest.raises(ProviderError, match=r"'Root cause' \(customfield_10050\), which is empty"):
        provider.set_stage("ENG-1", Stage.IMPLEMENTING)
    assert jira.issues["ENG-1"].status == "Planning"
    assert len(jira.requests_to("POST", "/issue/ENG-1/transitions")) == 1


def test_without_screen_fields_the_requests_are_unchanged(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1", status="PR Ready")
    provider.set_stage("ENG-1", Stage.PLANNING)
    provider.mark_done("ENG-1")
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in jira.requests] == [
        ("GET", "ENG-1"),
        ("POST", "transitions"),
        ("GET", "ENG-1"),
        ("POST", "transitions"),
    ]
    assert all(set(r.json) == {"transition"} for r in jira.requests_to("POST", "/transitions"))


def test_screen_fields_are_read_when_the_issue_did_not_expand_them(
    jira: FakeJira, provider: JiraProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site that answers the issue's transitions without their fields: the screen of the chosen
    transition is read (only when it has one)."""
    jira.require_resolution("Done")
    jira.add_issue("ENG-1", status="PR Ready")
    jira.add_issue("ENG-2")
    get_issue = provider.client.get_issue

    def without_fields(*args: object, **kwargs: object) -> dict[str, object]:
        raw = get_issue(*args, **kwargs)  # type: ignore[arg-type]
        for transition in raw.get("transitions") or ():
            transition.pop("fields", None)
        return raw

    monkeypatch.setattr(provider.client, "get_issue", without_fields)
    provider.mark_done("ENG-1")
    assert jira.issues["ENG-1"].values["resolution"]["name"] == "Done"
    [read] = jira.requests_to("GET", "/issue/ENG-1/transitions")
    done_id = jira.requests_to("POST", "/issue/ENG-1/transitions")[0].json["transition"]["id"]
    assert read.query == {"expand": ["transitions.fields"], "transitionId": [done_id]}

    provider.set_stage("ENG-2", Stage.PLANNING)
    assert jira.requests_to("GET", "/issue/ENG-2/transitions") == [], "no screen: nothing to read"


# -- comments ----------------------------------------------------------------------------------


def test_post_comment_sends_adf(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    comment = provider.post_comment(
        "ENG-1", "🔗 PR #42 is ready for review: https://github.com/acme/api/pull/42"
    )
    assert comment.id
    doc = jira.comment_docs("ENG-1")[0]
    assert doc["type"] == "doc" and doc["version"] == 1
    link = doc["content"][0]["content"][1]
    assert link == {
        "type": "text",
        "text": "https://github.com/acme/api/pull/42",
        "marks": [{"type": "link", "attrs": {"href": "https://github.com/acme/api/pull/42"}}],
    }
    assert adf_text(doc) == "🔗 PR #42 is ready for review: https://github.com/acme/api/pull/42"


# -- connection --------------------------------------------------------------------------------


def test_bearer_token_authentication() -> None:
    with FakeJira(bearer_token="bearer-xyz") as jira:
        jira.add_issue("ENG-1")
        provider = JiraProvider(make_context(jira.config()))
        assert [i.key for p in provider.iter_triggered(["ENG"]) for i in p.issues] == ["ENG-1"]
        assert jira.requests[0].header("Authorization") == "Bearer bearer-xyz"
        jira.assert_clean()


def test_basic_authentication_header(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    provider.get_issue("ENG-1")
    expected = base64.b64encode(f"{jira.email}:{jira.api_token}".encode()).decode()
    assert jira.requests[0].header("Authorization") == f"Basic {expected}"
    assert jira.requests[0].header("User-Agent").startswith("aiimpl-jira/")


def test_wrong_credentials_fail_without_leaking_them(jira: FakeJira) -> None:
    jira.add_issue("ENG-1")
    provider = JiraProvider(make_context(jira.config(AIIMPL_JIRA_API_TOKEN="wrong-secret-token")))
    with pytest.raises(ProviderError) as err:
        provider.get_issue("ENG-1")
    assert err.value.status == 401
    assert "wrong-secret-token" not in str(err.value) and jira.api_token not in str(err.value)


def test_not_configured() -> None:
    provider = JiraProvider(make_context({"AIIMPL_JIRA_URL": "https://acme.atlassian.net"}))
    assert provider.is_configured() is False
    with pytest.raises(ProviderNotConfigured):
        provider.get_issue("ENG-1")


def test_settings_repr_hides_credentials() -> None:
    settings = JiraSettings.from_config(
        {
            "AIIMPL_JIRA_URL": "https://acme.atlassian.net/",
            "AIIMPL_JIRA_EMAIL": "a@b.c",
            "AIIMPL_JIRA_API_TOKEN": "tok-123",
            "AIIMPL_JIRA_WEBHOOK_SECRET": "whs-456",
        }
    )
    assert settings.configured and settings.url == "https://acme.atlassian.net"
    assert "tok-123" not in repr(settings) and "whs-456" not in repr(settings)


def test_config_vars_mark_secrets_sensitive() -> None:
    sensitive = {v.name for v in JiraProvider.config_vars if v.sensitive}
    assert sensitive == {"AIIMPL_JIRA_API_TOKEN", "AIIMPL_JIRA_BEARER_TOKEN", "AIIMPL_JIRA_WEBHOOK_SECRET"}


# -- mapping settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ticketing", "message"),
    [
        ({"provider": "jira", "jql": 5}, "ticketing.jql must be a string"),
        (
            {"provider": "jira", "jql": "labels = x ORDER BY key"},
            "ticketing.jql must be a filter clause without ORDER BY",
        ),
        ({"provider": "jira", "jql": 'labels = "x'}, "ticketing.jql has unbalanced quotes or parentheses"),
        ({"provider": "jira", "board": 1}, "ticketing.board is not a Jira setting (allowed: provider, jql)"),
        ({"jql": "labels = x"}, "ticketing.provider is required"),
        ("jira", "ticketing must be an object"),
    ],
)
def test_validate_mapping_names_the_field(ticketing: object, message: str) -> None:
    provider = JiraProvider(make_context({}))
    with pytest.raises(ProviderConfigError) as err:
        provider.validate_mapping({"teamKey": "ENG", "ticketing": ticketing})
    assert str(err.value) == message


def test_validate_mapping_accepts_a_clause() -> None:
    JiraProvider(make_context({})).validate_mapping(
        {
            "teamKey": "ENG",
            "ticketing": {"provider": "jira", "jql": 'labels in (backend, "api") AND priority = High'},
        }
    )


@pytest.mark.parametrize(
    "jql",
    [
        'summary ~ "order by"',
        "summary ~ ':('",
        """summary ~ 'say "hi'""",
        'summary ~ "a \\"quoted\\" (word" AND labels in (a, "b)")',
        "summary ~ 'it\\'s (done'",
        "labels = a\\ order AND labels = x",
    ],
)
def test_a_clause_is_read_with_its_strings(jql: str) -> None:
    """Parentheses, quotes and ORDER BY inside a JQL string are text. Before, the local check
    counted them: ``summary ~ "order by"`` was refused as sorting, ``summary ~ ":("`` and
    ``summary ~ 'say "hi'`` as unbalanced."""
    JiraProvider(make_context({})).validate_mapping(
        {"teamKey": "ENG", "ticketing": {"provider": "jira", "jql": jql}}
    )


@pytest.mark.parametrize(
    ("jql", "problem"),
    [
        ("labels = x) OR (project is not EMPTY", "has unbalanced quotes or parentheses"),
        ("labels = x)) OR ((project is not EMPTY", "has unbalanced quotes or parentheses"),
        ("(labels = x", "has unbalanced quotes or parentheses"),
        ('summary ~ ")" OR (labels = x', "has unbalanced quotes or parentheses"),
        ("summary ~ 'open", "has unbalanced quotes or parentheses"),
        ('summary ~ "ends in an escaped quote\\"', "has unbalanced quotes or parentheses"),
        ("labels = x\\", "has unbalanced quotes or parentheses"),
        ('summary ~ "order by" order by created', "must be a filter clause without ORDER BY"),
    ],
)
def test_a_clause_that_would_escape_its_parentheses_is_refused(jql: str, problem: str) -> None:
    """Before, ``labels = x) OR (project is not EMPTY`` passed the local check (as many ``(`` as
    ``)``), and the trigger query became ``… (project = "ENG" AND (labels = x) OR (project is not
    EMPTY))``: every Ready issue of the site. The parentheses must now nest outside strings."""
    with pytest.raises(ProviderConfigError) as err:
        JiraProvider(make_context({})).validate_mapping(
            {"teamKey": "ENG", "ticketing": {"provider": "jira", "jql": jql}}
        )
    assert str(err.value) == f"ticketing.jql {problem}"


def test_a_clause_with_a_string_that_looks_like_order_by_selects_its_issues(jira: FakeJira) -> None:
    """The clause is accepted by the local check and by Jira's parser, and the poll's query keeps
    it in its parentheses: only the project's matching issue is listed."""
    jira.add_issue("ENG-1", summary="Fix the order by clause")
    jira.add_issue("ENG-2", summary="Something else")
    jira.add_issue("OPS-1", summary="Fix the order by clause")
    mapping = {"teamKey": "ENG", "ticketing": {"provider": "jira", "jql": 'summary ~ "order by"'}}
    mappings = [sample_mapping(team_key="ENG", ticketing=mapping["ticketing"])]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))
    provider.validate_mapping(mapping)
    [page] = provider.iter_triggered(["ENG"])
    assert [i.key for i in page.issues] == ["ENG-1"]


def test_an_invalid_mapping_clause_is_named(jira: FakeJira) -> None:
    jira.add_issue("ENG-1")
    mappings = [
        sample_mapping(team_key="ENG", ticketing={"provider": "jira", "jql": "sprintz = 3"}),
        sample_mapping(team_key="OPS", ticketing={"provider": "jira", "jql": "labels = ops"}),
    ]
    provider = JiraProvider(make_context(jira.config(), mappings=lambda: mappings))
    with pytest.raises(ProviderError) as err:
        list(provider.iter_triggered(["ENG", "OPS"]))
    assert str(err.value) == (
        "the JQL clause of mapping ENG (ticketing.jql) is invalid: "
        "Field 'sprintz' does not exist or you do not have permission to view it."
    )


def test_long_comments_are_cut_to_jiras_limit(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    body = "Log excerpt (`session_failed`):\n\n```\n" + "x" * 60 + "\n" + ("line\n" * 10_000) + "```"
    provider.post_comment("ENG-1", body)
    [doc] = jira.comment_docs("ENG-1")
    text = adf_text(doc)
    assert len(text) < 32_767
    assert doc["content"][1]["type"] == "codeBlock", "the cut closed the fence"
    assert text.endswith("… (truncated: the full text is in the orchestrator's job details)")


def test_short_comments_are_not_cut() -> None:
    assert fit_comment("hello") == "hello"


def test_emoji_count_two_towards_jiras_limit(jira: FakeJira, provider: JiraProvider) -> None:
    """Jira counts UTF-16 code units: 20,000 emoji are 40,000 of them, over its 32,767."""
    jira.add_issue("ENG-1")
    for body in ("🚀" * 20_000, "x" + "🚀" * 20_000):  # the cut falls before and inside a pair
        fitted = fit_comment(body)
        assert utf16_len(fitted) <= MAX_COMMENT_CHARS < 32_767
        head = fitted.removesuffix(TRUNCATED_NOTICE)
        assert head != fitted and body.startswith(head), "cut between characters, never inside one"
        assert utf16_len(head) >= MAX_COMMENT_CHARS - utf16_len(TRUNCATED_NOTICE) - 1
        provider.post_comment("ENG-1", body)
    texts = [adf_text(doc) for doc in jira.comment_docs("ENG-1")]
    assert all(len(t.encode("utf-16-le")) // 2 < 32_767 for t in texts)
    assert fit_comment("🚀" * 16_000) == "🚀" * 16_000, "exactly the limit: not cut"


def test_a_cut_inside_a_four_backtick_fence_closes_that_fence(jira: FakeJira, provider: JiraProvider) -> None:
    jira.add_issue("ENG-1")
    body = "Log:\n\n````markdown\n" + "```py\nprint(1)\n```\n" * 3_000 + "````\n\nAfter."
    fitted = fit_comment(body)
    assert fitted.endswith("\n````" + TRUNCATED_NOTICE)
    provider.post_comment("ENG-1", body)
    [doc] = jira.comment_docs("ENG-1")
    assert [n["type"] for n in doc["content"]] == ["paragraph", "codeBlock", "paragraph"]
    assert adf_text(doc["content"][2]).startswith("… (truncated")
    # a cut after the block is closed adds no fence
    closed = "````\n```\n````\n" + "y" * 40_000
    assert fit_comment(closed).endswith("y" + TRUNCATED_NOTICE)


@pytest.mark.parametrize("indent", ["", "   "], ids=["top-level", "in-a-list-item"])
def test_a_cut_inside_a_fence_in_a_list_item_closes_it_inside_the_item(indent: str) -> None:
    """Closed at column 0, a fence opened in a list item would end the item and open a new block
    at the top, so the notice would be code; closed with the item's indentation it is text."""
    intro = "1. Run the migration:\n" if indent else "Run the migration:\n\n"
    body = intro + indent + "```bash\n" + (indent + "echo step\n") * 5_000
    fitted = fit_comment(body)
    assert fitted.endswith("\n" + indent + "```" + TRUNCATED_NOTICE)
    assert utf16_len(fitted) <= MAX_COMMENT_CHARS
    doc = markdown_to_adf(fitted)
    assert adf_violations(doc) == []
    [notice] = [n for n in doc["content"] if "truncated" in adf_text(n)]
    assert notice["type"] == "paragraph"
    assert doc["content"][0]["type"] == ("orderedList" if indent else "paragraph")


def test_validate_mapping_leaves_other_trackers_alone() -> None:
    JiraProvider(make_context({})).validate_mapping(
        {"teamKey": "ENG", "ticketing": {"provider": "linear", "x": 1}}
    )


def test_validate_mapping_asks_jira_about_the_clause(jira: FakeJira, provider: JiraProvider) -> None:
    with pytest.raises(ProviderConfigError) as err:
        provider.validate_mapping({"teamKey": "ENG", "ticketing": {"provider": "jira", "jql": "sprintz = 3"}})
    assert str(err.value) == (
        "ticketing.jql is invalid: Field 'sprintz' does not exist or you do not have permission to view it."
    )
    provider.validate_mapping({"teamKey": "ENG", "ticketing": {"provider": "jira", "jql": "labels = api"}})
    assert len(jira.requests_to("POST", "/jql/parse")) == 2


def test_validate_mapping_accepts_the_clause_when_jira_is_down(
    jira: FakeJira, provider: JiraProvider
) -> None:
    jira.fail_next("POST", "/jql/parse", 503, headers={"Retry-After": "0"}, times=3)
    provider.validate_mapping({"teamKey": "ENG", "ticketing": {"provider": "jira", "jql": "labels = api"}})


def test_a_long_retry_after_is_reported_not_slept(jira: FakeJira, provider: JiraProvider) -> None:
    """Jira asks for minutes: the error carries it, so the core postpones the whole connection."""
    jira.add_issue("ENG-1")
    jira.fail_next("POST", "/search/jql", 429, headers={"Retry-After": "120"})
    with pytest.raises(ProviderError) as err:
        list(provider.iter_triggered(["ENG"]))
    assert err.value.status == 429 and err.value.retry_after == 120.0
    assert len(jira.requests_to("POST", "/search/jql")) == 1


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [("2026-12-07T10:00:00.000+0000", "2026-12-07T10:00:00+00:00"),
     ("2026-12-07T15:30:00.123+0530", "2026-12-07T10:00:00.123000+00:00"),
     ("2026-12-07T10:00:00.000-0100", "2026-12-07T11:00:00+00:00"),
     ("2026-12-07T10:00:00Z", "2026-12-07T10:00:00+00:00")],
)
def test_jiras_timestamps_are_read_with_their_offsets(stamp: str, utc: str) -> None:
    """Jira writes offsets without a colon (+0000), which its fake, answering what its description's
    date-time format accepts, never did."""
    from datetime import UTC

    from aiimpl_jira.provider import _parse_time

    parsed = _parse_time(stamp)
    assert parsed is not None and parsed.astimezone(UTC).isoformat() == utc


@pytest.mark.parametrize("value", ["..", ".", "%2e%2e", "%252E%252E"])
def test_an_id_that_is_a_dot_segment_never_reaches_another_path(
    jira: FakeJira, provider: JiraProvider, value: str
) -> None:
    """An issue key Jira or a webhook gave, a project key, a field's id or a context's id Jira
    answered: ``..`` in the path would be resolved (``/issue/../transitions`` is ``/transitions``)."""
    jira.add_select_field("customfield_10010", "Area", {"Default": ["API"]})
    client = provider.client
    calls = [
        lambda: client.get_issue(value),
        lambda: client.transitions(value),
        lambda: client.project_statuses(value),
        lambda: client.field_contexts(value),
        lambda: client.context_options("customfield_10010", value),
    ]
    for call in calls:
        with pytest.raises(ProviderError, match="cannot be put in a URL path"):
            call()
    assert jira.requests == []


def test_an_issue_key_with_a_query_stays_one_segment(jira: FakeJira, provider: JiraProvider) -> None:
    with pytest.raises(NotFound):
        provider.client.get_issue("ENG-1?fields=x")
    assert [r.path for r in jira.requests] == ["/rest/api/3/issue/ENG-1?fields=x"]
