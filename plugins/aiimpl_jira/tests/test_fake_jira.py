"""The fake Jira's own checks: a fake that accepts anything would prove nothing."""

from __future__ import annotations

import pytest
import requests

from aiimpl_jira.testing import jql
from aiimpl_jira.testing.fake_jira import FakeJira, adf_violations


def _auth(jira: FakeJira) -> tuple[str, str]:
    return (jira.email, jira.api_token)


def _issue(jira: FakeJira, key: str, fields: str) -> dict:
    """``GET /rest/api/3/issue/{key}?fields=…``, as the plugin reads an issue."""
    return requests.get(
        f"{jira.url}/rest/api/3/issue/{key}", params={"fields": fields}, auth=_auth(jira), timeout=5
    ).json()


def test_a_request_off_the_description_is_recorded(jira: FakeJira) -> None:
    resp = requests.post(
        f"{jira.url}/rest/api/3/search/jql",
        auth=_auth(jira),
        timeout=5,
        json={"jql": 'status = "Ready"', "fields": ["summary"], "startAt": 0},
    )
    assert resp.status_code == 200  # Jira ignores it; the description forbids it
    assert any("startAt" in v for v in jira.server.violations)
    with pytest.raises(AssertionError, match="OpenAPI|problem"):
        jira.assert_clean()
    jira.server.reset()


def test_an_invalid_adf_comment_is_refused_and_recorded(jira: FakeJira) -> None:
    jira.add_issue("ENG-1")
    resp = requests.post(
        f"{jira.url}/rest/api/3/issue/ENG-1/comment",
        auth=_auth(jira),
        timeout=5,
        json={"body": {"type": "doc", "version": 1, "content": [{"type": "text", "text": "x"}]}},
    )
    assert resp.status_code == 400
    assert resp.json()["errors"] == {"comment": "Comment body is not valid!"}
    assert jira.violations and "not allowed here" in jira.violations[0]
    jira.violations.clear()


def test_an_altered_answer_is_still_checked_against_the_description(jira: FakeJira) -> None:
    """:meth:`FakeJira.alter_answers` makes the fake answer as a broken Jira would, within Jira's
    description: an answer altered off it is recorded like any other."""
    jira.add_issue("ENG-1")
    asked: list[dict] = []

    def alter(page: dict, body: dict) -> dict:
        asked.append(body)
        return {**page, "isLast": "no"}

    jira.alter_answers("POST", "/search/jql", alter)
    search = {"jql": 'status = "Ready"', "fields": ["summary"]}

    resp = requests.post(f"{jira.url}/rest/api/3/search/jql", auth=_auth(jira), timeout=5, json=search)

    assert resp.json()["isLast"] == "no" and [i["key"] for i in resp.json()["issues"]] == ["ENG-1"]
    assert asked == [search]
    assert any("isLast" in v for v in jira.server.violations)
    jira.server.reset()
    jira.alter_answers("POST", "/search/jql", None)
    resp = requests.post(f"{jira.url}/rest/api/3/search/jql", auth=_auth(jira), timeout=5, json=search)
    assert resp.json()["isLast"] is True and jira.server.violations == []


def test_unauthenticated_requests_are_refused(jira: FakeJira) -> None:
    resp = requests.get(f"{jira.url}/rest/api/3/field", auth=("bot@acme.test", "nope"), timeout=5)
    assert resp.status_code == 401


