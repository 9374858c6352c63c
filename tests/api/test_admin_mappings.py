"""``/api/mappings``: every row of the reference's ``POST /api/mappings``, "Mapping changes" and
``sync-workflows`` tables, with the fake tracker and runner plugins, on the real database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core import hookimpl
from aiimpl_core.errors import ProviderConfigError, ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Mapping, Secret
from aiimpl_core.services import mappings as service
from aiimpl_core.services import secrets as secrets_service
from aiimpl_core.types import SyncResult

VALID: dict[str, Any] = {
    "teamKey": "ENG",
    "owner": "acme",
    "repo": "api",
    "defaultBranch": "main",
    "ticketing": {"provider": "fake-tracker"},
}


#: what the strict tracker does while it checks a mapping (a test's stand-in for asking its service)
DURING_CHECK: list[Callable[[], None]] = []


class StrictTracker:
    """A second ticketing provider whose settings need a ``project`` string."""

    def __init__(self, base: type) -> None:
        class Provider(base):  # type: ignore[misc, valid-type]
            id = "strict-tracker"
            display_name = "Strict tracker"

            def validate_mapping(self, mapping: Any) -> None:
                for action in DURING_CHECK:
                    action()
                project = (mapping.get("ticketing") or {}).get("project")
                if not isinstance(project, str) or not project:
                    raise ProviderConfigError("ticketing.project is required for strict-tracker")

        self.provider = Provider

    @hookimpl
    def aiimpl_register_ticketing_providers(self, register: Callable[..., None]) -> None:
        register(self.provider)


@pytest.fixture
def aiimpl_plugins(adm_plugins, adm_tracker) -> list[object]:
    return [*adm_plugins, StrictTracker(adm_tracker.provider_class)]


@pytest.fixture
def during_check() -> Iterator[list[Callable[[], None]]]:
    yield DURING_CHECK
    DURING_CHECK.clear()


def post(client: Any, headers: dict[str, str], body: Any = None, *, data: Any = None) -> Any:
    if data is not None:
        return client.post(
            "/api/mappings", data=data, headers={**headers, "Content-Type": "application/json"}
        )
    return client.post("/api/mappings", json=body, headers=headers)


def merged(**changes: Any) -> dict[str, Any]:
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not ...}


# The reference's POST /api/mappings tables, every row (group 1, model provider, runner, work),
# then our own rows for what the reference leaves open. Each case: (id, body, message).
POST_ROWS: list[tuple[str, Any, str]] = [
    # group 1
    ("defaultBranch missing", merged(defaultBranch=...), "defaultBranch is required"),
    ("defaultBranch empty", merged(defaultBranch=""), "defaultBranch is required"),
    ("not JSON", b"{nope", "Invalid request body"),
    ("JSON array", b"[1, 2]", "Invalid request body"),
    ("teamKey missing", merged(teamKey=...), "teamKey, owner, and repo are required"),
    ("owner missing", merged(owner=...), "teamKey, owner, and repo are required"),
    ("repo blank", merged(repo="  "), "teamKey, owner, and repo are required"),
    ("owner null", merged(owner=None), "teamKey, owner, and repo are required"),
    # beyond the reference, whose rule is for a missing field: one that is there but no string
    ("repo not a string", merged(repo=5), "repo must be a string"),
    ("owner not a string", merged(owner=["acme"]), "owner must be a string"),
    ("defaultBranch not a string", merged(defaultBranch=True), "defaultBranch must be a string"),
    # group 2: the model provider
    (
        "bedrock without region",
        merged(provider="bedrock"),
        "awsRegion is required when provider is 'bedrock'",
    ),
    (
        "bedrock on fly",
        merged(provider="bedrock", awsRegion="eu-west-1", executionMode="fly-machines"),
        "provider 'bedrock' is not supported with executionMode 'fly-machines'",
    ),
    ("unknown provider", merged(provider="openai"), "provider must be 'anthropic' or 'bedrock'"),
    # group 3: where sessions run
    (
        "unknown executionMode",
        merged(executionMode="k8s"),
        "executionMode must be 'github-actions' or 'fly-machines'",
    ),
    ("machineCpus zero", merged(machineCpus=0), "machineCpus must be a positive integer"),
    ("machineCpus string", merged(machineCpus="2"), "machineCpus must be a positive integer"),
    ("machineCpus bool", merged(machineCpus=True), "machineCpus must be a positive integer"),
    ("machineMemoryMb small", merged(machineMemoryMb=255), "machineMemoryMb must be an integer >= 256"),
    ("machineMemoryMb float", merged(machineMemoryMb=512.5), "machineMemoryMb must be an integer >= 256"),
    (
        "sessionMode other",
        merged(sessionMode="lazy"),
        "sessionMode must be 'autonomous', 'interactive', or 'hybrid'",
    ),
    # group 4: the work
    ("branchPrefix invalid", merged(branchPrefix="ai..x/"), "branchPrefix invalid: must not contain '..'"),
    ("extraEnv list", merged(extraEnv=["A=1"]), "extraEnv must be a plain object"),
    ("extraEnv number value", merged(extraEnv={"A": 1}), "extraEnv values must all be strings"),
    # `BIG=` and the value and a NUL: one byte over Linux's 128 KiB for a variable (é takes two bytes)
    ("extraEnv too long", merged(extraEnv={"BIG": "é" + "x" * 131066}),
     "extraEnv BIG is too long: a variable takes at most 131,071 bytes with its name"),
    ("cap zero", merged(maxInProgressAiIssues=0), "maxInProgressAiIssues must be a positive integer"),
    ("cap string", merged(maxInProgressAiIssues="3"), "maxInProgressAiIssues must be a positive integer"),
    # more than the database stores is not "below"
    ("machineCpus huge", merged(machineCpus=2**31), "machineCpus must be at most 2147483647"),
    ("machineMemoryMb huge", merged(machineMemoryMb=10**11), "machineMemoryMb must be at most 2147483647"),
    ("cap huge", merged(maxInProgressAiIssues=2**31), "maxInProgressAiIssues must be at most 2147483647"),
    (
        "planning without workflow",
        merged(planningEnabled=True),
        "planningWorkflowFile is required when planningEnabled is true",
    ),
    # a blank value is not given, as for defaultBranch
    (
        "bedrock with a blank region",
        merged(provider="bedrock", awsRegion=" \t"),
        "awsRegion is required when provider is 'bedrock'",
    ),
    (
        "planning with a blank workflow",
        merged(planningEnabled=True, executionMode="fly-machines", planningWorkflowFile="\t "),
        "planningWorkflowFile is required when planningEnabled is true",
    ),
    (
        "ticketing validation",
        merged(ticketing={"provider": "strict-tracker"}),
        "ticketing.project is required for strict-tracker",
    ),
    # beyond the reference: clear messages, never a 500
    (
        "teamKey shape",
        merged(teamKey="EN G"),
        "teamKey must be at most 64 letters, digits, '_' or '-', starting with a letter or digit",
    ),
    (
        "teamKey too long",
        merged(teamKey="E" * 65),
        "teamKey must be at most 64 letters, digits, '_' or '-', starting with a letter or digit",
    ),
    (
        "teamKey ending in a newline",
        merged(teamKey="ENG\n"),
        "teamKey must be at most 64 letters, digits, '_' or '-', starting with a letter or digit",
    ),
    ("owner shape", merged(owner="acme/inc"), "owner must be a GitHub user or organization name"),
    ("defaultBranch ends in '/'", merged(defaultBranch="main/"), "defaultBranch must be a valid branch name"),
    ("defaultBranch ends in '.'", merged(defaultBranch="main."), "defaultBranch must be a valid branch name"),
    ("defaultBranch '@'", merged(defaultBranch="@"), "defaultBranch must be a valid branch name"),
    ("defaultBranch with '..'", merged(defaultBranch="a..b"), "defaultBranch must be a valid branch name"),
    ("owner ending in a newline", merged(owner="acme\n"), "owner must be a GitHub user or organization name"),
    ("repo ending in a newline", merged(repo="api\n"), "repo must be a GitHub repository name"),
    (
        "extraEnv key ending in a newline",
        merged(extraEnv={"FOO\n": "x"}),
        "extraEnv keys must be environment variable names (letters, digits, '_')",
    ),
    ("repo shape", merged(repo="a" * 101), "repo must be a GitHub repository name"),
    (
        "extraEnv key",
        merged(extraEnv={"1A": "x"}),
        "extraEnv keys must be environment variable names (letters, digits, '_')",
    ),
    (
        "ticketing provider unknown",
        merged(ticketing={"provider": "trello"}),
        "ticketing.provider must be 'fake-tracker' or 'strict-tracker' ('trello' is not installed, or is "
        "disabled)",
    ),
    (
        # (a value the size of the body is not sent back whole in the message)
        "ticketing provider unknown and long",
        merged(ticketing={"provider": "t" * 300_000}),
        "ticketing.provider must be 'fake-tracker' or 'strict-tracker' ('" + "t" * 64 + "…' is not "
        "installed, or is disabled)",
    ),
    ("ticketing not an object", merged(ticketing="linear"), "ticketing must be a plain object"),
    (
        "ticketing missing with two trackers",
        merged(ticketing=...),
        "ticketing.provider must be 'fake-tracker' or 'strict-tracker'",
    ),
    (
        "ticketing settings without their provider, with two trackers",
        merged(ticketing={"project": "ENG"}),
        "ticketing.provider must be 'fake-tracker' or 'strict-tracker'",
    ),
    ("planningEnabled string", merged(planningEnabled="yes"), "planningEnabled must be true or false"),
    ("paused number", merged(paused=1), "paused must be true or false"),
]


@pytest.mark.parametrize("body,message", [pytest.param(b, m, id=i) for i, b, m in POST_ROWS])
def test_post_mappings_table(client, admin_headers, body, message) -> None:
    resp = (
        post(client, admin_headers, data=body)
        if isinstance(body, bytes)
        else post(client, admin_headers, body)
    )
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json() == {"error": message}
    assert db.session.scalars(select(Mapping)).all() == []


def test_first_failing_rule_wins_in_table_order(client, admin_headers) -> None:
    body = merged(defaultBranch=..., provider="openai", executionMode="k8s", machineCpus=0, extraEnv=[])
    assert post(client, admin_headers, body).get_json() == {"error": "defaultBranch is required"}
    body = merged(provider="openai", executionMode="k8s", machineCpus=0, extraEnv=[])
    assert post(client, admin_headers, body).get_json() == {
        "error": "provider must be 'anthropic' or 'bedrock'"
    }
    body = merged(executionMode="k8s", sessionMode="x", branchPrefix="-x")
    assert post(client, admin_headers, body).get_json()["error"].startswith("executionMode must be")
    body = merged(sessionMode="x", branchPrefix="-x", maxInProgressAiIssues=0)
    assert post(client, admin_headers, body).get_json()["error"].startswith("sessionMode must be")
    body = merged(branchPrefix="-x", extraEnv=[], ticketing={"provider": "strict-tracker"})
    assert post(client, admin_headers, body).get_json() == {
        "error": "branchPrefix invalid: must not start with '-'"
    }


@pytest.mark.parametrize(
    "prefix,detail",
    [
        ("a..b/", "must not contain '..'"),
        ("ai /", "must not contain spaces or control characters"),
        ("ai\t/", "must not contain spaces or control characters"),
        ("ai\x01/", "must not contain spaces or control characters"),
        ("ai~/", "must not contain '~'"),
        ("ai^/", "must not contain '^'"),
        ("ai:/", "must not contain ':'"),
        ("ai?/", "must not contain '?'"),
        ("ai*/", "must not contain '*'"),
        ("ai[/", "must not contain '['"),
        ("ai\\/", "must not contain '\\'"),
        ("-ai/", "must not start with '-'"),
        ("/ai/", "must not start with '/'"),
        ("ai//x", "must not contain '//'"),
        ("ai.lock", "must not end with '.lock'"),
        ("ai.lock/", "a path component must not end with '.lock'"),
        ("ai@{x/", "must not contain '@{'"),
        ("ai/.hidden/", "a path component must not start with '.'"),
        (5, "must be a string"),
        ("a" * 101, "must be at most 100 characters"),
    ],
)
def test_branch_prefix_rules_say_which(client, admin_headers, prefix, detail) -> None:
    resp = post(client, admin_headers, merged(branchPrefix=prefix))
    assert resp.status_code == 400
    assert resp.get_json() == {"error": f"branchPrefix invalid: {detail}"}


@pytest.mark.parametrize("prefix", ["ai/", "", "feature/ai-", "bot.x/", "a@b/"])
def test_valid_branch_prefixes_are_kept(client, admin_headers, prefix) -> None:
    resp = post(client, admin_headers, merged(branchPrefix=prefix))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["branchPrefix"] == prefix


def test_create_then_update_keeps_omitted_fields(client, admin_headers) -> None:
    full = merged(
        provider="bedrock",
        awsRegion="eu-west-1",
        machineCpus=4,
        machineMemoryMb=4096,
        sessionMode="hybrid",
        branchPrefix="bot/",
        extraEnv={"NODE_ENV": "test"},
        maxInProgressAiIssues=3,
        planningEnabled=True,
        planningWorkflowFile="plan.yml",
    )
    created = post(client, admin_headers, full)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    for key, value in full.items():
        assert body[key] == value, key

    updated = post(client, admin_headers, {"teamKey": "ENG", "repo": "web"})
    assert updated.status_code == 200, updated.get_json()
    after = updated.get_json()
    assert after["repo"] == "web"
    for key in (
        "owner",
        "defaultBranch",
        "provider",
        "awsRegion",
        "machineCpus",
        "extraEnv",
        "maxInProgressAiIssues",
        "planningWorkflowFile",
        "ticketing",
    ):
        assert after[key] == body[key], key
    row = db.session.scalar(select(Mapping).where(Mapping.team_key == "ENG"))
    assert (row.repo, row.max_in_progress, row.aws_region) == ("web", 3, "eu-west-1")

    # an explicit null clears an optional field; an update is validated as a whole
    cleared = post(
        client, admin_headers, {"teamKey": "ENG", "maxInProgressAiIssues": None, "provider": "anthropic"}
    )
    assert cleared.get_json()["maxInProgressAiIssues"] is None
    refused = post(client, admin_headers, {"teamKey": "ENG", "provider": "bedrock", "awsRegion": None})
    assert refused.get_json() == {"error": "awsRegion is required when provider is 'bedrock'"}
    assert post(client, admin_headers, {"teamKey": "ENG", "defaultBranch": ""}).get_json() == {
        "error": "defaultBranch is required"
    }


def test_update_without_default_branch_uses_the_stored_one(client, admin_headers, adm_mapping) -> None:
    adm_mapping("ENG")
    resp = post(client, admin_headers, {"teamKey": "ENG", "owner": "acme", "repo": "api"})
    assert resp.status_code == 200
    assert resp.get_json()["defaultBranch"] == "main"


def test_defaults_on_create(client, admin_headers) -> None:
    body = post(client, admin_headers, VALID).get_json()
    assert body["provider"] == "anthropic"
    assert body["executionMode"] == "github-actions"
    assert body["sessionMode"] == "autonomous"
    assert body["branchPrefix"] == "ai/"
    assert body["paused"] is False and body["planningEnabled"] is False


def test_list_and_get(client, admin_headers, adm_mapping) -> None:
    adm_mapping("WEB")
    adm_mapping("ENG")
    listed = client.get("/api/mappings", headers=admin_headers).get_json()
    assert [m["teamKey"] for m in listed] == ["ENG", "WEB"]
    one = client.get("/api/mappings/WEB", headers=admin_headers)
    assert one.status_code == 200 and one.get_json()["teamKey"] == "WEB"
    missing = client.get("/api/mappings/NOPE", headers=admin_headers)
    assert (missing.status_code, missing.get_json()) == (404, {"error": "Team not found"})


# The reference's "Mapping changes" table (PATCH and DELETE), every row.
CHANGE_ROWS: list[tuple[str, str, Any, int, Any]] = [
    ("patch not JSON", "PATCH", b"nope", 400, {"error": "Invalid request body"}),
    ("patch array", "PATCH", b"[]", 400, {"error": "Invalid request body"}),
    (
        "cap zero",
        "PATCH",
        {"maxInProgressAiIssues": 0},
        400,
        {"error": "maxInProgressAiIssues must be a positive integer"},
    ),
    (
        "cap string",
        "PATCH",
        {"maxInProgressAiIssues": "2"},
        400,
        {"error": "maxInProgressAiIssues must be a positive integer"},
    ),
    (
        "cap huge",
        "PATCH",
        {"maxInProgressAiIssues": 2**31},
        400,
        {"error": "maxInProgressAiIssues must be at most 2147483647"},
    ),
    (
        "both",
        "PATCH",
        {"paused": True, "maxInProgressAiIssues": 2},
        400,
        {"error": "Specify either paused or maxInProgressAiIssues, not both"},
    ),
    ("neither", "PATCH", {}, 400, {"error": service.NEITHER}),
    ("another field only", "PATCH", {"machineCpus": 2}, 400, {"error": service.NEITHER}),
    ("paused not bool", "PATCH", {"paused": "yes"}, 400, {"error": "paused must be true or false"}),
    ("patch unknown team", "PATCH:NOPE", {"paused": True}, 404, {"error": "Team not found"}),
    ("delete unknown team", "DELETE:NOPE", None, 404, {"deleted": False}),
]


@pytest.mark.parametrize("method,body,status,answer", [pytest.param(*r[1:], id=r[0]) for r in CHANGE_ROWS])
def test_mapping_changes_table(client, admin_headers, adm_mapping, method, body, status, answer) -> None:
    adm_mapping("ENG")
    method, _, team = method.partition(":")
    path = f"/api/mappings/{team or 'ENG'}"
    if isinstance(body, bytes):
        resp = client.open(
            path, method=method, data=body, headers={**admin_headers, "Content-Type": "application/json"}
        )
    else:
        resp = client.open(path, method=method, json=body, headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (status, answer)
    row = db.session.scalar(select(Mapping).where(Mapping.team_key == "ENG"))
    assert row is not None and row.paused is False and row.max_in_progress is None


def test_patch_pause_and_cap(client, admin_headers, adm_mapping) -> None:
    adm_mapping("ENG")
    paused = client.patch("/api/mappings/ENG", json={"paused": True}, headers=admin_headers)
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    capped = client.patch("/api/mappings/ENG", json={"maxInProgressAiIssues": 2}, headers=admin_headers)
    assert capped.get_json()["maxInProgressAiIssues"] == 2 and capped.get_json()["paused"] is True
    uncapped = client.patch("/api/mappings/ENG", json={"maxInProgressAiIssues": None}, headers=admin_headers)
    assert uncapped.get_json()["maxInProgressAiIssues"] is None
    db.session.expire_all()
    row = db.session.scalar(select(Mapping).where(Mapping.team_key == "ENG"))
    assert row.paused is True and row.max_in_progress is None


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_cap_is_refused_by_post_and_patch_alike(client, admin_headers, adm_mapping, blank) -> None:
    """A cap is a whole number, and a blank string is none: POST and PATCH refuse it with the
    reference's message (the rule that a blank value is no value is for text fields), so it never
    removes a cap by accident. null removes it, on both."""
    adm_mapping("ENG", maxInProgressAiIssues=3)
    refused = {"error": "maxInProgressAiIssues must be a positive integer"}
    posted = post(client, admin_headers, merged(maxInProgressAiIssues=blank))
    assert (posted.status_code, posted.get_json()) == (400, refused)
    patched = client.patch("/api/mappings/ENG", json={"maxInProgressAiIssues": blank}, headers=admin_headers)
    assert (patched.status_code, patched.get_json()) == (400, refused)
    assert service.get("ENG")["maxInProgressAiIssues"] == 3
    cleared = client.patch("/api/mappings/ENG", json={"maxInProgressAiIssues": None}, headers=admin_headers)
    assert (cleared.status_code, cleared.get_json()["maxInProgressAiIssues"]) == (200, None)


def test_delete_removes_the_mapping_and_its_secrets(client, admin_headers, adm_mapping) -> None:
    adm_mapping("ENG")
    secrets_service.set_secret("ENG", "TOKEN", "s3cret")
    secrets_service.set_secret("", "GLOBAL_ONE", "g")
    resp = client.delete("/api/mappings/ENG", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (200, {"deleted": True})
    assert db.session.scalars(select(Mapping)).all() == []
    assert [s.name for s in db.session.scalars(select(Secret))] == ["GLOBAL_ONE"]
    again = client.delete("/api/mappings/ENG", headers=admin_headers)
    assert (again.status_code, again.get_json()) == (404, {"deleted": False})


# The reference's sync-workflows table, every row, plus the success and a backend without workflows.
def test_sync_workflows_table(client, admin_headers, adm_mapping, adm_runner, monkeypatch) -> None:
    adm_mapping("ENG")
    adm_mapping("FLY", executionMode="fly-machines")

    missing = client.post("/api/mappings/NOPE/sync-workflows", headers=admin_headers)
    assert (missing.status_code, missing.get_json()) == (404, {"error": "Team not found"})

    ok = client.post("/api/mappings/ENG/sync-workflows", headers=admin_headers)
    assert ok.status_code == 200
    assert ok.get_json() == {
        "teamKey": "ENG",
        "backend": "github-actions",
        "created": [],
        "updated": [],
        "unchanged": [".github/workflows/ai-implement.yml"],
        "warnings": [],
    }
    assert adm_runner.synced == ["ENG"]

    no_workflows = client.post("/api/mappings/FLY/sync-workflows", headers=admin_headers)
    assert no_workflows.status_code == 400
    assert no_workflows.get_json() == {
        "error": "executionMode 'fly-machines' does not use workflow files; nothing to sync"
    }

    def refuse(self: Any, mapping: Any) -> Any:
        raise ProviderError("GitHub API error 403: Resource not accessible by integration", status=403)

    monkeypatch.setattr(adm_runner.backend_class, "sync_workflows", refuse)
    failed = client.post("/api/mappings/ENG/sync-workflows", headers=admin_headers)
    assert (failed.status_code, failed.get_json()) == (
        500,
        {"error": "GitHub API error 403: Resource not accessible by integration"},
    )

    def crash(self: Any, mapping: Any) -> Any:
        raise KeyError("token=abc")

    monkeypatch.setattr(adm_runner.backend_class, "sync_workflows", crash)
    crashed = client.post("/api/mappings/ENG/sync-workflows", headers=admin_headers)
    assert (crashed.status_code, crashed.get_json()) == (500, {"error": "Fake github-actions: KeyError"})


@pytest.mark.parametrize(("answer", "said"), [
    ({"created": []}, "dict, not a SyncResult"),
    (None, "NoneType, not a SyncResult"),
    (SyncResult(created="a.yml"), "a SyncResult whose created is not a tuple of strings"),
    (SyncResult(warnings=(1,)), "a SyncResult whose warnings is not a tuple of strings"),
])
def test_sync_workflows_refuses_an_answer_that_is_no_sync_result(
    client, admin_headers, adm_mapping, adm_runner, monkeypatch, answer, said
) -> None:
    """A plugin's broken answer was read outside the call: a 500 "Internal server error", a
    traceback in the log, and the CLI's ``Error: Internal server error``."""
    adm_mapping("ENG")
    monkeypatch.setattr(adm_runner.backend_class, "sync_workflows", lambda self, mapping: answer)
    resp = client.post("/api/mappings/ENG/sync-workflows", headers=admin_headers)
    assert (resp.status_code, resp.get_json()) == (
        500, {"error": f"Fake github-actions: sync_workflows answered {said}"})


