"""The fake Linear itself: it answers in the schema's shapes and refuses what Linear refuses."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import requests
from graphql import GraphQLObjectType

from aiimpl_linear.testing import FakeLinear, linear_schema
from aiimpl_linear.testing.fake_linear import STATE_TYPES


def post(
    fake: FakeLinear, query: str, variables: dict[str, Any] | None = None, name: str | None = None
) -> Any:
    body = {"query": query, "variables": variables or {}, "operationName": name}
    return requests.post(fake.url, json=body, headers={"Authorization": fake.api_key}, timeout=10)


def test_a_field_the_fake_cannot_fill_is_an_error_not_a_guess(fake: FakeLinear) -> None:
    key = fake.add_issue("ENG")["identifier"]
    resp = post(fake, 'query P { issue(id: "' + key + '") { identifier priorityLabel } }', name="P")
    body = resp.json()
    assert body["data"] is None and "priorityLabel" in body["errors"][0]["message"]


def test_pagination_follows_cursors(fake: FakeLinear) -> None:
    for n in range(5):
        fake.add_issue("ENG", f"n{n}")
    query = (
        "query Q($after: String) { issues(first: 2, after: $after) "
        "{ nodes { title } pageInfo { hasNextPage endCursor } } }"
    )
    titles, after, pages = [], None, 0
    while True:
        page = post(fake, query, {"after": after}, "Q").json()["data"]["issues"]
        pages += 1
        titles += [n["title"] for n in page["nodes"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert titles == [f"n{n}" for n in range(5)] and pages == 3


def test_page_size_above_250_is_refused(fake: FakeLinear) -> None:
    body = post(fake, "query Q { issues(first: 251) { nodes { id } } }", name="Q").json()
    assert body["data"] is None and "first" in body["errors"][0]["message"]


def test_unimplemented_filter_is_loud(fake: FakeLinear) -> None:
    fake.add_issue("ENG")
    body = post(fake, "query Q { issues(filter: { priority: { eq: 1 } }) { nodes { id } } }", name="Q").json()
    assert "fake Linear does not implement filter IssueFilter.priority" in body["errors"][0]["message"]


def test_too_complex_query_is_refused(fake: FakeLinear) -> None:
    query = "query Q { issues(first: 250) { nodes { id labels(first: 250) { nodes { id name } } } } }"
    resp = post(fake, query, name="Q")
    assert resp.status_code == 400 and "too complex" in resp.json()["errors"][0]["message"]


def test_rate_limit_answer_carries_linear_headers(fake: FakeLinear) -> None:
    fake.rate_limit(times=1, retry_in=30)
    resp = post(fake, "query Q { teams { nodes { key } } }", name="Q")
    assert resp.status_code == 429
    assert resp.json()["errors"][0]["extensions"]["code"] == "RATELIMITED"
    assert resp.headers["X-RateLimit-Requests-Remaining"] == "0"
    assert int(resp.headers["X-RateLimit-Requests-Reset"]) > 0
    ok = post(fake, "query Q { teams { nodes { key } } }", name="Q")
    assert ok.status_code == 429  # the budget stays empty until the reset


@pytest.mark.parametrize("auth", [None, "wrong", "Bearer lin_api_fake0123456789"])
def test_authentication_is_checked(fake: FakeLinear, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    resp = requests.post(
        fake.url, json={"query": "query Q { teams { nodes { key } } }"}, headers=headers, timeout=10
    )
    assert resp.json()["errors"][0]["extensions"]["code"] == "AUTHENTICATION_ERROR"


def test_a_slow_answer_does_not_hold_up_other_requests(fake: FakeLinear) -> None:
    """An action staged with ``before`` (here a slow answer) runs without the fake's lock, so a
    request sent meanwhile is answered at once, as the real service would answer it."""
    import threading
    import time

    release = threading.Event()
    fake.before("Slow", lambda: release.wait(10))
    slow = threading.Thread(target=post, args=(fake, "query Slow { viewer { id } }", None, "Slow"))
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while "Slow" not in fake.operations() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        resp = post(fake, "query Fast { viewer { id } }", name="Fast")
        assert resp.status_code == 200 and resp.json()["data"]["viewer"]["id"]
        assert time.monotonic() - started < 5  # not after the slow one (held up to 10 s)
        assert slow.is_alive()
    finally:
        release.set()
        slow.join(10)


CREATE = """
mutation C($issueId: String!, $body: String!, $id: String) {
  commentCreate(input: { issueId: $issueId, body: $body, id: $id }) { success comment { id issueId } }
}
"""


def test_a_comment_keeps_the_id_it_is_created_with_and_is_read_by_it(fake: FakeLinear) -> None:
    key = fake.add_issue("ENG")["identifier"]
    ref = str(uuid.uuid4())
    created = post(fake, CREATE, {"issueId": key, "body": "hi", "id": ref}, "C").json()
    assert created["data"]["commentCreate"]["comment"] == {"id": ref, "issueId": fake.issue(key)["id"]}
    read = post(fake, "query R($id: String!) { comment(id: $id) { id body issueId } }", {"id": ref}, "R")
    assert read.json()["data"]["comment"] == {"id": ref, "body": "hi", "issueId": fake.issue(key)["id"]}


def test_an_id_in_use_or_not_a_uuid_4_is_refused(fake: FakeLinear) -> None:
    key = fake.add_issue("ENG")["identifier"]
    taken = fake.add_comment(key, "first")["id"]
    for bad in (taken, "not-a-uuid", str(uuid.uuid1())):
        body = post(fake, CREATE, {"issueId": key, "body": "again", "id": bad}, "C").json()
        assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "INVALID_INPUT", bad
    assert fake.comments_of(key) == ["first"]


def test_an_unknown_comment_is_entity_not_found(fake: FakeLinear) -> None:
    body = post(fake, "query R { comment(id: \"nope\") { id } }", name="R").json()
    assert body["errors"][0]["message"] == "Entity not found: Comment"


def test_a_lost_answer_was_carried_out(fake: FakeLinear) -> None:
    key = fake.add_issue("ENG")["identifier"]
    fake.lose_answer("C", status=502)
    resp = post(fake, CREATE, {"issueId": key, "body": "stored"}, "C")
    assert resp.status_code == 502 and "Bad Gateway" in resp.text
    assert fake.comments_of(key) == ["stored"]
    assert post(fake, CREATE, {"issueId": key, "body": "next"}, "C").status_code == 200  # once


def test_workflow_state_types_are_the_ones_the_schema_documents(fake: FakeLinear) -> None:
    """``WorkflowState.type`` is a String whose values only its description lists: the fake knows
    exactly those, ``duplicate`` included, and refuses any other."""
    workflow_state = linear_schema().get_type("WorkflowState")
    assert isinstance(workflow_state, GraphQLObjectType)
    description = workflow_state.fields["type"].description or ""
    assert tuple(re.findall(r'"([a-z]+)"', description)) == STATE_TYPES
    with pytest.raises(ValueError, match="no workflow state type 'closed'"):
        fake.add_state("ENG", "Closed", "closed", 9.0)


def test_a_team_has_a_duplicate_state_as_in_linear(fake: FakeLinear) -> None:
    key = fake.add_issue("ENG", state="Duplicate")["identifier"]
    body = post(fake, 'query Q { issue(id: "' + key + '") { state { name type } } }', name="Q").json()
    assert body["data"]["issue"]["state"] == {"name": "Duplicate", "type": "duplicate"}
    query = 'query Q { issues(filter: { state: { type: { nin: ["duplicate"] } } }) { nodes { id } } }'
    listed = post(fake, query, name="Q").json()
    assert listed["data"]["issues"]["nodes"] == []


LABELS = "query L { issueLabels { nodes { id name retiredAt } } }"
ADD = """
mutation A($id: String!, $labels: [String!]) {
  issueUpdate(id: $id, input: { addedLabelIds: $labels }) { success issue { labels { nodes { name } } } }
}
"""


def test_a_retired_label_is_listed_with_its_time_and_applied_to_no_new_issue(fake: FakeLinear) -> None:
    """As the schema's ``issueLabelRetire`` says: retired labels are still visible but cannot be
    applied to new issues, and the issues that carry one keep it."""
    key = fake.add_issue("ENG", labels=["legacy"])["identifier"]
    other = fake.add_issue("ENG", labels=[])["identifier"]
    label = fake.retire_label(fake._label_named("legacy", fake.team("ENG")["id"])["id"])

    listed = post(fake, LABELS, name="L").json()["data"]["issueLabels"]["nodes"]
    assert listed == [{"id": label["id"], "name": "legacy", "retiredAt": label["retiredAt"]}]
    assert label["retiredAt"] is not None
    refused = post(fake, ADD, {"id": other, "labels": [label["id"]]}, "A").json()
    assert refused["data"] is None and refused["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    kept = post(fake, ADD, {"id": key, "labels": [label["id"]]}, "A").json()
    assert kept["data"]["issueUpdate"]["issue"]["labels"]["nodes"] == [{"name": "legacy"}]
    assert fake.labels_of(key) == ["legacy"] and fake.labels_of(other) == []
    with pytest.raises(ValueError, match="retired"):
        fake.add_labels(other, "legacy")  # nor can a person add it


def test_a_label_is_retired_and_restored_through_the_api(fake: FakeLinear) -> None:
    label = fake.add_label("legacy", "ENG")
    key = fake.add_issue("ENG", labels=[])["identifier"]
    mutation = "mutation M($id: String!) { %s(id: $id) { success issueLabel { id retiredAt } } }"

    retired = post(fake, mutation % "issueLabelRetire", {"id": label["id"]}, "M").json()["data"]
    assert retired["issueLabelRetire"]["issueLabel"]["retiredAt"] == label["retiredAt"] is not None
    restored = post(fake, mutation % "issueLabelRestore", {"id": label["id"]}, "M").json()["data"]
    assert restored["issueLabelRestore"]["issueLabel"] == {"id": label["id"], "retiredAt": None}
    assert post(fake, ADD, {"id": key, "labels": [label["id"]]}, "A").json()["data"]["issueUpdate"]["success"]
    unknown = post(fake, mutation % "issueLabelRestore", {"id": "nope"}, "M").json()
    assert unknown["errors"][0]["message"] == "Entity not found: IssueLabel"


def test_a_person_adds_the_active_label_of_a_name_not_a_retired_one(fake: FakeLinear) -> None:
    retired = fake.add_label("triage", None, retired=True)
    active = fake.add_label("triage", "ENG")
    key = fake.add_issue("ENG", labels=["triage"])["identifier"]
    assert fake.issue(key)["labelIds"] == [active["id"]] != [retired["id"]]