_LIST = {"type": "bulletList", "content": [{"type": "listItem", "content": [{"type": "paragraph"}]}]}


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"type": "doc", "version": 2, "content": []}, "doc.version must be 1"),
        (
            {
                "type": "doc",
                "version": 1,
                "content": [{"type": "paragraph", "content": [{"type": "text", "text": ""}]}],
            },
            "non-empty text",
        ),
        (
            {
                "type": "doc",
                "version": 1,
                "content": [
                    {
                        "type": "paragraph",
                        "content": [
                            {"type": "text", "text": "x", "marks": [{"type": "code"}, {"type": "strong"}]}
                        ],
                    }
                ],
            },
            "the code mark combines only with link",
        ),
        (
            {"type": "doc", "version": 1, "content": [{"type": "bulletList", "content": []}]},
            "at least one listItem",
        ),
        (
            {
                "type": "doc",
                "version": 1,
                "content": [{"type": "heading", "attrs": {"level": 7}, "content": []}],
            },
            "heading level",
        ),
        (
            {
                "type": "doc",
                "version": 1,
                "content": [
                    {
                        "type": "paragraph",
                        "content": [{"type": "text", "text": "x", "marks": [{"type": "link", "attrs": {}}]}],
                    }
                ],
            },
            "attrs.href",
        ),
        (
            {
                "type": "doc",
                "version": 1,
                "content": [
                    {
                        "type": "codeBlock",
                        "content": [{"type": "text", "text": "x", "marks": [{"type": "strong"}]}],
                    }
                ],
            },
            "unmarked text only",
        ),
        (
            {
                "type": "doc",
                "version": 1,
                "content": [{"type": "bulletList", "content": [{"type": "listItem", "content": [_LIST]}]}],
            },
            "a listItem starts with a paragraph, codeBlock or mediaSingle, not 'bulletList'",
        ),
        ("just text", "not an ADF document"),
    ],
)
def test_adf_violations(doc: object, problem: str) -> None:
    assert any(problem in p for p in adf_violations(doc))


ISSUES = [
    {"key": "ENG-1", "status": "Ready", "project": "ENG", "labels": ["api"], "summary": "Export CSV"},
    {"key": "ENG-2", "status": "To Do", "project": "ENG", "labels": [], "summary": "Other"},
    {"key": "OPS-1", "status": "Ready", "project": "OPS", "labels": ["api", "ops"], "summary": "Deploy"},
]


@pytest.mark.parametrize(
    ("query", "keys"),
    [
        ('status = "Ready"', ["ENG-1", "OPS-1"]),
        ('status = Ready AND project in ("ENG")', ["ENG-1"]),
        ("project not in (ENG) OR labels = api", ["ENG-1", "OPS-1"]),
        ("NOT labels = ops AND (status = Ready OR key = ENG-2)", ["ENG-1", "ENG-2"]),
        ("summary ~ export", ["ENG-1"]),
        ("status != Ready ORDER BY key DESC", ["ENG-2"]),
    ],
)
def test_jql_evaluation(query: str, keys: list[str]) -> None:
    parsed = jql.parse(query)
    assert [i["key"] for i in parsed.sort([i for i in ISSUES if parsed.matches(i)])] == keys


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ('status = "Ready', "The quoted string has not been completed."),
        ("(status = Ready", "Expecting ')' but got the end of the query."),
        ("sprintz = 3", "Field 'sprintz' does not exist or you do not have permission to view it."),
        ("status = Ready labels = x", "Expecting either 'OR' or 'AND' but got 'labels'."),
        ("status =", "Expecting either a value, list or function but got the end of the query."),
        ("status = Ready ORDER BY nonsense", "Not able to sort using field 'nonsense'."),
    ],
)
def test_jql_errors_read_like_jira(query: str, message: str) -> None:
    with pytest.raises(jql.JqlError) as err:
        jql.parse(query)
    assert str(err.value).endswith(message)