@pytest.mark.parametrize(
    "values,text",
    [
        ([], "the id of an installed plugin, and none is installed (`aiimpl plugins list` shows them)"),
        (["a"], "'a'"),
        (["anthropic", "bedrock"], "'anthropic' or 'bedrock'"),
        (["a", "b", "c"], "'a', 'b', or 'c'"),
    ],
)
def test_allowed_values_wording(values, text) -> None:
    assert service.one_of(values) == text


def test_standard_providers_are_listed_in_the_reference_order() -> None:
    assert service.ordered("runner", ["example", "fly-machines", "github-actions"]) == [
        "github-actions",
        "fly-machines",
        "example",
    ]
    assert service.ordered("model", ["bedrock", "anthropic"]) == ["anthropic", "bedrock"]


def test_a_concurrent_create_of_the_same_team_becomes_an_update(
    client, admin_headers, adm_mapping, monkeypatch
):
    """The other request's row is not visible yet when this one looks: the unique key refuses the
    insert, and the body is applied to the row the other request created."""
    adm_mapping("ENG")
    real_get_row = service.get_row
    calls = []

    def not_yet_visible(team_key: str) -> Any:
        calls.append(team_key)
        # neither the read the body is validated against nor the one under the writer's lock
        return None if len(calls) <= 2 else real_get_row(team_key)

    monkeypatch.setattr(service, "get_row", not_yet_visible)
    resp = post(client, admin_headers, merged(repo="web"))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["repo"] == "web"
    assert [m.repo for m in db.session.scalars(select(Mapping))] == ["web"]


