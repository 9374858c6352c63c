"""The ``/api/jira/*`` rows of the reference's "Jira configuration" table, and the webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from aiimpl_core.app import create_app
from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE, TEST_SECRET_KEY

import aiimpl_jira.plugin
from aiimpl_jira.testing.fake_jira import FakeJira

SECRET = "hook-secret-123"


# -- 401 / 501 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/jira/validate-jql"),
        ("get", "/api/jira/fields"),
        ("get", "/api/jira/field-options?fieldId=x"),
    ],
)
def test_admin_session_required(client: Any, method: str, path: str) -> None:
    resp = getattr(client, method)(path, json={"jql": "status = Ready"})
    assert resp.status_code == 401 and resp.get_json() == {"error": "Unauthorized"}


@pytest.fixture
def unconfigured_client(database_url: str) -> Any:
    """The plugin installed, no Jira connection configured."""
    app = create_app(
        {
            "AIIMPL_DATABASE_URL": database_url,
            "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
            "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE,
            "TESTING": True,
        },
        plugins=[aiimpl_jira.plugin],
        load_entrypoints=False,
        environ={},
    )
    with app.app_context():
        from aiimpl_core.auth import admin

        token = admin.issue_session()
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        yield client
        from aiimpl_core.extensions import db

        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/jira/validate-jql"),
        ("get", "/api/jira/fields"),
        ("get", "/api/jira/field-options?fieldId=x"),
    ],
)
def test_501_when_jira_is_not_configured(unconfigured_client: Any, method: str, path: str) -> None:
    resp = getattr(unconfigured_client, method)(path, json={"jql": "status = Ready"})
    assert resp.status_code == 501 and resp.get_json() == {"error": "Jira not configured"}


def test_webhook_501_without_a_secret(unconfigured_client: Any) -> None:
    resp = unconfigured_client.post("/api/jira/webhook", json={})
    assert resp.status_code == 501 and resp.get_json() == {"error": "Jira webhook not configured"}


# -- validate-jql ------------------------------------------------------------------------------


def test_validate_jql_valid(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    resp = client.post(
        "/api/jira/validate-jql", json={"jql": 'labels in (backend, "api")'}, headers=admin_headers
    )
    assert resp.status_code == 200
    assert resp.get_json() == {"valid": True, "jql": 'labels in (backend, "api")', "warnings": []}
    [call] = jira.requests_to("POST", "/rest/api/3/jql/parse")
    assert call.query == {"validation": ["strict"]} and call.json == {
        "queries": ['labels in (backend, "api")']
    }


def test_validate_jql_invalid_json(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    resp = client.post(
        "/api/jira/validate-jql", data="{not json", content_type="application/json", headers=admin_headers
    )
    assert resp.status_code == 400 and resp.get_json() == {"error": "Invalid JSON body"}
    assert jira.requests == []


@pytest.mark.parametrize("body", [{}, {"jql": ""}, {"jql": "   "}, {"jql": None}, {"query": "x"}])
def test_validate_jql_requires_jql(
    client: Any, admin_headers: dict[str, str], jira: FakeJira, body: Any
) -> None:
    resp = client.post("/api/jira/validate-jql", json=body, headers=admin_headers)
    assert resp.status_code == 400 and resp.get_json() == {"error": "jql field required"}


@pytest.mark.parametrize("jql", [5, True, ["labels = api"], {"jql": "x"}])
def test_validate_jql_that_is_not_a_string_is_said_so(
    client: Any, admin_headers: dict[str, str], jira: FakeJira, jql: Any
) -> None:
    resp = client.post("/api/jira/validate-jql", json={"jql": jql}, headers=admin_headers)
    assert resp.status_code == 400 and resp.get_json() == {"error": "jql must be a string"}
    assert jira.requests == []


@pytest.mark.parametrize(
    ("jql", "message"),
    [
        ('labels = "backend', "Error in the JQL Query: The quoted string has not been completed."),
        ("sprintz = 3", "Field 'sprintz' does not exist or you do not have permission to view it."),
    ],
)
def test_validate_jql_invalid_clause_gives_jiras_message(
    client: Any, admin_headers: dict[str, str], jira: FakeJira, jql: str, message: str
) -> None:
    resp = client.post("/api/jira/validate-jql", json={"jql": jql}, headers=admin_headers)
    assert resp.status_code == 400 and resp.get_json() == {"error": message}


def test_validate_jql_refuses_a_sorting_clause(
    client: Any, admin_headers: dict[str, str], jira: FakeJira
) -> None:
    resp = client.post(
        "/api/jira/validate-jql", json={"jql": "labels = x order by key"}, headers=admin_headers
    )
    assert resp.status_code == 400 and resp.get_json() == {
        "error": "The JQL clause must not contain ORDER BY"
    }


def test_validate_jql_takes_order_by_inside_a_string_as_text(
    client: Any, admin_headers: dict[str, str], jira: FakeJira
) -> None:
    """Before, any "order by" in the clause was refused, though Jira reads it as a value here."""
    resp = client.post(
        "/api/jira/validate-jql", json={"jql": 'summary ~ "order by"'}, headers=admin_headers
    )
    assert resp.status_code == 200 and resp.get_json()["valid"] is True


def test_validate_jql_500_when_jira_fails(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    jira.fail_next("POST", "/jql/parse", 503, headers={"Retry-After": "0"}, times=3)
    resp = client.post("/api/jira/validate-jql", json={"jql": "labels = x"}, headers=admin_headers)
    assert resp.status_code == 500
    assert resp.get_json() == {
        "error": "jira: POST /rest/api/3/jql/parse failed with HTTP 503: Injected failure 503"
    }


# -- fields ------------------------------------------------------------------------------------


def test_fields_listed_by_name(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    jira.add_select_field("customfield_10010", "Area", {"Default": ["API", "UI"]})
    resp = client.get("/api/jira/fields", headers=admin_headers)
    assert resp.status_code == 200
    fields = resp.get_json()
    assert [f["name"] for f in fields] == ["Area", "Description", "Labels", "Status", "Summary"]
    assert fields[0] == {
        "id": "customfield_10010",
        "key": "customfield_10010",
        "name": "Area",
        "custom": True,
        "clauseNames": ["Area", "cf[10010]"],
        "type": "option",
    }


def test_fields_500_when_jira_fails(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    jira.fail_next("GET", "/rest/api/3/field", 403, body={"errorMessages": ["You are not an administrator"]})
    resp = client.get("/api/jira/fields", headers=admin_headers)
    assert resp.status_code == 500
    assert resp.get_json() == {
        "error": "jira: GET /rest/api/3/field failed with HTTP 403: You are not an administrator"
    }


# -- field-options -----------------------------------------------------------------------------


def test_field_options_require_field_id(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    for path in ("/api/jira/field-options", "/api/jira/field-options?fieldId="):
        resp = client.get(path, headers=admin_headers)
        assert resp.status_code == 400 and resp.get_json() == {"error": "fieldId query param required"}


def test_field_options_refuse_a_field_id_given_twice(
    client: Any, admin_headers: dict[str, str], jira: FakeJira
) -> None:
    """The first of two was taken: the options of one field answered a question about two."""
    jira.add_select_field("customfield_10010", "Area", {"Default": ["API"]})
    resp = client.get("/api/jira/field-options?fieldId=customfield_10010&fieldId=customfield_10011",
                      headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (400, {"error": "fieldId given more than once"})


def test_field_options_over_every_context(client: Any, admin_headers: dict[str, str], jira: FakeJira) -> None:
    jira.add_select_field("customfield_10010", "Area", {"Default": ["API", "UI"], "Ops projects": ["Infra"]})
    resp = client.get("/api/jira/field-options?fieldId=customfield_10010", headers=admin_headers)
    assert resp.status_code == 200
    options = resp.get_json()
    assert [(o["value"], o["contextName"]) for o in options] == [
        ("API", "Default"),
        ("UI", "Default"),
        ("Infra", "Ops projects"),
    ]
    assert all(o["id"] and o["contextId"] and o["disabled"] is False for o in options)


@pytest.mark.parametrize("field_id", ["summary", "customfield_10020"])
def test_field_options_empty_list_when_the_field_has_none(
    client: Any, admin_headers: dict[str, str], jira: FakeJira, field_id: str
) -> None:
    jira.add_text_field("customfield_10020", "Notes")
    resp = client.get(f"/api/jira/field-options?fieldId={field_id}", headers=admin_headers)
    assert resp.status_code == 200 and resp.get_json() == []


@pytest.mark.parametrize(
    "field_id", ["..", ".", "%2e%2e", "%2E.", "../field", "customfield_1?x", "a#b", "a\\b"]
)
def test_field_options_refuse_a_field_id_that_is_no_path_segment_before_asking_jira(
    client: Any, admin_headers: dict[str, str], jira: FakeJira, field_id: str
) -> None:
    """``..`` was sent as ``/field/../context``, which urllib3 resolves to ``/context``: another
    resource of Jira's API, whose 404 then answered an empty list."""
    jira.add_select_field("customfield_10010", "Area", {"Default": ["API"]})
    resp = client.get("/api/jira/field-options", query_string={"fieldId": field_id}, headers=admin_headers)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"].startswith("fieldId must be an id that fits one segment of a URL path")
    assert jira.requests == []


