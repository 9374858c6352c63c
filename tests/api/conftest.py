"""Fixtures shared by the HTTP API tests."""
from __future__ import annotations

# -- integration and callback API (runner, session, webhook, trigger tests) -------------------
# Fixtures below are prefixed ``cb_``; test modules pick them up by overriding ``aiimpl_plugins``
# with ``[cb_tracker.plugin, cb_runner.plugin]``.
from collections.abc import Callable as _CbCallable
from collections.abc import Iterator as _CbIterator
from typing import Any as _CbAny

import pytest as _cb_pytest


@_cb_pytest.fixture
def cb_tracker():
    """An in-memory tracker (provider id ``fake-tracker``) with issue ENG-1."""
    from aiimpl_core.testing.fakes import FakeTracker

    tracker = FakeTracker()
    tracker.add("ENG-1", title="Add a health check", description="We need /healthz.")
    return tracker


@_cb_pytest.fixture
def cb_runner():
    """A fake ``github-actions`` backend that can dispatch gap-fill runs."""
    from aiimpl_core.testing.fakes import FakeRunner

    return FakeRunner(gap_fill=True)


@_cb_pytest.fixture
def cb_mapping(app) -> _CbCallable[..., int]:
    """Create a mapping (team ENG → acme/api by default); returns its id."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping

    def make(team_key: str = "ENG", **kw: _CbAny) -> int:
        values = dict(owner="acme", repo="api", default_branch="main", execution_mode="github-actions",
                      branch_prefix="ai/", ticketing={"provider": "fake-tracker"})
        values.update(kw)
        row = Mapping(team_key=team_key, **values)
        db.session.add(row)
        db.session.commit()
        return row.id

    return make


@_cb_pytest.fixture
def cb_job(app, cb_mapping) -> _CbCallable[..., tuple[int, str]]:
    """Create a job (and its mapping when missing); returns ``(job id, nonce)``."""
    from sqlalchemy import select

    from aiimpl_core.auth import tokens
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job, Mapping

    def make(issue_key: str = "ENG-1", *, phase: str = "implementation", status: str = "dispatched",
             **kw: _CbAny) -> tuple[int, str]:
        team = issue_key.rsplit("-", 1)[0]
        mapping = db.session.scalar(select(Mapping).where(Mapping.team_key == team))
        mapping_id = mapping.id if mapping else cb_mapping(team)
        nonce, digest = tokens.new_nonce()
        values = dict(issue_key=issue_key, team_key=team, mapping_id=mapping_id, provider="fake-tracker",
                      phase=phase, status=status, backend="github-actions", owner="acme", repo="api",
                      base_branch="main", branch=f"ai/{issue_key}", nonce_hash=digest,
                      run_url="https://runs.test/run-1")
        values.update(kw)
        job = Job(**values)
        db.session.add(job)
        db.session.commit()
        return job.id, nonce

    return make


@_cb_pytest.fixture
def cb_token(app) -> _CbCallable[..., str]:
    """Mint a run token: ``cb_token(job_id, phase, audience, ttl=600, secret=None)``."""
    from aiimpl_core.auth import tokens
    from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

    def make(job_id: int, phase: str, audience: str, ttl: int = 600, secret: str | None = None,
             now: _CbAny = None) -> str:
        return tokens.issue_run_token(secret or TEST_SECRET_KEY, job_id, phase, audience, ttl, now=now)

    return make


@_cb_pytest.fixture
def cb_live_server(app) -> _CbIterator[str]:
    """The test app served by a real threaded HTTP server on 127.0.0.1; yields its base URL."""
    from aiimpl_core.testing.serving import serve_wsgi

    with serve_wsgi(app) as live:
        yield live.url


# -- admin API (test_admin_*.py, test_openapi*.py) ------------------------------------------------
# Fixtures below are prefixed ``adm_``; admin test modules override ``aiimpl_plugins`` with
# ``adm_plugins``: a fake tracker, a ``github-actions`` backend with sessions, secrets and
# workflow sync, and a ``fly-machines`` backend with none of them.


@_cb_pytest.fixture
def adm_tracker():
    """An in-memory tracker (provider id ``fake-tracker``) with issue ENG-1."""
    from aiimpl_core.testing.fakes import FakeTracker

    tracker = FakeTracker()
    tracker.add("ENG-1", title="Add a health check")
    return tracker


@_cb_pytest.fixture
def adm_runner():
    """A ``github-actions`` backend that manages sessions and secrets and syncs workflows."""
    from aiimpl_core.testing.fakes import FakeRunner

    return FakeRunner(sessions=True, secrets=True, workflow_sync=True)


@_cb_pytest.fixture
def adm_fly():
    """A ``fly-machines`` backend without sessions, secrets or workflow sync."""
    from aiimpl_core.testing.fakes import FakeRunner

    return FakeRunner("fly-machines", "fly")


@_cb_pytest.fixture
def adm_plugins(adm_tracker, adm_runner, adm_fly) -> list[object]:
    return [adm_tracker.plugin, adm_runner.plugin, adm_fly.plugin]


@_cb_pytest.fixture
def adm_mapping(app) -> _CbCallable[..., dict[str, _CbAny]]:
    """Create a mapping through the API's service (team ENG → acme/api by default); returns it."""
    from aiimpl_core.services import mappings

    def make(team_key: str = "ENG", **kw: _CbAny) -> dict[str, _CbAny]:
        body = {"teamKey": team_key, "owner": "acme", "repo": "api", "defaultBranch": "main",
                "ticketing": {"provider": "fake-tracker"}, **kw}
        mapping, _ = mappings.save(body)
        return mapping

    return make


