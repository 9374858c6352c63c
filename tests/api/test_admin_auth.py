"""``POST /api/auth`` (every row of its table), the admin guard over every ``/api/`` route, and
the slow-down of repeated wrong codes across application instances sharing one database."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core.app import create_app
from aiimpl_core.auth import admin, is_public
from aiimpl_core.extensions import db
from aiimpl_core.orm import AuthFailure
from aiimpl_core.testing.orchestrator import each_released_together
from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE, TEST_SECRET_KEY


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


class Clock:
    """The throttle's clock, stepped by the tests; ``waits`` are the ``Retry-After`` answers seen."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self.waits: list[int] = []

    def __call__(self) -> datetime:
        return self.now

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def delays(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(admin, "clock", clock)
    return clock


def attempt(client: Any, code: str, clock: Clock, **kwargs: Any) -> int:
    """One sign-in; a refusal for coming too soon is recorded in ``clock.waits``."""
    resp = client.post("/api/auth", json={"code": code}, **kwargs)
    if "Retry-After" in resp.headers:
        assert (resp.status_code, resp.get_json()) == (403, {"error": "Invalid access code"})
        clock.waits.append(int(resp.headers["Retry-After"]))
    return resp.status_code


def raw_post(client: Any, data: bytes) -> Any:
    return client.post("/api/auth", data=data, headers={"Content-Type": "application/json"})


# The reference's POST /api/auth table, every row.
AUTH_ROWS: list[tuple[str, Any, int, str]] = [
    ("not JSON", b"{code", 400, "Invalid request body"),
    ("empty body", b"", 400, "Invalid request body"),
    ("JSON array", b'["x"]', 400, "Invalid request body"),
    # beyond the reference, whose "Invalid request body" is for a body that is not JSON
    ("code missing", b"{}", 400, "code must be a string of at most 1024 characters"),
    ("code null", b'{"code": null}', 400, "code must be a string of at most 1024 characters"),
    ("code not a string", b'{"code": 1234}', 400, "code must be a string of at most 1024 characters"),
    ("code too long", {"code": "x" * 1025}, 400, "code must be a string of at most 1024 characters"),
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


def failures() -> dict[str, int]:
    db.session.expire_all()
    return {r.client: r.failures for r in db.session.scalars(select(AuthFailure))}


def test_wrong_codes_space_the_clients_attempts_out_and_a_right_code_resets(app, client, delays) -> None:
    for _ in range(admin.THROTTLE_AFTER):
        assert attempt(client, "nope", delays) == 403
    assert delays.waits == []  # the first wrong codes cost nothing
    # from now on each attempt must keep its distance from the last, progressively longer, capped;
    # one that comes sooner is refused at once, uncounted, whatever its code
    for spacing in (0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0):
        assert attempt(client, TEST_ADMIN_CODE, delays) == 403
        delays.step(spacing - 0.01)
        assert attempt(client, "nope", delays) == 403
        delays.step(0.01)
        assert attempt(client, "nope", delays) == 403  # admitted, and wrong
    assert delays.waits == [1, 1, 1, 1, 1, 1, 2, 1, 4, 1, 4, 1, 4, 1]
    assert failures() == {"127.0.0.1": admin.THROTTLE_AFTER + 7}
    # the right code in its time signs in and clears the count
    delays.step(4)
    assert attempt(client, TEST_ADMIN_CODE, delays) == 200
    assert failures() == {}
    assert attempt(client, "nope", delays) == 403 and len(delays.waits) == 14


def test_attempts_sent_at_once_each_get_a_count_of_their_own(app, database_url, delays) -> None:
    """Attempts racing from many threads cannot all slip under the threshold: each is counted before
    its code is checked, and past the threshold only one is admitted per spacing. Nothing waits on
    the server."""
    import time
    from contextlib import nullcontext

    apps = [create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                        "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "TESTING": True},
                       load_entrypoints=False, environ={}) for _ in range(4)]

    def guess(n: int) -> Callable[[None], int]:
        test_client = apps[n % len(apps)].test_client()
        return lambda _: int(
            test_client.post("/api/auth", json={"code": f"guess-{n}"}).headers.get("Retry-After", 0)
        )

    started = time.monotonic()
    answers = each_released_together(nullcontext, [guess(n) for n in range(16)], timeout=60)
    assert time.monotonic() - started < 10
    # the clock stands still: the first THROTTLE_AFTER are admitted, the sixth (spacing 0.25 s from
    # the fifth) and every other attempt is refused at once
    assert sorted(answers) == [0] * admin.THROTTLE_AFTER + [1] * (16 - admin.THROTTLE_AFTER)
    assert failures() == {"127.0.0.1": admin.THROTTLE_AFTER}


def test_right_codes_sent_at_once_each_sign_in(app, database_url) -> None:
    """Two tabs signing in at the same moment, over and over: each right code signs in (a right
    code's clearing of the count never meets another attempt's counting of it half-way)."""
    from contextlib import nullcontext

    apps = [create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                        "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "TESTING": True},
                       load_entrypoints=False, environ={}) for _ in range(2)]

    def sign_in(n: int) -> Callable[[None], int]:
        test_client = apps[n].test_client()
        return lambda _: test_client.post("/api/auth", json={"code": TEST_ADMIN_CODE}).status_code

    for _ in range(20):
        assert each_released_together(nullcontext, [sign_in(0), sign_in(1)], timeout=60) == [200, 200]
    assert failures() == {}