def test_field_options_500_when_jira_fails(
    client: Any, admin_headers: dict[str, str], jira: FakeJira
) -> None:
    jira.add_select_field("customfield_10010", "Area", {"Default": ["API"]})
    jira.fail_next("GET", "/option", 401, body={"errorMessages": ["Token expired"]})
    resp = client.get("/api/jira/field-options?fieldId=customfield_10010", headers=admin_headers)
    assert resp.status_code == 500
    assert resp.get_json()["error"].endswith("failed with HTTP 401: Token expired")


def test_errors_never_carry_the_credentials(
    client: Any, admin_headers: dict[str, str], jira: FakeJira
) -> None:
    jira.fail_next("GET", "/rest/api/3/field", 500, headers={"Retry-After": "0"}, times=3)
    body = client.get("/api/jira/fields", headers=admin_headers).get_data(as_text=True)
    assert jira.api_token not in body and jira.email not in body


# -- webhook -----------------------------------------------------------------------------------


def _event(key: str = "ENG-1", status: str | None = "Ready") -> dict[str, Any]:
    issue: dict[str, Any] = {"id": "10001", "key": key}
    if status is not None:
        issue["fields"] = {"status": {"name": status, "statusCategory": {"key": "new"}}}
    return {
        "timestamp": 1767600000000,
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": "issue_generic",
        "issue": issue,
        "changelog": {"items": [{"field": "status", "toString": status or ""}]},
    }


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """Record the dispatcher's per-issue cycles instead of running them."""
    from aiimpl_core.services import dispatch

    calls: list[tuple[str, list[str]]] = []

    def fake(provider_id: str, issue_keys: list[str], report: Any = None) -> dispatch.CycleReport:
        calls.append((provider_id, list(issue_keys)))
        report = dispatch.CycleReport(started_at=datetime(2026, 1, 5, 9, 0, tzinfo=UTC))
        report.dispatched = [dispatch.Dispatched(k, 7, "implementation", "github-actions", False)
                             for k in issue_keys]
        return report

    monkeypatch.setattr(dispatch, "run_cycle_for_issues", fake)
    return calls