STRICT = {"provider": "strict-tracker", "project": "P"}


def _write_meanwhile(app: Any, write: Callable[[], Any]) -> Callable[[], None]:
    """An action for the tracker's check: another request's write, from its own connection,
    which must go through while the check runs (it waits behind a writer's lock otherwise)."""
    went_through: list[bool] = []

    def writer() -> None:
        with app.app_context():
            write()

    def action() -> None:
        if went_through:
            return  # once
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(10)
        went_through.append(not thread.is_alive())

    action.went_through = went_through  # type: ignore[attr-defined]
    return action


def test_the_trackers_check_holds_no_other_writer(app, client, admin_headers, adm_mapping, during_check):
    """A tracker's check may ask its service (Jira parses the JQL clause, with retries): runner
    callbacks and the poller must not wait for it."""
    adm_mapping("OPS")
    action = _write_meanwhile(app, lambda: service.patch("OPS", {"paused": True}))
    during_check.append(action)
    resp = post(client, admin_headers, merged(ticketing=STRICT))
    assert resp.status_code == 201, resp.get_json()
    assert action.went_through == [True]
    assert service.get("OPS")["paused"] is True


def test_a_change_made_while_the_tracker_checks_is_kept(
    app, client, admin_headers, during_check
) -> None:
    """The update is validated again against the mapping as the other request left it, and only
    the fields the body gives are changed (no stale copy of the rest is written back)."""
    assert post(client, admin_headers, merged(ticketing=STRICT)).status_code == 201
    checks: list[int] = []
    during_check.append(lambda: checks.append(1))
    action = _write_meanwhile(app, lambda: service.patch("ENG", {"maxInProgressAiIssues": 7}))
    during_check.append(action)
    resp = post(client, admin_headers, {"teamKey": "ENG", "repo": "web"})
    assert resp.status_code == 200, resp.get_json()
    assert action.went_through == [True]
    assert len(checks) == 2  # checked again against what the other request stored
    stored = service.get("ENG")
    assert (stored["repo"], stored["maxInProgressAiIssues"]) == ("web", 7)


