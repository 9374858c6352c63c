"""``POST /api/auth`` (every row of its table), the admin guard over every ``/api/`` route, and
the slow-down of repeated wrong codes across application instances sharing one database."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core.api import admin_auth
from aiimpl_core.app import create_app
from aiimpl_core.auth import admin, is_public
from aiimpl_core.extensions import db
from aiimpl_core.orm import AuthFailure
from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE, TEST_SECRET_KEY


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


@pytest.fixture
def delays(monkeypatch) -> list[float]:
    """The waits the endpoint asked for (recorded instead of slept)."""
    seen: list[float] = []
    monkeypatch.setattr(admin_auth, "sleep", seen.append)
    return seen


def raw_post(client: Any, data: bytes) -> Any:
    return client.post("/api/auth", data=data, headers={"Content-Type": "application/json"})


# The reference's POST /api/auth table, every row.
AUTH_ROWS: list[tuple[str, Any, int, str]] = [
    ("not JSON", b"{code", 400, "Invalid request body"),
    ("empty body", b"", 400, "Invalid request body"),
    ("JSON array", b'["x"]', 400, "Invalid request body"),
    ("code missing", b"{}", 400, "Invalid request body"),
    ("code not a string", b'{"code": 1234}', 400, "Invalid request body"),
    ("wrong code", {"code": "guess"}, 403, "Invalid access code"),
    ("empty code", {"code": ""}, 403, "Invalid access code"),
]


@pytest.mark.parametrize("body,status,message", [pytest.param(*r[1:], id=r[0]) for r in AUTH_ROWS])
def test_auth_table(client, delays, body, status, message) -> None:
    resp = raw_post(client, body) if isinstance(body, bytes) else client.post("/api/auth", json=body)
    assert (resp.status_code, resp.get_json()) == (status, {"error": message})


def test_no_code_is_accepted_while_the_access_code_is_unset(app, client, delays) -> None:
    app.config["AIIMPL_ADMIN_ACCESS_CODE"] = None
    for code in ("", "None", TEST_ADMIN_CODE):
        resp = client.post("/api/auth", json={"code": code})
        assert (resp.status_code, resp.get_json()) == (403, {"error": "Invalid access code"})


def test_right_code_gives_a_working_expiring_session(app, client, delays) -> None:
    resp = client.post("/api/auth", json={"code": TEST_ADMIN_CODE})
    assert resp.status_code == 200
    body = resp.get_json()
    assert set(body) == {"token", "expiresAt"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["expiresAt"])
    headers = {"Authorization": f"Bearer {body['token']}"}
    assert client.get("/api/jobs", headers=headers).status_code == 200
    # the same token, once older than the session lifetime, is refused
    app.config["AIIMPL_ADMIN_SESSION_SECONDS"] = -1
    expired = client.get("/api/jobs", headers=headers)
    assert (expired.status_code, expired.get_json()) == (401, {"error": "Unauthorized"})


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer not-a-token", "Bearer a b", "Bearer " + "x" * 5000],
)
def test_bad_sessions_are_unauthorized(client, header) -> None:
    headers = {"Authorization": header} if header is not None else {}
    resp = client.get("/api/mappings", headers=headers)
    assert (resp.status_code, resp.get_json()) == (401, {"error": "Unauthorized"})


def test_a_session_signed_with_another_key_is_unauthorized(app, client) -> None:
    from itsdangerous import URLSafeTimedSerializer

    forged = URLSafeTimedSerializer("another-key-0123456789abcdef", salt=admin.SALT).dumps({"admin": True})
    resp = client.get("/api/mappings", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status_code == 401


def test_wrong_codes_slow_the_client_down_and_a_right_code_resets(app, client, delays) -> None:
    for _ in range(admin.THROTTLE_AFTER):
        assert client.post("/api/auth", json={"code": "nope"}).status_code == 403
    assert delays == []  # the first wrong codes cost nothing
    for _ in range(8):
        assert client.post("/api/auth", json={"code": "nope"}).status_code == 403
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]  # progressively longer, capped
    # the right code waits too (a quick answer must not reveal a right guess), then resets
    assert client.post("/api/auth", json={"code": TEST_ADMIN_CODE}).status_code == 200
    assert delays[-1] == 4.0 and len(delays) == 9
    assert db.session.scalars(select(AuthFailure)).all() == []
    assert client.post("/api/auth", json={"code": "nope"}).status_code == 403
    assert len(delays) == 9


def test_counts_are_per_client(app, client, delays) -> None:
    for _ in range(admin.THROTTLE_AFTER + 1):
        client.post("/api/auth", json={"code": "nope"}, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert delays == [0.25]  # the sixth attempt of 10.0.0.1 waited
    before = list(delays)
    client.post("/api/auth", json={"code": "nope"}, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert delays == before  # another client is not slowed down
    rows = {r.client: r.failures for r in db.session.scalars(select(AuthFailure))}
    assert rows == {"10.0.0.1": admin.THROTTLE_AFTER + 1, "10.0.0.2": 1}


@pytest.mark.parametrize("hops", [0, 1])
def test_behind_a_proxy_the_count_is_per_forwarded_client(app, database_url, delays, hops) -> None:
    """AIIMPL_PROXY_HOPS=1: the client is the one the proxy names in X-Forwarded-For, so one client's
    wrong codes do not slow down everyone behind the proxy; 0 (the default) trusts no header, so a
    client cannot pick a fresh address for each guess."""
    behind = create_app(
        {"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
         "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "AIIMPL_PROXY_HOPS": hops, "TESTING": True},
        load_entrypoints=False,
        environ={},
    ).test_client()
    proxy = {"REMOTE_ADDR": "10.9.9.9"}
    for n in range(admin.THROTTLE_AFTER + 1):
        behind.post("/api/auth", json={"code": "nope"}, environ_base=proxy,
                    headers={"X-Forwarded-For": f"203.0.113.{n}"})
    rows = {r.client: r.failures for r in db.session.scalars(select(AuthFailure))}
    if hops:
        assert delays == [] and rows == {f"203.0.113.{n}": 1 for n in range(admin.THROTTLE_AFTER + 1)}
    else:
        assert delays == [0.25] and rows == {"10.9.9.9": admin.THROTTLE_AFTER + 1}


def test_the_count_is_shared_by_every_worker_of_one_database(app, database_url, delays) -> None:
    """Two application instances (two workers or hosts) on one database see one count."""
    other = create_app(
        {
            "AIIMPL_DATABASE_URL": database_url,
            "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
            "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE,
            "TESTING": True,
        },
        load_entrypoints=False,
        environ={},
    )
    first, second = app.test_client(), other.test_client()
    for n in range(admin.THROTTLE_AFTER):
        (first if n % 2 else second).post("/api/auth", json={"code": "nope"})
    assert delays == []
    first.post("/api/auth", json={"code": "nope"})
    second.post("/api/auth", json={"code": "nope"})
    assert delays == [0.25, 0.5]


def test_old_failures_expire(app, client, delays) -> None:
    from datetime import timedelta

    for _ in range(admin.THROTTLE_AFTER + 2):
        client.post("/api/auth", json={"code": "nope"})
    assert delays
    row = db.session.scalar(select(AuthFailure))
    row.window_start = row.window_start - timedelta(seconds=admin.THROTTLE_WINDOW + 1)
    db.session.commit()
    delays.clear()
    client.post("/api/auth", json={"code": "nope"})
    assert delays == []
    db.session.expire_all()
    assert db.session.scalar(select(AuthFailure)).failures == 1


# -- the guard: no /api/ route is open unless marked public ---------------------------------------

#: The views that authenticate themselves (tokens, nonces, signatures) or start a session.
EXPECTED_PUBLIC = {
    "/api/auth",
    "/api/openapi.json",
    "/api/token",
    "/api/status",
    "/api/step-report",
    "/api/github/webhook",
}


@pytest.fixture
def full_app(adm_full_app) -> Any:
    return adm_full_app


def _fill(rule: str) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "1" if "int" in m.group(0) else "ENG", rule)


def test_every_api_route_needs_the_admin_session_unless_public(full_app) -> None:
    client = full_app.test_client()
    public, guarded = set(), []
    for rule in full_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        view = full_app.view_functions[rule.endpoint]
        if is_public(view):
            public.add(rule.rule)
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            resp = client.open(_fill(rule.rule), method=method, json={})
            assert (resp.status_code, resp.get_json()) == (401, {"error": "Unauthorized"}), (
                method,
                rule.rule,
            )
            guarded.append((method, rule.rule))
    plugin_webhooks = public - EXPECTED_PUBLIC
    assert EXPECTED_PUBLIC <= public
    # beyond the reference's public endpoints, only plugin webhooks are open
    assert all(re.fullmatch(r"/api/[a-z0-9-]+/webhook", p) for p in plugin_webhooks), plugin_webhooks
    assert ("POST", "/api/mappings") in guarded and ("DELETE", "/api/sessions/<machineId>") in guarded
    assert len(guarded) >= 20
