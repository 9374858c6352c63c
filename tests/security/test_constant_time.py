"""Shared secrets are compared in constant time (:func:`hmac.compare_digest`).

The access code, the gap-fill trigger secret, the metrics token and the signatures (or shared secrets) of the
GitHub, Linear and Jira webhooks: a spy replaces ``hmac.compare_digest`` and records what each
request compared; the expected secret (or the signature made with it) must be among the
compared values, so a plain ``==`` somewhere in between would leave the spy empty.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.auth.signatures import github_signature

from .conftest import SECRETS, bearer


class Spy:
    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def values(self) -> set[bytes]:
        return {v for pair in self.calls for v in pair}


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    real = hmac.compare_digest
    recorder = Spy()

    def compare(a: Any, b: Any) -> bool:
        as_bytes = [x.encode() if isinstance(x, str) else bytes(x) for x in (a, b)]
        recorder.calls.append((as_bytes[0], as_bytes[1]))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    yield recorder


@pytest.fixture
def client(full_app: Any) -> Any:
    return full_app.test_client()


@pytest.mark.parametrize(
    "code", [SECRETS["AIIMPL_ADMIN_ACCESS_CODE"], "wrong", SECRETS["AIIMPL_ADMIN_ACCESS_CODE"][:-1]]
)
def test_access_code(client, spy, code):
    resp = client.post("/api/auth", json={"code": code})
    assert resp.status_code == (200 if code == SECRETS["AIIMPL_ADMIN_ACCESS_CODE"] else 403)
    assert SECRETS["AIIMPL_ADMIN_ACCESS_CODE"].encode() in spy.values()
    assert code.encode() in spy.values()


@pytest.mark.parametrize("given", [SECRETS["AIIMPL_TRIGGER_SECRET"], "wrong-secret"])
def test_trigger_secret(client, spy, given):
    resp = client.post("/trigger/gap-fill", headers=bearer(given), json={})
    assert resp.status_code == (400 if given == SECRETS["AIIMPL_TRIGGER_SECRET"] else 401)
    assert SECRETS["AIIMPL_TRIGGER_SECRET"].encode() in spy.values()
    assert given.encode() in spy.values()


@pytest.mark.parametrize("given", [SECRETS["AIIMPL_METRICS_TOKEN"], "wrong-token"])
def test_metrics_token(client, spy, given):
    resp = client.get("/metrics", headers=bearer(given))
    assert resp.status_code == (200 if given == SECRETS["AIIMPL_METRICS_TOKEN"] else 401)
    assert SECRETS["AIIMPL_METRICS_TOKEN"].encode() in spy.values()
    assert given.encode() in spy.values()


@pytest.mark.parametrize("good", [True, False])
def test_github_webhook_signature(client, spy, good):
    body = b'{"action": "opened"}'
    expected = github_signature(SECRETS["AIIMPL_GITHUB_WEBHOOK_SECRET"], body)
    sent = expected if good else "sha256=" + "0" * 64
    resp = client.post(
        "/api/github/webhook",
        data=body,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sent, "X-GitHub-Event": "pull_request"},
    )
    assert resp.status_code == (200 if good else 401)
    assert expected.encode() in spy.values() and sent.encode() in spy.values()


@pytest.mark.parametrize("good", [True, False])
def test_linear_webhook_signature(client, spy, good):
    body = json.dumps(
        {"type": "Comment", "action": "create", "data": {}, "webhookTimestamp": int(time.time() * 1000)}
    ).encode()
    expected = hmac.new(SECRETS["AIIMPL_LINEAR_WEBHOOK_SECRET"].encode(), body, hashlib.sha256).hexdigest()
    sent = expected if good else "f" * 64
    resp = client.post(
        "/api/linear/webhook", data=body, content_type="application/json", headers={"Linear-Signature": sent}
    )
    assert resp.status_code == (200 if good else 401)
    assert expected.encode() in spy.values() and sent.encode() in spy.values()


@pytest.mark.parametrize("how", ["header", "query", "hmac", "wrong header", "wrong hmac"])
def test_jira_webhook_secret(client, spy, how):
    secret = SECRETS["AIIMPL_JIRA_WEBHOOK_SECRET"]
    body = json.dumps({"webhookEvent": "comment_created"}).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    url, headers = "/api/jira/webhook", {}
    if how == "header":
        headers["X-Aiimpl-Webhook-Secret"] = secret
    elif how == "query":
        url += f"?secret={secret}"
    elif how == "hmac":
        headers["X-Hub-Signature"] = f"sha256={digest}"
    elif how == "wrong header":
        headers["X-Aiimpl-Webhook-Secret"] = "nope"
    else:
        headers["X-Hub-Signature"] = "sha256=" + "0" * 64
    resp = client.post(url, data=body, content_type="application/json", headers=headers)
    assert resp.status_code == (401 if how.startswith("wrong") else 200), resp.get_json()
    assert secret.encode() in spy.values() or digest.encode() in spy.values()


def test_the_spy_sees_nothing_when_no_secret_is_compared(client, spy):
    """The counter-check: a request that compares no secret leaves the spy empty."""
    assert client.get("/healthz").status_code == 200
    assert spy.calls == []


def test_nonce_lookup_is_by_hash_not_by_value(client):
    """Nonces are not compared at all: the job is found by the SHA-256 of the nonce (an index
    probe), so timing reveals nothing about how close a guess came. The database sees the hash,
    never the nonce."""
    from sqlalchemy import event

    from aiimpl_core.auth.nonce import active_job_for_nonce
    from aiimpl_core.auth.tokens import hash_nonce
    from aiimpl_core.extensions import db

    nonce = "a-nonce-no-job-holds"
    sent: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, *args):
        sent.append((statement, parameters))

    with client.application.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            assert active_job_for_nonce(nonce) is None
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
    [(statement, parameters)] = [(st, p) for st, p in sent if "FROM jobs" in st]
    assert "nonce_hash" in statement
    values = list(parameters.values()) if isinstance(parameters, dict) else list(parameters)
    assert hash_nonce(nonce) in values and nonce not in values