def test_a_mapping_changing_under_every_check_is_checked_under_the_lock(
    client, admin_headers, during_check, monkeypatch
) -> None:
    assert post(client, admin_headers, merged(ticketing=STRICT)).status_code == 201
    real_to_api = service.to_api
    reads: list[int] = []

    def always_new(row: Any) -> dict[str, Any]:
        reads.append(1)
        return {**real_to_api(row), "updatedAt": f"read {len(reads)}"}

    monkeypatch.setattr(service, "to_api", always_new)
    checks: list[int] = []
    during_check.append(lambda: checks.append(1))
    resp = post(client, admin_headers, {"teamKey": "ENG", "repo": "web"})
    assert resp.status_code == 200, resp.get_json()
    assert len(checks) == service._SAVE_TRIES + 1
    assert db.session.scalar(select(Mapping.repo)) == "web"


def test_deleting_a_mapping_keeps_its_jobs(client, admin_headers, adm_mapping) -> None:
    from aiimpl_core.orm import Job

    adm_mapping("ENG")
    row = db.session.scalar(select(Mapping))
    job = Job(
        issue_key="ENG-1", team_key="ENG", mapping_id=row.id, phase="implementation", status="completed"
    )
    db.session.add(job)
    db.session.commit()
    job_id = job.id
    assert client.delete("/api/mappings/ENG", headers=admin_headers).status_code == 200
    db.session.expire_all()
    kept = db.session.get(Job, job_id)
    assert kept is not None and kept.mapping_id is None
    assert client.get(f"/api/jobs/{job_id}", headers=admin_headers).status_code == 200


