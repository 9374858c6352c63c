"""The admin guard: every ``/api/`` route but the documented public ones answers
``401 {"error": "Unauthorized"}`` to anything but a valid admin session token.

Run against the app with every installed plugin loaded from its entry point, so a plugin's
route is held to the same rule.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from aiimpl_core.auth import admin, tokens

from .conftest import PUBLIC_API, SECRETS, bearer

KEY = SECRETS["AIIMPL_SECRET_KEY"]
PARAMS = {"jobId": "1", "teamKey": "ENG", "name": "NPM_TOKEN", "machineId": "m-1"}


def _url(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: PARAMS.get(m.group(1), "x"), rule)


def _api_routes(app: Any) -> list[tuple[str, str, str]]:
    """(method, url, rule) of every /api/ route."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, _url(rule.rule), rule.rule))
    return out


class _OldSigner(TimestampSigner):
    """Signs with a timestamp far older than any session lifetime."""

    def get_timestamp(self) -> int:
        return int(time.time()) - 10 * 86400


def _bad_credentials() -> dict[str, dict[str, str]]:
    """Every way of presenting a credential that is not a valid admin session."""
    valid_shape = URLSafeTimedSerializer(KEY, salt=admin.SALT)
    run = {aud: tokens.issue_run_token(KEY, 1, "implementation", aud, 600) for aud in tokens.AUDIENCES}
    code = SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]
    creds: dict[str, dict[str, str]] = {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "garbage bearer": {"Authorization": "Bearer not-a-token"},
        "two words": {"Authorization": "Bearer a b"},
        "access code as bearer": bearer(code),
        "access code as basic": {
            "Authorization": "Basic " + base64.b64encode(f"admin:{code}".encode()).decode()
        },
        "secret key as bearer": bearer(KEY),
        "expired session": bearer(
            URLSafeTimedSerializer(KEY, salt=admin.SALT, signer=_OldSigner).dumps({"admin": True})
        ),
        "forged with another key": bearer(
            URLSafeTimedSerializer("another-key", salt=admin.SALT).dumps({"admin": True})
        ),
        "right key, another salt": bearer(
            URLSafeTimedSerializer(KEY, salt="cookie-session").dumps({"admin": True})
        ),
        "signed, not admin": bearer(valid_shape.dumps({"admin": False})),
        "signed, admin as string": bearer(valid_shape.dumps({"admin": "true"})),
        "signed, a list": bearer(valid_shape.dumps([True])),
        "truncated session": bearer(valid_shape.dumps({"admin": True})[:-3]),
    }
    for aud, token in run.items():
        creds[f"run token {aud}"] = bearer(token)
    return creds


BAD = _bad_credentials()


def test_public_api_routes_are_exactly_the_documented_ones(full_app):
    from aiimpl_core.auth import is_public

    public = {
        rule.rule
        for rule in full_app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and is_public(full_app.view_functions[rule.endpoint])
    }
    assert public == set(PUBLIC_API)


def test_every_admin_route_refuses_every_bad_credential(full_app):
    client = full_app.test_client()
    routes = [r for r in _api_routes(full_app) if r[2] not in PUBLIC_API]
    assert len(routes) >= 20  # core and the Jira plugin's admin routes
    failures = []
    for method, url, _rule in routes:
        for name, headers in BAD.items():
            resp = client.open(url, method=method, headers=headers, json={"code": "x"})
            if resp.status_code != 401 or resp.get_json() != {"error": "Unauthorized"}:
                failures.append((method, url, name, resp.status_code, resp.get_data(as_text=True)[:100]))
    assert not failures


def test_a_valid_session_opens_them(full_app):
    """The counter-check: the guard is not refusing everything."""
    client = full_app.test_client()
    token = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]}).get_json()["token"]
    for method, url, rule in _api_routes(full_app):
        if rule in PUBLIC_API or method != "GET":
            continue
        resp = client.get(url, headers=bearer(token))
        assert resp.status_code != 401, (url, resp.get_json())


