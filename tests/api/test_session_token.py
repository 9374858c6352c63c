"""``POST /api/token``: every row of the reference's table."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta

import pytest

from aiimpl_core.errors import ProviderError

URL = "/api/token"
EXPIRES = datetime(2026, 11, 29, 7, 0, tzinfo=UTC)


@pytest.fixture
def aiimpl_plugins(cb_tracker, cb_runner):
    return [cb_tracker.plugin, cb_runner.plugin]


@pytest.fixture
def github_calls(monkeypatch):
    """Replace ``aiimpl_core.github.repository_token``; record its calls, fail on demand."""
    import aiimpl_core.github as module

    calls: list[tuple[str, str]] = []
    state = {"error": None}

    def repository_token(owner: str, repo: str) -> tuple[str, datetime]:
        calls.append((owner, repo))
        if state["error"] is not None:
            raise state["error"]
        return "ghs_fake_installation_token", EXPIRES

    monkeypatch.setattr(module, "repository_token", repository_token)
    calls_state = types.SimpleNamespace(calls=calls, state=state)
    return calls_state


def test_token_issued_for_the_jobs_repository(client, cb_job, github_calls):
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "owner": "ACME", "repo": "ignored"})
    assert resp.status_code == 200
    assert resp.get_json() == {"token": "ghs_fake_installation_token", "expiresAt": "2026-11-29T07:00:00Z"}
    assert github_calls.calls == [("acme", "api")]


@pytest.mark.parametrize(
    "repo", [5, None, ["api"], {"name": "api"}, "other", "x" * 5000],
    ids=["number", "null", "list", "object", "another-repo", "long"],
)
def test_repo_is_ignored_whatever_its_type(client, cb_job, github_calls, repo):
    """Only nonce and owner are read: the token is always for the job's repository, so a ``repo``
    of any type neither fails the request nor changes the token (never "nonce and owner are
    required" while both are there)."""
    _, nonce = cb_job()
    resp = client.post(URL, json={"nonce": nonce, "owner": "acme", "repo": repo})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["token"] == "ghs_fake_installation_token"
    assert github_calls.calls == [("acme", "api")]


def _terminal_nonce(cb_job):
    return cb_job(status="completed")[1]


ROWS = [
    # 400 nonce and owner are required: nonce or owner is missing
    (400, "nonce and owner are required", lambda j: {"owner": "acme"}),
    (400, "nonce and owner are required", lambda j: {"nonce": j()[1]}),
    (400, "nonce and owner are required", lambda j: {}),
    (400, "nonce and owner are required", lambda j: {"nonce": None, "owner": "acme"}),
    (400, "nonce and owner are required", lambda j: {"nonce": "", "owner": "acme"}),
    (400, "nonce and owner are required", lambda j: [1, 2]),
    # beyond the reference, whose rule is for a missing field: one that is there but no string
    (400, "nonce must be a string", lambda j: {"nonce": 12345, "owner": "acme"}),
    (400, "owner must be a string", lambda j: {"nonce": j()[1], "owner": ["acme"]}),
    (400, "nonce must be a string", lambda j: {"nonce": True, "owner": 7}),
    # 403 Invalid or expired nonce: No active job matches the nonce
    (403, "Invalid or expired nonce", lambda j: {"nonce": "not-a-real-nonce", "owner": "acme"}),
    (403, "Invalid or expired nonce", lambda j: {"nonce": _terminal_nonce(j), "owner": "acme"}),
    # 403 Owner mismatch: The owner does not match the job's repository owner
    (403, "Owner mismatch", lambda j: {"nonce": j()[1], "owner": "evil-corp"}),
]


@pytest.mark.parametrize(("status", "error", "make_body"), ROWS)
def test_token_table_rows(client, cb_job, github_calls, status, error, make_body):
    resp = client.post(URL, json=make_body(cb_job))
    assert resp.status_code == status
    assert resp.get_json() == {"error": error}
    assert github_calls.calls == []


@pytest.mark.parametrize("raw", [b"{nonce", b"", b"\xff", b"[" * 50000])
def test_token_table_500_when_the_body_is_not_json(client, github_calls, raw):
    resp = client.post(URL, data=raw, content_type="application/json")
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "Failed to generate token"}


def test_token_table_500_when_generation_fails(client, cb_job, github_calls, caplog):
    _, nonce = cb_job()
    github_calls.state["error"] = ProviderError(
        "github: POST /app/installations/1/access_tokens failed with HTTP 404: Not Found", status=404
    )
    resp = client.post(URL, json={"nonce": nonce, "owner": "acme"})
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "Failed to generate token"}


def test_token_needs_no_admin_session(client, cb_job, github_calls):
    _, nonce = cb_job()
    assert (
        client.post(
            URL, json={"nonce": nonce, "owner": "acme"}, headers={"Authorization": "Bearer x"}
        ).status_code
        == 200
    )


def test_expired_github_token_expiry_is_reported_in_utc(client, cb_job, github_calls, monkeypatch):
    import aiimpl_core.github as module

    local = datetime(2026, 11, 29, 9, 0, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=2))
    )
    monkeypatch.setattr(module, "repository_token", lambda owner, repo: ("t", local))
    _, nonce = cb_job()
    assert client.post(URL, json={"nonce": nonce, "owner": "acme"}).get_json()["expiresAt"] == (
        "2026-11-29T09:00:00Z"
    )