@pytest.mark.parametrize(
    "error,said",
    [
        (KeyError("project"), "unexpected error (KeyError); the orchestrator's log has the details"),
        (ProviderError("strict-tracker: GET /projects failed with HTTP 503: down"),
         "strict-tracker: GET /projects failed with HTTP 503: down"),
    ],
)
def test_a_plugin_failing_to_check_a_mapping_is_said_not_a_500(
    client, admin_headers, during_check, caplog, error, said
) -> None:
    def fail() -> None:
        raise error

    during_check.append(fail)
    resp = post(client, admin_headers, merged(ticketing=STRICT))
    assert (resp.status_code, resp.get_json()) == (
        400, {"error": f"the ticketing provider 'strict-tracker' could not check the mapping: {said}"}
    )
    assert db.session.scalars(select(Mapping)).all() == []


def test_an_extra_env_variable_as_long_as_a_process_takes_is_kept(client, admin_headers) -> None:
    """`BIG=` and 131,067 bytes: with its NUL, exactly Linux's 128 KiB for one variable."""
    value = "é" + "x" * 131065
    created = post(client, admin_headers, merged(extraEnv={"BIG": value}))
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["extraEnv"] == {"BIG": value}


@pytest.mark.parametrize("held", ["setting", "global", "team", "team-in-update"])
def test_an_extra_env_variable_holding_a_secrets_value_is_refused(app, client, admin_headers, held) -> None:
    """extraEnv is no secret: stored and answered in plain text, and passed as a GitHub Actions
    workflow's input, which anyone who can read the repository's runs sees. A value that is one of
    the orchestrator's secrets (its sensitive settings, a stored secret of the team or global) put
    there by mistake is refused, naming where it belongs; the secret's own name, not its value."""
    # the teams' mappings first: a team secret is stored for a mapping there
    assert post(client, admin_headers, merged()).status_code == 201
    assert post(client, admin_headers, merged(teamKey="OPS")).status_code == 201
    secrets_service.set_secret("", "GLOBAL_KEY", "global-secret-value")
    secrets_service.set_secret("ENG", "TEAM_KEY", "team-secret-value")
    secrets_service.set_secret("OPS", "OTHER_KEY", "other-team-value")  # another team's: not its
    value, source = {
        "setting": (app.config["AIIMPL_SECRET_KEY"], "the setting AIIMPL_SECRET_KEY"),
        "global": ("global-secret-value", "the global secret GLOBAL_KEY"),
        "team": (" team-secret-value\n", "the team secret TEAM_KEY"),
        "team-in-update": ("team-secret-value", "the team secret TEAM_KEY"),
    }[held]
    answer = post(client, admin_headers, merged(extraEnv={"NODE_ENV": "test", "DEPLOY_TOKEN": value}))
    assert answer.status_code == 400
    assert answer.get_json() == {"error": (
        f"extraEnv DEPLOY_TOKEN holds the value of {source}: extraEnv is kept and shown in plain text "
        "and passed as a workflow input anyone who reads the repository's runs sees; a session gets "
        "the team's and global secrets on a backend that keeps them (aiimpl secrets set, POST "
        "/api/mappings/{teamKey}/secrets or /api/global-secrets), and a GitHub Actions workflow reads "
        "the repository's Actions secrets")}
    routes = {rule.rule for rule in app.url_map.iter_rules()}  # (the message names routes that exist)
    assert {"/api/mappings/<teamKey>/secrets", "/api/global-secrets"} <= routes
    assert value.strip() not in answer.get_data(as_text=True)
    saved = post(client, admin_headers, merged(extraEnv={"NODE_ENV": "test", "OTHER": "other-team-value"}))
    assert saved.status_code in (200, 201), saved.get_json()


