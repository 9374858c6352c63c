"""The tracker's credentials stay inside the Linear client: a run whose tracker calls succeed and
fail (through the real Linear plugin and the fake Linear server, which checks every query
against Linear's schema) leaves the API key in no log record, stored row or answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.auth import tokens

from .conftest import SECRETS, bearer, dump_rows, leaks

KEY = SECRETS["AIIMPL_LINEAR_API_KEY"]


@pytest.fixture
def linear() -> Iterator[Any]:
    from aiimpl_linear.testing import FakeLinear

    with FakeLinear(api_key=KEY, webhook_secret=SECRETS["AIIMPL_LINEAR_WEBHOOK_SECRET"]) as fake:
        fake.add_team("ENG", "Engineering")
        yield fake
        assert fake.validation_errors == [], fake.validation_errors


@pytest.fixture
def linear_app(database_url: str, linear: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.testing.pytest_plugin import empty_tables

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    config = {
        **SECRETS,
        "AIIMPL_DATABASE_URL": database_url,
        "AIIMPL_LINEAR_API_URL": linear.url,
        "AIIMPL_GITHUB_API_URL": "http://127.0.0.1:9",
        "AIIMPL_LINEAR_TIMEOUT": "5",
        "TESTING": True,
    }
    config.pop("AIIMPL_FLY_API_TOKEN")
    app = create_app(config, load_entrypoints=True, environ={})
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        db.session.remove()
        empty_tables()
        db.engine.dispose()
        ctx.pop()


def test_linear_api_key_stays_out_of_logs_rows_and_answers(linear_app, linear, sec_logs):
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job, Mapping

    issue = linear.add_issue("ENG", "Add a health check", description="We need /healthz.")
    key = issue["identifier"]
    mapping = Mapping(
        team_key="ENG",
        owner="acme",
        repo="api",
        default_branch="main",
        execution_mode="github-actions",
        ticketing={"provider": "linear"},
    )
    db.session.add(mapping)
    db.session.flush()
    nonce, digest = tokens.new_nonce()
    job = Job(
        issue_key=key,
        team_key="ENG",
        mapping_id=mapping.id,
        provider="linear",
        phase="implementation",
        status="dispatched",
        backend="github-actions",
        owner="acme",
        repo="api",
        base_branch="main",
        branch=f"ai/{key}",
        nonce_hash=digest,
    )
    db.session.add(job)
    db.session.commit()
    client = linear_app.test_client()
    context_token = tokens.issue_run_token(
        SECRETS["AIIMPL_SECRET_KEY"], job.id, "implementation", tokens.AUD_PLANNING_CONTEXT, 600
    )
    answers = []
    # the tracker answers ...
    ok = client.get("/runner/planning-context", headers=bearer(context_token))
    assert ok.status_code == 200 and ok.get_json()["issueSource"] == "tracker"
    answers.append(ok.get_data(as_text=True))
    status = client.post("/api/status", json={"nonce": nonce, "event": "session_created"})
    assert status.status_code == 200, status.get_json()
    assert any("Session machine created" in c for c in linear.comments_of(key))
    # ... then refuses: the errors travel to the answer, the outbox row and the logs
    linear.fail(
        "IssueWithComments", "Authentication required", code="AUTHENTICATION_ERROR", status=401, times=5
    )
    for name in [
        op for op in set(linear.operations()) if op and "omment" in op and op != "IssueWithComments"
    ]:
        linear.fail(name, "Authentication required", code="AUTHENTICATION_ERROR", status=401, times=5)
    cached = client.get("/runner/planning-context", headers=bearer(context_token))
    assert cached.status_code == 200 and cached.get_json()["issueSource"] == "cache"
    answers.append(cached.get_data(as_text=True))
    failed = client.post("/api/status", json={"nonce": nonce, "event": "environment_ready"})
    answers.append(failed.get_data(as_text=True))
    logs = sec_logs.text()
    assert "127.0.0.1" in logs  # the client's requests were logged at DEBUG
    where = {"logs": logs, "database": dump_rows(), "answers": "\n".join(answers)}
    found = {name: leaks(text, [KEY]) for name, text in where.items()}
    assert not any(found.values()), found