def test_webhook_secret_as_query_parameter(client: Any, jira: FakeJira, cycles: list) -> None:
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=_event())
    assert resp.status_code == 200
    body = resp.get_json()
    assert (body["accepted"], body["issueKey"], body["dispatched"]) == (True, "ENG-1", True)
    assert body["result"]["dispatched"] == [{
        "issueKey": "ENG-1", "jobId": 7, "phase": "implementation", "backend": "github-actions",
        "shadow": False, "status": "unknown", "error": None, "deferredUntil": None,
    }]
    assert cycles == [("jira", ["ENG-1"])]


def test_webhook_secret_as_header(client: Any, jira: FakeJira, cycles: list) -> None:
    resp = client.post("/api/jira/webhook", json=_event(), headers={"X-Aiimpl-Webhook-Secret": SECRET})
    assert resp.status_code == 200 and cycles == [("jira", ["ENG-1"])]


def test_webhook_hmac_signature(client: Any, jira: FakeJira, cycles: list) -> None:
    body = json.dumps(_event()).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    resp = client.post(
        "/api/jira/webhook",
        data=body,
        content_type="application/json",
        headers={"X-Hub-Signature": signature},
    )
    assert resp.status_code == 200 and cycles == [("jira", ["ENG-1"])]


@pytest.mark.parametrize("spell", [str.upper, lambda value: f" {value} "])
def test_webhook_hmac_signature_in_any_hex_case(
    client: Any, jira: FakeJira, cycles: list, spell: Any
) -> None:
    # the same digest whatever the case of its hex digits, or the blanks a proxy leaves around it
    body = json.dumps(_event()).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    resp = client.post(
        "/api/jira/webhook",
        data=body,
        content_type="application/json",
        headers={"X-Hub-Signature": spell("sha256=" + digest)},
    )
    assert resp.status_code == 200 and cycles == [("jira", ["ENG-1"])]