def test_a_secret_stored_later_with_an_extra_env_value_leaves_the_mappings_other_saves_alone(
    client, admin_headers
) -> None:
    """Only what a save adds or changes is compared: a value saved before a secret of the same
    value was stored does not make every later save of the mapping (its cap, say) fail."""
    assert post(client, admin_headers, merged(extraEnv={"REGION_NAME": "eu-central-1a"})).status_code == 201
    secrets_service.set_secret("ENG", "TEAM_KEY", "eu-central-1a")
    answer = post(client, admin_headers, {"teamKey": "ENG", "maxInProgressAiIssues": 3})
    assert answer.status_code == 200, answer.get_json()
    changed = post(client, admin_headers, {"teamKey": "ENG", "extraEnv": {"REGION": "eu-central-1a"}})
    assert changed.status_code == 400, changed.get_json()


class TestWithNoTrackerInstalled:
    """Only runner backends installed (a tracker plugin not yet added)."""

    @pytest.fixture
    def aiimpl_plugins(self, adm_runner, adm_fly) -> list[object]:
        return [adm_runner.plugin, adm_fly.plugin]

    def test_a_mapping_is_refused_saying_no_tracker_is_installed(self, client, admin_headers):
        """It was saved with ``ticketing {}``: none of its issues was ever read, a dispatch said the
        team had no mapping, and installing a tracker later did not give it one."""
        answer = post(client, admin_headers, merged(ticketing=...))
        assert answer.status_code == 400
        assert answer.get_json() == {"error": (
            "ticketing.provider must name an installed tracker, and none is installed (install a "
            "tracker plugin such as aiimpl-linear or aiimpl-jira; `aiimpl plugins list` shows what "
            "is installed)")}
        assert db.session.scalar(select(db.func.count()).select_from(Mapping)) == 0


