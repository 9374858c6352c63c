"""Lone surrogates (``"\\ud800"``) in JSON strings.

``json.loads`` accepts the escape and returns a ``str`` that cannot be encoded as UTF-8, so the
first ``.encode()``, hash or database write of it would raise ``UnicodeEncodeError``. Every body
is read through ``parse_json``, which treats such text as not JSON: no endpoint answers a 500.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import SECRETS, bearer

S = "\ud800"
STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}



Case = tuple[str, Callable[[dict[str, str]], dict[str, Any]], str]
CASES = [
    pytest.param(
        "/api/auth",
        lambda env: {"code": S},
        "none",
        (400, 403),
        id="auth code",
    ),
    pytest.param(
        "/api/token",
        lambda env: {"nonce": S, "owner": "acme"},
        "none",
        (500,),  # the reference's row: a body that is not valid JSON -> 500 Failed to generate token
        id="token nonce",
    ),
    pytest.param(
        "/api/token", lambda env: {"nonce": env["AIIMPL_NONCE"], "owner": S}, "none", (500,), id="token owner"
    ),
    pytest.param(
        "/api/status",
        lambda env: {"nonce": S, "event": "session_created"},
        "none",
        (400,),
        id="status nonce",
    ),
    pytest.param(
        "/api/status",
        lambda env: {"nonce": env["AIIMPL_NONCE"], "event": S},
        "none",
        (400,),
        id="status event",
    ),
    pytest.param(
        "/api/status",
        lambda env: {"nonce": env["AIIMPL_NONCE"], "event": "session_failed", "reason": S},
        "none",
        (200, 400),
        id="status reason",
    ),
    pytest.param(
        "/api/step-report",
        lambda env: {"nonce": S, "step": STEP},
        "none",
        (400,),
        id="step nonce",
    ),
    pytest.param(
        "/api/step-report",
        lambda env: {"nonce": env["AIIMPL_NONCE"], "step": {**STEP, "id": S}},
        "none",
        (200, 400),
        id="step id",
    ),
    pytest.param(
        "/runner/progress",
        lambda env: {"step": {**STEP, "id": S}},
        "AIIMPL_PROGRESS_TOKEN",
        (200, 400),
        id="progress step id",
    ),
    pytest.param(
        "/runner/result",
        lambda env: {"outcome": "failure", "phase": "implementation", "comments": [{"body": S}], "error": S},
        "AIIMPL_RESULT_TOKEN",
        (200, 400),
        id="result error",
    ),
    pytest.param(
        "/api/mappings",
        lambda env: {
            "teamKey": S,
            "owner": "acme",
            "repo": "api",
            "defaultBranch": "main",
            "ticketing": {"provider": "fake-tracker"},
        },
        "admin",
        (400,),
        id="mapping team key",
    ),
    pytest.param(
        "/api/mappings",
        lambda env: {
            "teamKey": "ENG",
            "owner": "acme",
            "repo": "api",
            "defaultBranch": S,
            "ticketing": {"provider": "fake-tracker"},
        },
        "admin",
        (200, 201, 400),
        id="mapping default branch",
    ),
    pytest.param(
        "/api/global-secrets",
        lambda env: {"name": "X", "value": S},
        "admin",
        (200, 201, 400),
        id="secret value",
    ),
    pytest.param("/api/runner-mode", lambda env: {"mode": S}, "admin", (400,), id="runner mode"),
    pytest.param(
        "/trigger/gap-fill",
        lambda env: {"issueKey": "ENG-" + S, "prNumber": 1},
        "trigger",
        (400, 404),
        id="gap-fill issue key",
    ),
]


@pytest.mark.parametrize(("url", "body", "auth", "statuses"), CASES)
def test_lone_surrogate(app, client, sec_admin, sec_mapping, sec_launch, url, body, auth, statuses):
    sec_mapping("ENG")
    _, env = sec_launch("ENG-1")
    fixed = {"none": {}, "admin": sec_admin, "trigger": bearer(SECRETS["AIIMPL_TRIGGER_SECRET"])}
    headers = fixed[auth] if auth in fixed else bearer(env[auth])
    resp = client.post(url, data=json.dumps(body(env)), content_type="application/json", headers=headers)
    assert resp.status_code in statuses, resp.get_data(as_text=True)
    assert isinstance(resp.get_json(), dict)