def test_session_token_in_query_or_cookie_is_not_accepted(full_app):
    client = full_app.test_client()
    token = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]}).get_json()["token"]
    assert client.get(f"/api/mappings?token={token}").status_code == 401
    client.set_cookie("token", token)
    client.set_cookie("session", token)
    assert client.get("/api/mappings").status_code == 401


def test_unknown_api_paths_and_methods_answer_json(full_app):
    client = full_app.test_client()
    for resp in (client.get("/api/nope"), client.put("/api/mappings"), client.post("/api/jobs/1")):
        assert resp.status_code in (401, 404, 405)
        assert isinstance(resp.get_json(), dict) and "error" in resp.get_json()


def test_wrong_access_code_is_refused_and_slowed(full_app, monkeypatch):
    import time
    from datetime import UTC, datetime

    from aiimpl_core.auth import admin

    frozen = datetime.now(UTC)
    monkeypatch.setattr(admin, "clock", lambda: frozen)  # however slow this machine is
    client = full_app.test_client()
    started, retry_after = time.monotonic(), []
    for _ in range(admin.THROTTLE_AFTER + 3):
        resp = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"] + "x"})
        assert resp.status_code == 403 and resp.get_json() == {"error": "Invalid access code"}
        retry_after.append(resp.headers.get("Retry-After"))
    # past the threshold a guess that comes too soon is refused at once, told when to come back
    assert retry_after == [None] * admin.THROTTLE_AFTER + ["1"] * 3
    assert time.monotonic() - started < 5  # and nothing waited on the server
    # not even the right code gets in before its time
    assert client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]}).status_code == 403


def test_rotating_the_access_code_ends_existing_sessions(full_app):
    client = full_app.test_client()
    token = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]}).get_json()["token"]
    assert client.get("/api/mappings", headers=bearer(token)).status_code == 200
    full_app.config["AIIMPL_ADMIN_ACCESS_CODE"] = "a-new-code-after-a-leak"
    assert client.get("/api/mappings", headers=bearer(token)).status_code == 401


def test_ui_and_api_answers_carry_hardening_headers(full_app):
    client = full_app.test_client()
    for url in ("/ui/signin", "/ui/projects", "/api/openapi.json"):
        resp = client.get(url)
        assert resp.status_code == 200
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", url
        framing = resp.headers.get("X-Frame-Options", "") + resp.headers.get("Content-Security-Policy", "")
        assert "DENY" in framing or "frame-ancestors 'none'" in framing, url
        assert resp.headers.get("Cache-Control") == "no-store", url
        if url.startswith("/ui"):
            # directives default-src does not cover: no <base> element, forms sent to the UI only
            directives = resp.headers["Content-Security-Policy"].split("; ")
            policy = {d.split()[0]: d.split()[1:] for d in directives}
            assert (policy["base-uri"], policy["form-action"]) == (["'none'"], ["'self'"]), url
    signed_in = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]})
    assert signed_in.status_code == 200 and signed_in.headers.get("Cache-Control") == "no-store"
    static = client.get("/ui/static/app.js")
    assert static.status_code == 200 and static.headers.get("Cache-Control") != "no-store"


def test_no_redirect_names_the_host_the_request_named(full_app):
    """A forged ``Host`` header never comes back in a ``Location``: werkzeug's slash redirect
    (``/ui`` to ``/ui/``) and the app's own redirects answer with a path."""
    client = full_app.test_client()
    redirects = 0
    for rule in full_app.url_map.iter_rules():
        if "GET" not in rule.methods or "<" in rule.rule:
            continue
        for path in {rule.rule, rule.rule.rstrip("/") or "/"}:
            resp = client.get(path, headers={"Host": "attacker.example"})
            if 300 <= resp.status_code < 400:
                redirects += 1
                location = resp.headers["Location"]
                assert location.startswith("/") and "attacker.example" not in location, (path, location)
                # nor in the page that comes with it (werkzeug's links the address it redirects to)
                assert "attacker.example" not in resp.get_data(as_text=True), path
    assert redirects >= 2  # /ui and / at least
    resp = client.get("/ui", headers={"Host": "attacker.example"})
    assert (resp.status_code, resp.headers["Location"]) == (308, "/ui/")