class TestWithOneTrackerInstalled:
    """The tracker may be left out: the whole ``ticketing``, or its ``provider`` alone."""

    @pytest.fixture
    def aiimpl_plugins(self, adm_runner, adm_tracker) -> list[object]:
        return [adm_runner.plugin, StrictTracker(adm_tracker.provider_class)]

    def test_settings_without_the_provider_are_the_one_trackers(self, client, admin_headers):
        answer = post(client, admin_headers, merged(ticketing={"project": "ENG"}))
        assert answer.status_code == 201, answer.get_json()
        assert service.get("ENG")["ticketing"] == {"provider": "strict-tracker", "project": "ENG"}
        # and its own check still runs on them
        answer = post(client, admin_headers, merged(teamKey="OPS", ticketing={"project": ""}))
        assert answer.get_json() == {"error": "ticketing.project is required for strict-tracker"}

    def test_a_provider_given_is_still_checked(self, client, admin_headers):
        answer = post(client, admin_headers, merged(ticketing={"provider": None, "project": "ENG"}))
        assert answer.get_json() == {"error": "ticketing.provider must be 'strict-tracker'"}


class TestWithoutGitHubActionsInstalled:
    """``executionMode`` left out where the reference's default, ``github-actions``, is not installed."""

    @pytest.fixture
    def others(self, request) -> list[object]:
        from aiimpl_core.testing.fakes import FakeRunner

        return [FakeRunner(backend_id, None).plugin for backend_id in getattr(request, "param", ())]

    @pytest.fixture
    def aiimpl_plugins(self, adm_tracker, adm_fly, others) -> list[object]:
        return [adm_tracker.plugin, adm_fly.plugin, *others]

    def test_the_one_backend_installed_is_the_default(self, client, admin_headers):
        answer = post(client, admin_headers, merged(executionMode=...))
        assert answer.status_code == 201, answer.get_json()
        assert service.get("ENG")["executionMode"] == "fly-machines"

    @pytest.mark.parametrize("others", [["another-runner"]], indirect=True)
    def test_of_several_none_is_chosen_for_the_operator(self, client, admin_headers):
        """The first in order was taken: a mapping could quietly run on a backend installed for a
        test, or for another team."""
        answer = post(client, admin_headers, merged(executionMode=...))
        assert answer.status_code == 400
        assert answer.get_json() == {"error": "executionMode must be 'fly-machines' or 'another-runner'"}
        answer = post(client, admin_headers, merged(executionMode="another-runner"))
        assert answer.status_code == 201, answer.get_json()

    def test_a_reference_backend_not_installed_is_said_so(self, client, admin_headers):
        answer = post(client, admin_headers, merged(executionMode="github-actions"))
        assert answer.get_json() == {
            "error": "executionMode must be 'fly-machines' ('github-actions' is not installed, or is "
                     "disabled)"}
        answer = post(client, admin_headers, merged(executionMode="k8s"))
        assert answer.get_json() == {"error": "executionMode must be 'fly-machines'"}

    @pytest.mark.parametrize("others", [["another-runner"]], indirect=True)
    def test_an_update_of_a_mapping_whose_backend_was_removed_says_so(self, app, client, admin_headers,
                                                                        adm_mapping):
        """Its plugin uninstalled since: any update (its cap alone) was refused as if the stored value
        were a mistake of the request's, where the tracker's own removal is named."""
        adm_mapping("ENG", executionMode="another-runner")
        app.extensions["aiimpl"].classes["runner"].pop("another-runner")
        answer = post(client, admin_headers, {"teamKey": "ENG", "maxInProgressAiIssues": 3})
        assert answer.status_code == 400
        assert answer.get_json() == {
            "error": "executionMode must be 'fly-machines' ('another-runner' is not installed, or is "
                     "disabled)"}