def test_a_transition_screen_lists_its_fields_and_refuses_a_missing_required_one(jira: FakeJira) -> None:
    jira.add_issue("ENG-1", status="PR Ready")
    jira.require_resolution("Done")
    base = f"{jira.url}/rest/api/3/issue/ENG-1/transitions"
    plain = requests.get(base, auth=_auth(jira), timeout=5).json()["transitions"]
    done = next(t for t in plain if t["to"]["name"] == "Done")
    assert done["hasScreen"] is True and "fields" not in done, "fields only when expanded"

    listed = requests.get(
        base, params={"expand": "transitions.fields", "transitionId": done["id"]}, auth=_auth(jira), timeout=5
    ).json()["transitions"]
    [meta] = [t["fields"]["resolution"] for t in listed]
    assert meta["required"] is True and meta["schema"] == {"type": "resolution", "system": "resolution"}
    assert [v["name"] for v in meta["allowedValues"]] == ["Won't Do", "Duplicate", "Done", "Cannot Reproduce"]
    nothing = requests.get(base, params={"transitionId": "999"}, auth=_auth(jira), timeout=5).json()
    assert nothing["transitions"] == []

    refused = requests.post(base, json={"transition": {"id": done["id"]}}, auth=_auth(jira), timeout=5)
    assert refused.status_code == 400
    assert refused.json() == {"errorMessages": [], "errors": {"resolution": "Resolution is required."}}
    wrong = requests.post(
        base,
        json={"transition": {"id": done["id"]}, "fields": {"resolution": {"name": "Fixed"}}},
        auth=_auth(jira),
        timeout=5,
    )
    assert wrong.status_code == 400 and "resolution" in wrong.json()["errors"]
    off_screen = next(t for t in plain if t["to"]["name"] == "Implementing")
    extra = requests.post(
        base,
        json={"transition": {"id": off_screen["id"]}, "fields": {"resolution": {"name": "Done"}}},
        auth=_auth(jira),
        timeout=5,
    )
    assert extra.status_code == 400
    assert "not on the appropriate screen" in extra.json()["errors"]["resolution"]
    assert jira.issues["ENG-1"].status == "PR Ready"

    ok = requests.post(
        base,
        json={"transition": {"id": done["id"]}, "fields": {"resolution": {"name": "Done"}}},
        auth=_auth(jira),
        timeout=5,
    )
    assert ok.status_code == 204
    issue = _issue(jira, "ENG-1", "status,resolution")
    assert issue["fields"]["status"]["name"] == "Done" and issue["fields"]["resolution"]["name"] == "Done"


def test_a_required_field_the_issue_has_needs_not_be_sent(jira: FakeJira) -> None:
    """As in Jira, a required screen field is checked against the issue after the transition: one
    with a value on the issue passes left out of the request; an empty one is refused in Jira's
    ``errors`` object keyed by the field's id. Before, the fake refused every required field left
    out, even Summary."""
    jira.add_issue("ENG-1", summary="Fix the login page")
    jira.add_issue("ENG-2")
    jira.add_screen_field("Planning", "summary", "Summary")
    jira.add_screen_field("Planning", "customfield_10050", "Root cause")
    jira.set_field_value("ENG-1", "customfield_10050", "A race")
    listed = requests.get(
        f"{jira.url}/rest/api/3/issue/ENG-1/transitions", auth=_auth(jira), timeout=5
    ).json()["transitions"]
    planning = next(t["id"] for t in listed if t["to"]["name"] == "Planning")

    def transition(key: str, **fields: object) -> requests.Response:
        body: dict[str, object] = {"transition": {"id": planning}}
        if fields:
            body["fields"] = fields
        return requests.post(
            f"{jira.url}/rest/api/3/issue/{key}/transitions", json=body, auth=_auth(jira), timeout=5
        )

    refused = transition("ENG-2")
    assert refused.status_code == 400
    assert refused.json() == {"errorMessages": [], "errors": {"customfield_10050": "Root cause is required."}}
    emptied = transition("ENG-1", summary="")
    assert emptied.json()["errors"] == {"summary": "Summary is required."}, "a value sent empty counts"
    assert jira.issues["ENG-1"].status == "Ready"

    assert transition("ENG-1").status_code == 204
    assert jira.issues["ENG-1"].status == "Planning"
    assert jira.issues["ENG-1"].summary == "Fix the login page"
    assert transition("ENG-2", customfield_10050="Found it").status_code == 204
    read = _issue(jira, "ENG-2", "customfield_10050,summary")
    assert read["fields"] == {"customfield_10050": "Found it", "summary": "An issue"}
    unknown = _issue(jira, "ENG-1", "customfield_10099,labels")
    assert unknown["fields"] == {"labels": []}, "a field the site does not have is not listed"
