"""Team and global secrets: every row of the reference's "Secrets" table; names and times only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core.errors import ProviderError
from aiimpl_core.extensions import db
from aiimpl_core.orm import Secret
from aiimpl_core.services import secrets as secrets_service

TEAM = "/api/mappings/ENG/secrets"
GLOBAL = "/api/global-secrets"
VALUE = "sk-live-very-secret-value"


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def call(client: Any, headers: dict[str, str], method: str, path: str, body: Any = None) -> Any:
    if isinstance(body, bytes):
        return client.open(
            path, method=method, data=body, headers={**headers, "Content-Type": "application/json"}
        )
    return client.open(path, method=method, json=body, headers=headers)


# The reference's table, every row: (id, method, path, body, status, error).
ROWS: list[tuple[str, str, str, Any, int, str]] = [
    ("not JSON (team)", "POST", TEAM, b"name=A", 400, "Invalid request body"),
    ("not JSON (global)", "POST", GLOBAL, b"[1]", 400, "Invalid request body"),
    ("name missing", "POST", TEAM, {"value": "x"}, 400, "name and value are required"),
    ("value missing", "POST", GLOBAL, {"name": "A"}, 400, "name and value are required"),
    ("value empty", "POST", TEAM, {"name": "A", "value": ""}, 400, "name and value are required"),
    ("value blank", "POST", TEAM, {"name": "A", "value": "  \n"}, 400, "name and value are required"),
    ("value null", "POST", GLOBAL, {"name": "A", "value": None}, 400, "name and value are required"),
    # beyond the reference, whose rule is for one missing or empty: one there but no string
    ("value not a string", "POST", TEAM, {"name": "A", "value": 5}, 400, "value must be a string"),
    ("name not a string", "POST", GLOBAL, {"name": ["A"], "value": "x"}, 400, "name must be a string"),
    (
        "name with a dash",
        "POST",
        TEAM,
        {"name": "API-KEY", "value": "x"},
        400,
        "name must contain only letters, digits, and underscores",
    ),
    (
        "name ending in a newline (a pattern's $ matches before one)",
        "POST",
        GLOBAL,
        {"name": "API_KEY\n", "value": "x"},
        400,
        "name must contain only letters, digits, and underscores",
    ),
    (
        "global name with a team prefix",
        "POST",
        GLOBAL,
        {"name": "ENG_TOKEN", "value": "x"},
        400,
        "Secret name must not start with a team key prefix (ENG_)",
    ),
    ("delete unknown secret (team)", "DELETE", TEAM + "/NOPE", None, 404, "Secret not found"),
    ("delete unknown secret (global)", "DELETE", GLOBAL + "/NOPE", None, 404, "Secret not found"),
    ("unknown team: list", "GET", "/api/mappings/OPS/secrets", None, 404, "Team not found"),
    (
        "unknown team: set",
        "POST",
        "/api/mappings/OPS/secrets",
        {"name": "A", "value": "x"},
        404,
        "Team not found",
    ),
    ("unknown team: delete", "DELETE", "/api/mappings/OPS/secrets/A", None, 404, "Team not found"),
    (
        "name too long",
        "POST",
        GLOBAL,
        {"name": "A" * 256, "value": "x"},
        400,
        "name must be at most 255 characters",
    ),
]


@pytest.mark.parametrize("method,path,body,status,error", [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_secrets_table(client, admin_headers, adm_mapping, method, path, body, status, error) -> None:
    adm_mapping("ENG")
    resp = call(client, admin_headers, method, path, body)
    assert (resp.status_code, resp.get_json()) == (status, {"error": error})
    assert db.session.scalars(select(Secret)).all() == []


@pytest.mark.parametrize("path", [TEAM, GLOBAL])
def test_secret_operation_failures_are_500_with_the_message(
    client, admin_headers, adm_mapping, monkeypatch, path
):
    adm_mapping("ENG")

    def fails(*args: Any) -> Any:
        raise ProviderError("secret store unavailable")

    monkeypatch.setattr(secrets_service, "set_secret", fails)
    resp = call(client, admin_headers, "POST", path, {"name": "TOKEN", "value": VALUE})
    assert (resp.status_code, resp.get_json()) == (500, {"error": "secret store unavailable"})

    def crashes(*args: Any) -> Any:
        raise RuntimeError(f"INSERT failed for value {VALUE}")

    monkeypatch.setattr(secrets_service, "set_secret", crashes)
    resp = call(client, admin_headers, "POST", path, {"name": "TOKEN", "value": VALUE})
    assert (resp.status_code, resp.get_json()) == (500, {"error": "Secret operation failed (RuntimeError)"})
    assert VALUE not in resp.get_data(as_text=True)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", TEAM, None),
        ("POST", TEAM, {"name": "A", "value": "x"}),
        ("DELETE", TEAM + "/A", None),
        ("GET", GLOBAL, None),
        ("POST", GLOBAL, {"name": "A", "value": "x"}),
        ("DELETE", GLOBAL + "/A", None),
    ],
)
def test_secrets_need_a_configured_backend_with_secrets(
    client, admin_headers, adm_mapping, adm_runner, monkeypatch, method, path, body
) -> None:
    adm_mapping("ENG")
    monkeypatch.setattr(adm_runner.backend_class, "is_configured", lambda self: False)
    resp = call(client, admin_headers, method, path, body)
    assert (resp.status_code, resp.get_json()) == (503, {"error": "Fly sessions config not set"})


def test_names_and_times_only_never_values(client, admin_headers, adm_mapping) -> None:
    adm_mapping("ENG")
    for path, name in ((TEAM, "DEPLOY_KEY"), (GLOBAL, "NPM_TOKEN")):
        resp = call(client, admin_headers, "POST", path, {"name": name, "value": VALUE})
        assert resp.status_code == 200
        assert set(resp.get_json()) == {"name", "createdAt", "updatedAt"} and resp.get_json()["name"] == name
        listed = call(client, admin_headers, "GET", path)
        assert [s["name"] for s in listed.get_json()] == [name]
        assert VALUE not in resp.get_data(as_text=True) + listed.get_data(as_text=True)
    # stored encrypted, and handed to the team's sessions
    assert all(VALUE not in row.value_encrypted for row in db.session.scalars(select(Secret)))
    assert secrets_service.values_for_team("ENG") == {"DEPLOY_KEY": VALUE, "NPM_TOKEN": VALUE}
    # replacing keeps one row; deleting removes it
    assert (
        call(client, admin_headers, "POST", TEAM, {"name": "DEPLOY_KEY", "value": "new"}).status_code == 200
    )
    assert secrets_service.values_for_team("ENG")["DEPLOY_KEY"] == "new"
    gone = call(client, admin_headers, "DELETE", TEAM + "/DEPLOY_KEY")
    assert (gone.status_code, gone.get_json()) == (200, {"deleted": True, "name": "DEPLOY_KEY"})
    assert call(client, admin_headers, "GET", TEAM).get_json() == []
    assert [s["name"] for s in call(client, admin_headers, "GET", GLOBAL).get_json()] == ["NPM_TOKEN"]


def test_a_concurrent_first_write_of_one_name_replaces_the_value(
    client, admin_headers, adm_mapping, monkeypatch
):
    """The other request inserted the name first: the unique key refuses this insert, and the
    write is retried as a replacement instead of answering 500."""
    from sqlalchemy.exc import IntegrityError

    adm_mapping("ENG")
    real = secrets_service.set_secret
    attempts = []

    def raced(scope: str, name: str, value: str) -> Any:
        attempts.append(name)
        if len(attempts) == 1:
            real(scope, name, "written by the other request")
            raise IntegrityError("INSERT INTO secrets", {}, Exception("duplicate key"))
        return real(scope, name, value)

    monkeypatch.setattr(secrets_service, "set_secret", raced)
    resp = call(client, admin_headers, "POST", TEAM, {"name": "TOKEN", "value": VALUE})
    assert resp.status_code == 200, resp.get_json()
    assert secrets_service.values_for_team("ENG") == {"TOKEN": VALUE}
    assert len(attempts) == 2


@pytest.mark.parametrize("path", [TEAM, GLOBAL])
def test_a_value_longer_than_64k_is_refused(client, admin_headers, adm_mapping, path) -> None:
    adm_mapping("ENG")
    resp = call(client, admin_headers, "POST", path, {"name": "BUNDLE", "value": "v" * 65_537})
    assert (resp.status_code, resp.get_json()) == (400, {"error": "value must be at most 65,536 characters"})
    longest = call(client, admin_headers, "POST", path, {"name": "BUNDLE", "value": "v" * 65_536})
    assert longest.status_code == 200


@pytest.mark.parametrize("path", [TEAM, GLOBAL])
def test_nothing_is_stored_under_a_key_the_process_made_up(
    app, client, admin_headers, adm_mapping, path
) -> None:
    """Without AIIMPL_SECRET_KEY each process makes up its own key: a value stored under it could
    never be read by another process, nor by this one once restarted."""
    adm_mapping("ENG")
    app.config[secrets_service.KEY_MADE_UP] = True
    resp = call(client, admin_headers, "POST", path, {"name": "LOST", "value": VALUE})
    assert (resp.status_code, resp.get_json()) == (500, {
        "error": "AIIMPL_SECRET_KEY is not set: a secret stored now could never be read back; "
                 "set it (the same for every process) and try again"})
    assert db.session.scalar(select(Secret.id).where(Secret.name == "LOST")) is None


def test_the_app_notes_a_key_it_made_up(aiimpl_databases) -> None:
    from aiimpl_core import create_app

    made_up = create_app({"AIIMPL_DATABASE_URL": aiimpl_databases.get("sqlite"), "AIIMPL_SECRET_KEY": ""})
    given = create_app({"AIIMPL_DATABASE_URL": aiimpl_databases.get("sqlite"), "AIIMPL_SECRET_KEY": "k" * 32})
    assert made_up.config.get(secrets_service.KEY_MADE_UP) is True
    assert not given.config.get(secrets_service.KEY_MADE_UP)


def test_a_team_secret_saved_as_its_mapping_is_deleted_does_not_outlive_it(
    app, client, admin_headers, adm_mapping, monkeypatch
) -> None:
    """The mapping was there when the request began and deleted (with the team's secrets) before
    the secret was written: the secret stayed, for the next mapping created for the team to hand
    its sessions. Now the write looks for the mapping itself: 404, nothing stored."""
    from aiimpl_core.api import admin_secrets
    from aiimpl_core.services import mappings as mapping_service
    from aiimpl_core.testing.orchestrator import Worker

    adm_mapping("ENG")
    checked = admin_secrets._scope

    def deleted_meanwhile(team_key: str | None) -> str:
        scope = checked(team_key)
        assert Worker(app, "deleter", lambda: mapping_service.delete_mapping("ENG")).join() is True
        return scope

    monkeypatch.setattr(admin_secrets, "_scope", deleted_meanwhile)
    resp = call(client, admin_headers, "POST", TEAM, {"name": "DEPLOY_KEY", "value": VALUE})

    assert (resp.status_code, resp.get_json()) == (404, {"error": "Team not found"})
    assert db.session.scalars(select(Secret)).all() == []
    adm_mapping("ENG")
    assert secrets_service.values_for_team("ENG") == {}
