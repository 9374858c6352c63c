"""Lone surrogates (``"\\ud800"``) in JSON strings.

``json.loads`` accepts the escape and returns a ``str`` that cannot be encoded as UTF-8, so the
first ``.encode()``, hash or database write of it raises ``UnicodeEncodeError`` — an unhandled
500 on both databases. Endpoints that refuse the value before using it stay as regression tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import SECRETS, bearer

S = "\ud800"
STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}

_GAP = (
    "{where} — a JSON string with a lone surrogate (\\ud800) reaches .encode()/hashing/the database "
    "and raises UnicodeEncodeError: unhandled 500; fix in one place: aiimpl_core/schemas/runner.py:"
    "read_json_body and aiimpl_core/schemas/common.py:read_json should treat a body whose strings "
    "do not encode as UTF-8 as not JSON (e.g. json.dumps(obj, ensure_ascii=False).encode() in the try)"
)


def gap(where: str) -> Any:
    return pytest.mark.xfail(strict=True, reason=_GAP.format(where=where))


Case = tuple[str, Callable[[dict[str, str]], dict[str, Any]], str]
CASES = [
    pytest.param(
        "/api/auth",
        lambda env: {"code": S},
        "none",
        (400, 403),
        marks=gap("aiimpl_core/auth/admin.py:code_matches (POST /api/auth)"),
        id="auth code",
    ),
    pytest.param(
        "/api/token",
        lambda env: {"nonce": S, "owner": "acme"},
        "none",
        (403,),
        marks=gap("aiimpl_core/auth/tokens.py:hash_nonce (POST /api/token)"),
        id="token nonce",
    ),
    pytest.param(
        "/api/token", lambda env: {"nonce": env["AIIMPL_NONCE"], "owner": S}, "none", (403,), id="token owner"
    ),
    pytest.param(
        "/api/status",
        lambda env: {"nonce": S, "event": "session_created"},
        "none",
        (403,),
        marks=gap("aiimpl_core/auth/tokens.py:hash_nonce (POST /api/status)"),
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
        marks=gap("aiimpl_core/services/callbacks.py:status_event (POST /api/status reason)"),
        id="status reason",
    ),
    pytest.param(
        "/api/step-report",
        lambda env: {"nonce": S, "step": STEP},
        "none",
        (403,),
        marks=gap("aiimpl_core/auth/tokens.py:hash_nonce (POST /api/step-report)"),
        id="step nonce",
    ),
    pytest.param(
        "/api/step-report",
        lambda env: {"nonce": env["AIIMPL_NONCE"], "step": {**STEP, "id": S}},
        "none",
        (200, 400),
        marks=gap("aiimpl_core/services/callbacks.py:_upsert_step (POST /api/step-report)"),
        id="step id",
    ),
    pytest.param(
        "/runner/progress",
        lambda env: {"step": {**STEP, "id": S}},
        "AIIMPL_PROGRESS_TOKEN",
        (200, 400),
        marks=gap("aiimpl_core/services/callbacks.py:_upsert_step (POST /runner/progress)"),
        id="progress step id",
    ),
    pytest.param(
        "/runner/result",
        lambda env: {"outcome": "failure", "phase": "implementation", "comments": [{"body": S}], "error": S},
        "AIIMPL_RESULT_TOKEN",
        (200, 400),
        marks=gap("aiimpl_core/services/callbacks.py:record_result (POST /runner/result)"),
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
        marks=gap("aiimpl_core/services/mappings.py:save (POST /api/mappings teamKey)"),
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
        marks=gap("aiimpl_core/services/mappings.py:save (POST /api/mappings defaultBranch)"),
        id="mapping default branch",
    ),
    pytest.param(
        "/api/global-secrets",
        lambda env: {"name": "X", "value": S},
        "admin",
        (200, 201, 400),
        marks=gap("aiimpl_core/services/secrets.py:set_secret (POST /api/global-secrets)"),
        id="secret value",
    ),
    pytest.param("/api/runner-mode", lambda env: {"mode": S}, "admin", (400,), id="runner mode"),
    pytest.param(
        "/trigger/gap-fill",
        lambda env: {"issueKey": "ENG-" + S, "prNumber": 1},
        "trigger",
        (400, 404),
        marks=gap("aiimpl_core/services/gapfill.py:trigger_gap_fill (POST /trigger/gap-fill)"),
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
