"""Fixtures of the security and robustness audit.

Every credential the orchestrator can hold is configured with a distinctive value (see
:data:`SECRETS`), so a test can look for each of them in logs, stored rows, comments and answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

#: Every credential the audit configures, by what it is. Values are long and unique, so a
#: substring search cannot match by accident.
SECRETS: dict[str, str] = {
    "AIIMPL_ADMIN_ACCESS_CODE": "audit-admin-code-7f3a9c1e55d2",
    "AIIMPL_SECRET_KEY": "audit-secret-key-b81f0e2d4c6a9e7f3d1b5a0c",
    "AIIMPL_TRIGGER_SECRET": "audit-trigger-secret-3e9d1c7b2a",
    "AIIMPL_METRICS_TOKEN": "audit-metrics-token-6b2e8f0a4d",
    "AIIMPL_GITHUB_WEBHOOK_SECRET": "audit-gh-webhook-secret-5a1c9e",
    "AIIMPL_GITHUB_TOKEN": "ghp_auditPersonalToken0123456789abcd",
    "AIIMPL_ANTHROPIC_API_KEY": "sk-ant-audit-model-key-0a9b8c7d6e5f",
    "AIIMPL_LINEAR_API_KEY": "lin_api_auditLinearKey1234567890",
    "AIIMPL_LINEAR_WEBHOOK_SECRET": "audit-linear-webhook-secret-77aa",
    "AIIMPL_JIRA_API_TOKEN": "audit-jira-api-token-4d4d4d4d4d",
    "AIIMPL_JIRA_WEBHOOK_SECRET": "audit-jira-webhook-secret-91bf",
    "AIIMPL_FLY_API_TOKEN": "fo1_auditFlyToken_abcdef0123456789",
}

#: Stored secret values (set through the admin API in the tests).
TEAM_SECRET = ("DB_PASSWORD", "audit-team-secret-value-c0ffee42")
GLOBAL_SECRET = ("NPM_TOKEN", "audit-global-secret-value-facade99")

#: The /api/ routes the reference (and the plugins' docs) name as not needing the admin session.
PUBLIC_API = frozenset(
    {
        "/api/auth",
        "/api/openapi.json",
        "/api/token",
        "/api/status",
        "/api/step-report",
        "/api/github/webhook",
        "/api/linear/webhook",
        "/api/jira/webhook",
    }
)


@pytest.fixture
def sec_tracker() -> Any:
    """An in-memory tracker (provider id ``fake-tracker``) with issues ENG-1 and ENG-2."""
    from aiimpl_core.testing.fakes import FakeTracker

    tracker = FakeTracker()
    tracker.add("ENG-1", title="Add a health check", description="We need /healthz.")
    tracker.add("ENG-2", title="Add a readiness check")
    return tracker


@pytest.fixture
def sec_runner() -> Any:
    """A fake ``github-actions`` backend with sessions, secrets, workflow sync and gap-fill."""
    from aiimpl_core.testing.fakes import FakeRunner

    return FakeRunner(sessions=True, secrets=True, workflow_sync=True, gap_fill=True)


@pytest.fixture
def aiimpl_plugins(sec_tracker: Any, sec_runner: Any) -> list[object]:
    return [sec_tracker.plugin, sec_runner.plugin]


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    # hook tracing logs at DEBUG: the log searches then see every hook call too
    return {**SECRETS, "AIIMPL_TRACE_PLUGINS": True}


@pytest.fixture
def sec_admin(client: Any) -> dict[str, str]:
    """Headers of a signed-in admin (the audit's own access code)."""
    resp = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]})
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