@_cb_pytest.fixture(scope="session")
def cb_webhooks_dir() -> str:
    """``shared/specs/github/webhooks``: octokit's real payloads and their JSON schemas."""
    import os

    from aiimpl_core.testing.pytest_plugin import specs_dir

    return os.path.join(specs_dir(), "github", "webhooks")


@_cb_pytest.fixture(scope="session")
def cb_validate_webhook(cb_webhooks_dir):
    """``cb_validate_webhook(payload, "pull_request$closed")`` raises unless the payload fits
    octokit's schema (every schema file registered under its ``$id``, so relative refs resolve)."""
    import glob
    import json
    import os

    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    base = "https://octokit-webhooks.test/"
    resources = []
    for path in glob.glob(os.path.join(cb_webhooks_dir, "schemas", "**", "*.json"), recursive=True):
        with open(path, encoding="utf-8") as fh:
            schema = json.load(fh)
        if "$id" not in schema:
            continue
        schema["$id"] = base + schema["$id"]
        resources.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7)))
    registry = Registry().with_resources(resources)

    def check(payload: dict, schema_id: str) -> None:
        Draft7Validator({"$ref": base + schema_id}, registry=registry).validate(payload)

    return check


@_cb_pytest.fixture
def cb_merged_payload(cb_webhooks_dir, cb_validate_webhook):
    """A merged-PR delivery: the derived example, optionally moved to another PR (validated)."""
    import copy
    import json
    import os

    with open(os.path.join(cb_webhooks_dir, "derived", "pull_request.closed.merged.payload.json"),
              encoding="utf-8") as fh:
        example = json.load(fh)

    def make(full_name: str | None = None, number: int | None = None, branch: str | None = None,
             sha: str | None = None) -> dict:
        payload = copy.deepcopy(example)
        pr = payload["pull_request"]
        if full_name:
            payload["repository"]["full_name"] = full_name
            payload["repository"]["name"] = full_name.split("/", 1)[1]
            payload["repository"]["owner"]["login"] = full_name.split("/", 1)[0]
        if number:
            payload["number"] = pr["number"] = number
        full = payload["repository"]["full_name"]
        pr["html_url"] = f"https://github.com/{full}/pull/{pr['number']}"
        if branch:
            pr["head"]["ref"] = branch
        if sha:
            pr["merge_commit_sha"] = sha
        cb_validate_webhook(payload, "pull_request$closed")
        return payload

    return make


@_cb_pytest.fixture
def adm_full_app(database_url):
    """The app with every installed plugin (entry points), as ``aiimpl serve`` runs it."""
    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.testing.pytest_plugin import TEST_ADMIN_CODE, TEST_SECRET_KEY

    app = create_app({"AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
                      "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE, "TESTING": True}, environ={})
    with app.app_context():
        yield app
        db.session.remove()