@pytest.mark.parametrize("header", ["sha256=\u00e9", "sha1=" + "0" * 40, "sha256", "=" * 71])
def test_webhook_refuses_a_malformed_signature(
    client: Any, jira: FakeJira, cycles: list, header: str
) -> None:
    resp = client.post("/api/jira/webhook", json=_event(), headers={"X-Hub-Signature": header})
    assert resp.status_code == 401 and resp.get_json() == {"error": "Invalid signature"}
    assert cycles == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"query_string": {"secret": "wrong"}},
        {"headers": {"X-Aiimpl-Webhook-Secret": SECRET + "x"}},
        {"headers": {"X-Hub-Signature": "sha256=" + "0" * 64}},
        {},
    ],
)
def test_webhook_refuses_a_wrong_secret(client: Any, jira: FakeJira, cycles: list, kwargs: dict) -> None:
    resp = client.post("/api/jira/webhook", json=_event(), **kwargs)
    assert resp.status_code == 401 and resp.get_json() == {"error": "Invalid signature"}
    assert cycles == []


@pytest.mark.parametrize("raw", ["{", "null", "[]", '"x"', "1"])
def test_webhook_invalid_json(client: Any, jira: FakeJira, cycles: list, raw: str) -> None:
    """Not JSON, or JSON that is no object (it was 200 "ignored"; Linear's webhook answers 400)."""
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", data=raw, content_type="application/json")
    assert resp.status_code == 400 and resp.get_json() == {"error": "Invalid JSON payload"}
    assert cycles == []


def test_webhook_takes_people_s_text_holding_nul_or_half_a_surrogate_pair(
    client: Any, jira: FakeJira, cycles: list
) -> None:
    """A description with a NUL made the delivery "Invalid JSON payload" (and each retry): taken
    with U+FFFD in its place."""
    event = _event()
    event["issue"]["fields"]["description"] = "steps:\u0000 \ud83d"
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", data=json.dumps(event),
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_json()
    assert cycles == [("jira", ["ENG-1"])]


def test_webhook_ignores_issues_not_in_ready(client: Any, jira: FakeJira, cycles: list) -> None:
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=_event(status="Implementing"))
    assert resp.status_code == 200 and resp.get_json()["ignored"] is True
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json={"webhookEvent": "project_created"})
    assert resp.status_code == 200 and resp.get_json()["ignored"] is True
    assert cycles == []


def test_webhook_without_fields_lets_the_dispatcher_read_the_issue(
    client: Any, jira: FakeJira, cycles: list
) -> None:
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=_event(status=None))
    assert resp.status_code == 200 and cycles == [("jira", ["ENG-1"])]


def test_webhook_acknowledges_a_check_that_failed(
    client: Any, jira: FakeJira, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll picks the issue up anyway: a failed check is said, not bounced back as a 500 (and
    the answer holds no more of the failure than the check's report)."""
    from aiimpl_core.errors import AiimplError
    from aiimpl_core.services import dispatch

    def failing(provider_id: str, issue_keys: list[str], report: Any = None) -> dispatch.CycleReport:
        raise AiimplError("database unavailable")

    monkeypatch.setattr(dispatch, "run_cycle_for_issues", failing)
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=_event())
    assert resp.status_code == 200
    assert resp.get_json() == {"accepted": True, "issueKey": "ENG-1", "dispatched": False,
                               "reason": "dispatch check failed; the next poll cycle retries"}


def test_webhook_is_described_for_the_openapi_generator() -> None:
    import yaml

    from aiimpl_jira import api

    for view in (api.validate_jql, api.list_fields, api.field_options, api.webhook):
        spec = yaml.safe_load(view.__doc__.split("---", 1)[1])
        [(method, operation)] = spec.items()
        assert method in ("get", "post") and operation["summary"] and "responses" in operation
    errors = yaml.safe_load(api.field_options.__doc__.split("---", 1)[1])["get"]["responses"]
    assert {400, 401, 500, 501} <= set(errors)


def test_the_generated_openapi_describes_the_jira_endpoints(client: Any) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/api/openapi.json").get_json()
    validate(spec)
    paths = spec["paths"]
    assert set(paths["/api/jira/validate-jql"]["post"]["responses"]) == {"200", "400", "401", "500", "501"}
    assert set(paths["/api/jira/fields"]["get"]["responses"]) == {"200", "401", "500", "501"}
    assert set(paths["/api/jira/field-options"]["get"]["responses"]) == {"200", "400", "401", "500", "501"}
    assert paths["/api/jira/webhook"]["post"]["security"] == []


def test_webhook_ignores_comment_events(client: Any, jira: FakeJira, cycles: list) -> None:
    event = {**_event(status=None), "webhookEvent": "comment_created", "comment": {"id": "1"}}
    resp = client.post(f"/api/jira/webhook?secret={SECRET}", json=event)
    assert resp.status_code == 200 and resp.get_json()["ignored"] is True
    assert cycles == []