@pytest.fixture
def sec_mapping(app: Any) -> Callable[..., Any]:
    """Create a mapping row (team ENG → acme/api, model provider anthropic); returns it."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    def make(team_key: str = "ENG", **kw: Any) -> Any:
        values = dict(
            owner="acme",
            repo="api",
            default_branch="main",
            execution_mode="github-actions",
            branch_prefix="ai/",
            provider="anthropic",
            ticketing={"provider": "fake-tracker"},
        )
        values.update(kw)
        row = Mapping(team_key=team_key, **values)
        db.session.add(row)
        db.session.commit()
        return row

    return make


@pytest.fixture
def sec_launch(app: Any, sec_runner: Any) -> Callable[..., tuple[int, dict[str, str]]]:
    """Create and launch a job the way the dispatcher does; returns ``(job id, session env)``.

    The env holds the real nonce and run tokens the launcher issued.
    """
    from sqlalchemy import select

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.services import launch
    from aiimpl_core.types import Phase

    def make(issue_key: str = "ENG-1", phase: Phase = Phase.IMPLEMENTATION) -> tuple[int, dict[str, str]]:
        team = issue_key.rsplit("-", 1)[0]
        mapping = db.session.scalar(select(Mapping).where(Mapping.team_key == team))
        assert mapping is not None
        job = launch.create_job(
            mapping, issue_key, phase=phase, provider="fake-tracker", choice=launch.choose_backend(mapping)
        )
        db.session.commit()
        launch.launch(job)
        return job.id, dict(sec_runner.runs[job.id].request.env)

    return make


@pytest.fixture
def sec_token(app: Any) -> Callable[..., str]:
    """Mint a run token: ``sec_token(job_id, phase, audience, ttl=600, secret=None)``."""
    from aiimpl_core.auth import tokens

    def make(job_id: int, phase: str, audience: str, ttl: int = 600, secret: str | None = None) -> str:
        return tokens.issue_run_token(secret or SECRETS["AIIMPL_SECRET_KEY"], job_id, phase, audience, ttl)

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dump_rows() -> str:
    """Every row of every table as text (the whole database, for leak searches)."""
    from sqlalchemy import select

    from aiimpl_core.extensions import db

    db.session.commit()
    out: list[str] = []
    for table in db.metadata.sorted_tables:
        for row in db.session.execute(select(table)).mappings():
            out.append(f"{table.name}: " + json.dumps({k: str(v) for k, v in row.items()}))
    db.session.commit()
    return "\n".join(out)


def leaks(text: str, values: Iterable[str]) -> list[str]:
    """Which of ``values`` occur in ``text`` (also URL- or JSON-escaped)."""
    from urllib.parse import quote

    found = []
    for value in values:
        if value and (value in text or quote(value, safe="") in text or json.dumps(value)[1:-1] in text):
            found.append(value)
    return found


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        return "\n".join(
            f"{r.name} {r.levelname} {r.getMessage()} {r.args!r} "
            f"{logging.Formatter().formatException(r.exc_info) if r.exc_info else ''}"
            for r in self.records
        )


@pytest.fixture
def sec_logs(app: Any) -> Iterator[_Records]:
    """Every log record at DEBUG and above while the test runs.

    Its own root handler rather than ``caplog``, which sees a test's records only at the levels
    it is set to: this one takes every record, whatever the loggers' own levels say.
    """
    handler = _Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture
def full_app(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The app with every installed plugin loaded from its entry point (Linear, Jira, GHA, Fly,
    Docker) and the audit's credentials; no external service is reachable from it."""
    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.testing.pytest_plugin import empty_tables

    # the Docker backend finds its engine in the process environment: none here
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    config = {
        **SECRETS,
        "AIIMPL_DATABASE_URL": database_url,
        "AIIMPL_PUBLIC_URL": "http://orchestrator.test",
        "AIIMPL_GITHUB_API_URL": "http://127.0.0.1:9",
        "AIIMPL_LINEAR_API_URL": "http://127.0.0.1:9/graphql",
        "AIIMPL_FLY_API_URL": "http://127.0.0.1:9",
        "TESTING": True,
    }
    # Fly without an app is unconfigured: no session listing reaches out
    config.pop("AIIMPL_FLY_API_TOKEN")
    app = create_app(config, load_entrypoints=True, environ={})
    assert not app.extensions["aiimpl"].failures(), app.extensions["aiimpl"].failures()
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        db.session.remove()
        empty_tables()
        db.engine.dispose()
        ctx.pop()