def test_an_attempt_that_read_the_clock_before_another_counted_is_not_held_back(app) -> None:
    """Two attempts read the clock, then wait for the count's lock: the one that read it first may
    count second, after a later moment. Under the threshold it is admitted all the same."""
    later = datetime.now(UTC)
    with app.app_context():
        assert admin.admit("192.0.2.9", now=later) == 0
        assert admin.admit("192.0.2.9", now=later - timedelta(seconds=1)) == 0
        assert failures() == {"192.0.2.9": 2}


def test_counts_are_per_client(app, client, delays) -> None:
    for _ in range(admin.THROTTLE_AFTER + 1):
        attempt(client, "nope", delays, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert delays.waits == [1]  # the sixth attempt of 10.0.0.1 came too soon
    attempt(client, "nope", delays, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert delays.waits == [1]  # another client is not held back
    assert failures() == {"10.0.0.1": admin.THROTTLE_AFTER, "10.0.0.2": 1}


@pytest.mark.parametrize(
    "addresses,key",
    [
        # one IPv6 host holds a whole /64: each of its addresses is the same client
        ([f"2001:db8:1:2::{n:x}" for n in range(1, 8)], "2001:db8:1:2::/64"),
        (["2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:DB8:1:2::1", "2001:db8:1:2:0:0:0:2"],
         "2001:db8:1:2::/64"),
        # an IPv4 client seen through a dual-stack socket is that IPv4 client
        (["::ffff:198.51.100.7", "198.51.100.7"], "198.51.100.7"),
    ],
    ids=["ipv6 /64", "ipv6 spellings", "ipv4-mapped"],
)
def test_an_ipv6_client_cannot_pick_a_fresh_address_for_each_guess(
    app, client, delays, addresses, key
) -> None:
    for n in range(admin.THROTTLE_AFTER + 1):
        attempt(client, "nope", delays, environ_base={"REMOTE_ADDR": addresses[n % len(addresses)]})
    assert delays.waits == [1]  # the sixth attempt came too soon, whichever address it came from
    assert failures() == {key: admin.THROTTLE_AFTER}
    attempt(client, "nope", delays, environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"})
    assert delays.waits == [1]  # the next /64 is another client
    delays.step(0.25)
    assert attempt(client, TEST_ADMIN_CODE, delays, environ_base={"REMOTE_ADDR": addresses[-1]}) == 200
    assert key not in failures()  # the right code clears the count of the client it came from


@pytest.mark.parametrize("hops", [0, 1])
def test_behind_a_proxy_the_count_is_per_forwarded_client(app, database_url, delays, hops) -> None:
    """AIIMPL_PROXY_HOPS=1: the client is the one the proxy names in X-Forwarded-For, so one client's
    wrong codes do not hold back everyone behind the proxy; 0 (the default) trusts no header, so a
    client cannot pick a fresh address for each guess."""
    behind = create_app(
        {"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
         "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "AIIMPL_PROXY_HOPS": hops, "TESTING": True},
        load_entrypoints=False,
        environ={},
    ).test_client()
    proxy = {"REMOTE_ADDR": "10.9.9.9"}
    for n in range(admin.THROTTLE_AFTER + 1):
        attempt(behind, "nope", delays, environ_base=proxy, headers={"X-Forwarded-For": f"203.0.113.{n}"})
    if hops:
        assert delays.waits == []
        assert failures() == {f"203.0.113.{n}": 1 for n in range(admin.THROTTLE_AFTER + 1)}
    else:
        assert delays.waits == [1] and failures() == {"10.9.9.9": admin.THROTTLE_AFTER}


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
        attempt(first if n % 2 else second, "nope", delays)
    assert delays.waits == []
    attempt(first, "nope", delays)
    delays.step(0.25)
    attempt(second, "nope", delays)
    attempt(first, "nope", delays)
    assert delays.waits == [1, 1] and failures() == {"127.0.0.1": admin.THROTTLE_AFTER + 1}


def test_old_failures_expire(app, client, delays) -> None:
    for _ in range(admin.THROTTLE_AFTER + 1):
        attempt(client, "nope", delays)
    assert delays.waits == [1]
    delays.step(admin.THROTTLE_WINDOW + 1)
    assert attempt(client, "nope", delays) == 403
    assert delays.waits == [1] and failures() == {"127.0.0.1": 1}


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


def sign_in(client: Any) -> dict[str, str]:
    resp = client.post("/api/auth", json={"code": TEST_ADMIN_CODE})
    assert resp.status_code == 200
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


class _OptionsPlugin:
    """A plugin whose admin view answers OPTIONS itself (Flask then calls the view for it)."""

    @staticmethod
    def blueprint() -> Any:
        from flask import Blueprint, jsonify

        bp = Blueprint("options_probe", __name__)

        @bp.route("/api/options-probe", methods=["GET", "OPTIONS"])
        def probe():  # noqa: ANN202
            return jsonify(secrets=["every secret of the install"])

        return bp

    from aiimpl_core import hookimpl

    @hookimpl
    def aiimpl_register_blueprints(self, register: Callable[..., None]) -> None:
        register(self.blueprint())


def test_a_view_that_answers_options_itself_still_needs_the_admin_session(database_url) -> None:
    """Only the OPTIONS answer Flask makes up (the allowed methods, no view called) is left open."""
    app = create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                      "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "TESTING": True},
                     plugins=[_OptionsPlugin()], load_entrypoints=False, environ={})
    client = app.test_client()
    for method in ("GET", "OPTIONS"):
        resp = client.open("/api/options-probe", method=method)
        assert (resp.status_code, resp.get_json()) == (401, {"error": "Unauthorized"}), method
    # a route that leaves OPTIONS to Flask: the made-up answer, which says nothing but the methods
    resp = client.options("/api/mappings")
    assert resp.status_code == 200 and resp.get_data() == b"" and "GET" in resp.headers["Allow"]
    token = client.post("/api/auth", json={"code": TEST_ADMIN_CODE}).get_json()["token"]
    resp = client.options("/api/options-probe", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200 and resp.get_json() == {"secrets": ["every secret of the install"]}


def test_sign_out_ends_that_session_and_no_other(app, client, delays) -> None:
    mine, other = sign_in(client), sign_in(client)
    resp = client.delete("/api/auth", headers=mine)
    assert (resp.status_code, resp.get_json()) == (200, {"ok": True})
    refused = client.get("/api/jobs", headers=mine)
    assert (refused.status_code, refused.get_json()) == (401, {"error": "Unauthorized"})
    # an ended session cannot be ended again, nor sign out without a session
    assert client.delete("/api/auth", headers=mine).status_code == 401
    assert client.delete("/api/auth").status_code == 401
    assert client.get("/api/jobs", headers=other).status_code == 200


def test_a_signed_out_session_is_refused_by_every_instance_of_one_database(app, database_url, delays) -> None:
    # another worker or host: its own app and connections, the same database
    other = create_app(
        {"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
         "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "TESTING": True},
        load_entrypoints=False, environ={},
    )
    headers = sign_in(app.test_client())
    assert other.test_client().get("/api/jobs", headers=headers).status_code == 200
    assert app.test_client().delete("/api/auth", headers=headers).status_code == 200
    assert other.test_client().get("/api/jobs", headers=headers).status_code == 401


def test_a_signed_out_session_is_remembered_until_its_own_expiry(app, client, delays) -> None:
    from aiimpl_core.orm import EndedAdminSession

    headers = sign_in(client)
    answer = client.post("/api/auth", json={"code": TEST_ADMIN_CODE}).get_json()
    expires_at = datetime.fromisoformat(answer["expiresAt"].replace("Z", "+00:00"))
    assert client.delete("/api/auth", headers=headers).status_code == 200
    ended = db.session.scalars(select(EndedAdminSession)).one()
    assert abs((ended.expires_at - expires_at).total_seconds()) < 5
    payload = admin._serializer().loads(headers["Authorization"].split()[1])
    assert payload["exp"] == int(ended.expires_at.timestamp())


def test_a_lifetime_raised_later_revives_no_token_past_its_own_expiry(app, client) -> None:
    with app.test_request_context():
        # (issued two hours ago under a one-hour lifetime: the row of its sign-out may be gone)
        app.config["AIIMPL_ADMIN_SESSION_SECONDS"] = 3600
        stale = admin.issue_session(datetime.now(UTC) - timedelta(hours=2))
        fresh = admin.issue_session()
    app.config["AIIMPL_ADMIN_SESSION_SECONDS"] = 10 * 365 * 86400
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {stale}"}).status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


def test_a_token_without_a_session_id_or_expiry_is_refused(app, client) -> None:
    # (every token issued since sessions can be ended carries both)
    signer = admin._serializer()
    fingerprint = admin._code_fingerprint()
    future = int(datetime.now(UTC).timestamp()) + 3600
    for payload in (
        {"admin": True, "code": fingerprint},
        {"admin": True, "code": fingerprint, "sid": "a" * 32},
        {"admin": True, "code": fingerprint, "exp": future},
        {"admin": True, "code": fingerprint, "sid": "", "exp": future},
        {"admin": True, "code": fingerprint, "sid": "a" * 33, "exp": future},
        {"admin": True, "code": fingerprint, "sid": "a" * 32, "exp": True},
        {"admin": True, "code": fingerprint, "sid": "a" * 32, "exp": future - 7200},
        # (signed, so never sent by anyone without the key; refused all the same, never a 500)
        {"admin": True, "code": fingerprint, "sid": "a\x00" * 16, "exp": future},
        {"admin": True, "code": fingerprint, "sid": "a/b", "exp": future},
        {"admin": True, "code": fingerprint, "sid": "a" * 32, "exp": 10**20},
    ):
        resp = client.delete("/api/auth", headers={"Authorization": f"Bearer {signer.dumps(payload)}"})
        assert resp.status_code == 401, payload
        resp = client.get("/api/jobs", headers={"Authorization": f"Bearer {signer.dumps(payload)}"})
        assert resp.status_code == 401, payload
    good = {"admin": True, "code": fingerprint, "sid": "a" * 32, "exp": future}
    opened = client.get("/api/jobs", headers={"Authorization": f"Bearer {signer.dumps(good)}"})
    assert opened.status_code == 200


def test_sign_outs_sent_at_once_end_the_one_session_once(app, client, delays) -> None:
    from aiimpl_core.orm import EndedAdminSession
    from aiimpl_core.testing import orchestrator

    headers = sign_in(client)
    answers = orchestrator.at_once(app, lambda c: c.delete("/api/auth", headers=headers).status_code, 6)
    # each ended it or came after one that had: never a conflict answered as a 500
    assert 200 in answers and set(answers) <= {200, 401}, answers
    db.session.rollback()
    assert len(db.session.scalars(select(EndedAdminSession)).all()) == 1
    assert client.get("/api/jobs", headers=headers).status_code == 401


def test_the_guard_leaves_no_transaction_open_for_the_view(app, client, delays) -> None:
    """The session check reads the ended sessions; the view must not find itself inside that read
    (on SQLite a view writing in it could not take the write lock once another writer had
    committed)."""
    from flask import Blueprint, jsonify

    seen: list[bool] = []
    probe = Blueprint("transaction_probe", __name__)

    @probe.get("/api/transaction-probe")
    def transaction_probe():  # noqa: ANN202
        seen.append(db.session().in_transaction())
        return jsonify(ok=True)

    app.register_blueprint(probe)
    headers = sign_in(client)
    db.session.commit()  # (the test's own session is the requests' too)
    assert client.get("/api/transaction-probe", headers=headers).status_code == 200
    assert client.get("/api/transaction-probe").status_code == 401  # it is guarded
    assert seen == [False]