class TestAgainstTheFakeGitHub:
    """``/api/token`` through the real GitHub client and a fake GitHub checked against GitHub's
    own OpenAPI description (App JWT, installation lookup, repository-scoped token)."""

    @pytest.fixture
    def gh(self):
        from aiimpl_core.testing.fake_github import FakeGitHub

        with FakeGitHub() as fake:
            fake.add_repo("acme", "api")
            fake.add_repo("acme", "other")
            fake.add_installation("acme")
            yield fake
            fake.assert_clean()

    @pytest.fixture
    def aiimpl_config(self, gh):
        return {
            "AIIMPL_GITHUB_API_URL": gh.url,
            "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
            "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem,
        }

    def test_token_is_limited_to_the_jobs_repository(self, client, cb_job, gh):
        _, nonce = cb_job()
        resp = client.post(URL, json={"nonce": nonce, "owner": "Acme"})
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        issued = gh.tokens[body["token"]]
        assert issued.repositories == {"api"}
        assert body["expiresAt"] == issued.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def test_a_token_github_refused_the_session_is_minted_anew(self, client, cb_job, gh):
        """A session GitHub refused the token (revoked before its expiry) names it by its SHA-256:
        the orchestrator's cached copy is replaced, not handed back for the rest of its hour."""
        import hashlib

        _, nonce = cb_job()
        first = client.post(URL, json={"nonce": nonce, "owner": "acme"}).get_json()["token"]
        assert client.post(URL, json={"nonce": nonce, "owner": "acme"}).get_json()["token"] == first
        digest = hashlib.sha256(first.encode()).hexdigest()
        gh.tokens.pop(first)  # revoked

        second = client.post(URL, json={"nonce": nonce, "owner": "acme", "refusedTokenSha256": digest})
        assert second.status_code == 200 and second.get_json()["token"] not in (first, None)
        fresh = second.get_json()["token"]
        # the same refusal again (another request of the session, late) leaves the fresh one be
        again = client.post(URL, json={"nonce": nonce, "owner": "acme", "refusedTokenSha256": digest.upper()})
        assert again.get_json()["token"] == fresh and len(gh.issued_tokens) == 2

    @pytest.mark.parametrize(
        "value", [5, None, [], {"a": 1}, "", "zz" * 32, "ab" * 31, "ab" * 33, "x" * 5000]
    )
    def test_a_refused_token_field_that_is_no_digest_is_ignored(self, client, cb_job, gh, value):
        """A hint, never a reason to refuse the session its token."""
        _, nonce = cb_job()
        first = client.post(URL, json={"nonce": nonce, "owner": "acme"}).get_json()["token"]
        resp = client.post(URL, json={"nonce": nonce, "owner": "acme", "refusedTokenSha256": value})
        assert (resp.status_code, resp.get_json()["token"]) == (200, first)

    def test_uninstalled_app_is_the_reference_500(self, client, cb_job, gh, caplog):
        _, nonce = cb_job()
        gh.installations.clear()
        from aiimpl_core.github.app_auth import TOKENS

        TOKENS.clear()
        resp = client.post(URL, json={"nonce": nonce, "owner": "acme"})
        assert (resp.status_code, resp.get_json()) == (500, {"error": "Failed to generate token"})
        assert gh.private_key_pem.splitlines()[1] not in caplog.text

    def test_a_minted_token_a_session_reports_back_is_masked(self, client, cb_job, cb_tracker, gh):
        """The repository token is handed to the session: a session that did not mask it in what it
        reports (a step's detail, a failure's error) finds it masked when it is stored and posted,
        whichever worker minted it (it is masked by its shape, not remembered)."""
        from sqlalchemy import select

        from aiimpl_core.extensions import db
        from aiimpl_core.orm import JobStep

        _, nonce = cb_job()
        token = client.post(URL, json={"nonce": nonce, "owner": "acme"}).get_json()["token"]
        assert token in gh.tokens
        import base64

        # (and as a Basic header holds it, whatever the user name's length: git and curl traces)
        basic = [base64.b64encode(f"{user}:{token}".encode()).decode()
                 for user in ("x-access-token", "ci", "bot")]
        said = (f"git push failed: https://x-access-token:{token}@github.com/acme/api (GITHUB_TOKEN={token}) "
                f'{{"log": "line\\n{token}"}} x%3A{token} GITHUB_TOKEN_{token} '
                + " ".join(f"Authorization: Basic {header}" for header in basic))
        step = {"id": "push", "type": "script", "status": "failed", "started_at": "2026-11-29T05:10:00Z",
                "detail": {"text": said}}
        resp = client.post("/api/step-report", json={"nonce": nonce, "step": step})
        assert resp.status_code == 200, resp.get_json()
        resp = client.post("/api/status", json={"nonce": nonce, "event": "session_failed", "reason": said})
        assert resp.status_code == 200, resp.get_json()
        db.session.expire_all()
        steps = db.session.scalars(select(JobStep))
        stored = [*cb_tracker.comments["ENG-1"], *(s.detail["text"] for s in steps)]
        assert stored and all(text and "[REDACTED]" in text for text in stored), stored
        assert not [text for text in stored if token in text or token[4:] in text], stored
        assert not [text for text in stored if any(header[8:40] in text for header in basic)], stored