class TestWithOnlyLocalDockerInstalled:
    """A build host running sessions in local Docker only (runner mode ``local``): no installed
    backend is one a mapping can name, and no mapping could be saved at all."""

    @pytest.fixture
    def aiimpl_plugins(self, adm_tracker) -> list[object]:
        from aiimpl_core.testing.fakes import FakeRunner

        return [adm_tracker.plugin, FakeRunner("local-docker", "local", mapping_selectable=False).plugin]

    def test_a_mapping_takes_the_references_values_and_default(self, client, admin_headers):
        answer = post(client, admin_headers, merged(executionMode=...))
        assert answer.status_code == 201, answer.get_json()
        assert service.get("ENG")["executionMode"] == "github-actions"
        answer = post(client, admin_headers, merged(teamKey="OPS", executionMode="fly-machines"))
        assert answer.status_code == 201, answer.get_json()
        for value in ("local-docker", "k8s"):
            answer = post(client, admin_headers, merged(teamKey="WEB", executionMode=value))
            assert answer.status_code == 400
            assert answer.get_json() == {"error": "executionMode must be 'github-actions' or 'fly-machines'"}


def test_two_saves_at_once_are_each_validated_against_the_other(
    app, admin_headers, adm_mapping, monkeypatch
) -> None:
    """Each save alone is valid: planning enabled (the stored mapping has its workflow file), the
    workflow file removed (planning is off). At once, each validated against the mapping before
    the other's change, and on PostgreSQL both were written: a mapping with planning on and no
    workflow file. The second waits for the first and is validated against what it stored."""
    from aiimpl_core.testing.orchestrator import Pause, Worker, first_holds_second_waits

    adm_mapping("ENG", planningWorkflowFile="ai-plan.yml")
    pause = Pause(monkeypatch, service, "lock_mapping", "first")

    def saving(body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: app.test_client().post("/api/mappings", json=body, headers=admin_headers)

    first = Worker(app, "first", saving({"teamKey": "ENG", "planningEnabled": True}))
    second = saving({"teamKey": "ENG", "planningWorkflowFile": None})
    enabled, removed = first_holds_second_waits(app, pause, first, lambda: Worker(app, "second", second))

    assert enabled.status_code == 200, enabled.get_json()
    assert (removed.status_code, removed.get_json()) == (
        400, {"error": "planningWorkflowFile is required when planningEnabled is true"})
    db.session.rollback()  # (what this thread read before the workers wrote)
    stored = service.get("ENG")
    assert (stored["planningEnabled"], stored["planningWorkflowFile"]) == (True, "ai-plan.yml")