@pytest.mark.parametrize("hops", [0, 1])
def test_hsts_is_sent_on_https_answers_when_configured(database_url, hops):
    from aiimpl_core.app import create_app

    def app(seconds):  # noqa: ANN001, ANN202
        return create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": "k" * 32,
                           "AIIMPL_HSTS_SECONDS": seconds, "AIIMPL_PROXY_HOPS": hops, "TESTING": True},
                          load_entrypoints=False, environ={})

    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.0.0.1"}
    client = app(31536000).test_client()
    # over HTTPS as the server sees it: reached over TLS, or through a trusted proxy that says so
    secure = client.get("/api/openapi.json", headers=forwarded) if hops else client.get(
        "/api/openapi.json", base_url="https://orchestrator.test")
    assert secure.headers.get("Strict-Transport-Security") == "max-age=31536000"
    # over plain HTTP, or an untrusted claim of HTTPS: none
    assert "Strict-Transport-Security" not in client.get("/api/openapi.json").headers
    if not hops:
        assert "Strict-Transport-Security" not in client.get("/api/openapi.json", headers=forwarded).headers
    # off by default
    quiet = app(0).test_client().get("/api/openapi.json", base_url="https://orchestrator.test")
    assert "Strict-Transport-Security" not in quiet.headers


@pytest.mark.parametrize(("method", "path", "headers"), [
    ("GET", "/api/mappings", {}),
    ("GET", "/api/mappings", {"Authorization": "Bearer not-a-session"}),
    ("POST", "/runner/progress", {}),
    ("POST", "/runner/result", {"Authorization": "Bearer not.a.token"}),
    ("GET", "/runner/planning-context", {}),
], ids=["admin-missing", "admin-wrong", "progress-missing", "result-malformed", "context-missing"])
def test_a_401_of_a_bearer_endpoint_carries_its_challenge(client, method, path, headers):
    """RFC 9110: a 401 carries WWW-Authenticate; the endpoints a bearer token opens say Bearer."""
    resp = client.open(path, method=method, headers=headers, json={})
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="aiimpl"'


def test_a_webhooks_401_has_no_bearer_challenge(client, app):
    """A signature that does not verify is no HTTP authentication scheme's to answer."""
    app.config["AIIMPL_GITHUB_WEBHOOK_SECRET"] = "webhook-secret-value"
    resp = client.post("/api/github/webhook", data=b"{}", headers={"X-Hub-Signature-256": "sha256=00"})
    assert resp.status_code == 401 and "WWW-Authenticate" not in resp.headers


SENTENCE_405 = "The method is not allowed for the requested URL."


@pytest.mark.parametrize(("method", "path", "allowed", "error"), [
    ("PATCH", "/ui/jobs", {"GET", "HEAD", "OPTIONS"}, SENTENCE_405),
    ("PUT", "/api/jobs", {"GET", "HEAD", "OPTIONS"}, SENTENCE_405),
    ("GET", "/runner/result", {"POST", "OPTIONS"}, "method_not_allowed"),
], ids=["ui-page", "api", "runner"])
def test_a_405_says_which_methods_are_allowed(client, method, path, allowed, error):
    """The body in the path's shape: werkzeug's sentence, or on ``/runner/*`` the slug
    ``method_not_allowed`` (the reference's "stable slug code"; the sentence was answered there too)."""
    resp = client.open(path, method=method)
    assert resp.status_code == 405
    assert set(resp.headers["Allow"].replace(" ", "").split(",")) == allowed
    assert resp.get_json() == {"error": error}
    assert resp.content_type == "application/json"
