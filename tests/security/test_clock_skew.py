"""Credentials issued by another host whose clock is a little ahead of this one's.

Every worker and host of an installation takes the admin sessions and run tokens the others issue.
A session signed a second "in the future" (itsdangerous counts whole seconds) or a run token whose
``iat`` is a moment ahead is no forgery: it is taken within
:data:`~aiimpl_core.auth.tokens.CLOCK_SKEW_SECONDS`, and nothing lives longer for it.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from itsdangerous import TimestampSigner

from aiimpl_core.auth import admin, tokens

from .conftest import SECRETS, bearer

STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}


def _session_signed_ahead(monkeypatch: pytest.MonkeyPatch, seconds: int) -> str:
    """An admin session as a host whose clock is ``seconds`` ahead signs it."""
    with monkeypatch.context() as m:
        m.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) + seconds)
        return admin.issue_session()


@pytest.mark.parametrize("ahead", [1, 30])
def test_a_session_signed_by_a_host_a_moment_ahead_opens_the_api(app, client, monkeypatch, ahead) -> None:
    token = _session_signed_ahead(monkeypatch, ahead)
    assert client.get("/api/mappings", headers=bearer(token)).status_code == 200


def test_a_session_signed_further_ahead_than_any_clock_is_refused(app, client, monkeypatch) -> None:
    token = _session_signed_ahead(monkeypatch, tokens.CLOCK_SKEW_SECONDS + 60)
    resp = client.get("/api/mappings", headers=bearer(token))
    assert (resp.status_code, resp.get_json()) == (401, {"error": "Unauthorized"})


def test_a_session_still_ends_with_its_lifetime(app, client, monkeypatch) -> None:
    token = _session_signed_ahead(monkeypatch, 1)
    app.config["AIIMPL_ADMIN_SESSION_SECONDS"] = -2
    assert client.get("/api/mappings", headers=bearer(token)).status_code == 401


@pytest.fixture
def job_id(app: Any, sec_mapping: Any, sec_launch: Any) -> int:
    sec_mapping()
    return sec_launch()[0]


def _progress_token(job_id: int, *, iat: int, exp: int) -> str:
    claims = {"sub": str(job_id), "phase": "implementation", "aud": tokens.AUD_PROGRESS,
              "iat": iat, "exp": exp, "jti": f"skew-{iat}-{exp}"}
    return jwt.encode(claims, SECRETS["AIIMPL_SECRET_KEY"], algorithm=tokens.ALGORITHM)


def _progress(client: Any, token: str) -> tuple[int, Any]:
    resp = client.post("/runner/progress", headers=bearer(token), json={"step": STEP})
    return resp.status_code, resp.get_json()


@pytest.mark.parametrize("ahead", [2, 30])
def test_a_run_token_issued_a_moment_ahead_is_taken(client, job_id, ahead) -> None:
    now = int(time.time())
    status, body = _progress(client, _progress_token(job_id, iat=now + ahead, exp=now + 600))
    assert status == 200, body


def test_a_run_token_issued_further_ahead_is_malformed(client, job_id) -> None:
    now = int(time.time())
    token = _progress_token(job_id, iat=now + tokens.CLOCK_SKEW_SECONDS + 60, exp=now + 600)
    assert _progress(client, token) == (401, {"error": "malformed"})


def test_the_margin_lengthens_no_run_tokens_life(client, job_id) -> None:
    now = int(time.time())
    token = _progress_token(job_id, iat=now - 600, exp=now - 5)
    assert _progress(client, token) == (401, {"error": "expired"})
    # (and not once it was checked before either)
    assert _progress(client, token) == (401, {"error": "expired"})
