"""``POST /api/token`` requests sent at once with one nonce, from several workers of one database.

A job's nonce is one per job, not one per request: the session's credential helper asks for a
fresh installation token whenever the one it holds is about to expire, and retries a request whose
answer it did not get (docs/session.md). What holds under a race is that every answer is the
token of the job's own repository or the reference's 403, never a 500, and that once the job's
result has ended it no request gets a token.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aiimpl_core.app import create_app
from aiimpl_core.testing.orchestrator import each_released_together

from .conftest import SECRETS, bearer

REQUESTS = 8
FAILURE = {"outcome": "failure", "phase": "implementation", "comments": [], "error": "boom"}
REFUSED = (403, {"error": "Invalid or expired nonce"})


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The repositories installation tokens were asked for."""
    import aiimpl_core.github as module

    calls: list[tuple[str, str]] = []

    def repository_token(owner: str, repo: str) -> tuple[str, datetime]:
        calls.append((owner, repo))
        return f"ghs_{owner}_{repo}", datetime.now(UTC) + timedelta(hours=1)

    monkeypatch.setattr(module, "repository_token", repository_token)
    return calls


@pytest.fixture
def workers(app: Any, database_url: str) -> list[Any]:
    """Test clients of four more application instances on the test's database (workers, hosts)."""
    config = {**SECRETS, "AIIMPL_DATABASE_URL": database_url, "TESTING": True}
    return [create_app(config, load_entrypoints=False, environ={}).test_client() for _ in range(4)]


def _ask(worker: Any, nonce: str) -> Callable[[None], tuple[int, Any]]:
    def call(_: None) -> tuple[int, Any]:
        resp = worker.post("/api/token", json={"nonce": nonce, "owner": "acme"})
        return resp.status_code, resp.get_json()

    return call


def test_requests_at_once_each_get_the_jobs_token(app, workers, github, sec_mapping, sec_launch) -> None:
    sec_mapping()
    _, env = sec_launch()
    calls = [_ask(workers[n % len(workers)], env["AIIMPL_NONCE"]) for n in range(REQUESTS)]
    answers = each_released_together(nullcontext, calls, timeout=60)
    assert [status for status, _ in answers] == [200] * REQUESTS, answers
    assert {body["token"] for _, body in answers} == {"ghs_acme_api"}
    assert github == [("acme", "api")] * REQUESTS


def test_requests_racing_the_result_get_a_token_or_403_and_none_after_it(
    app, client, workers, github, sec_mapping, sec_launch
) -> None:
    sec_mapping()
    _, env = sec_launch()
    result_token = env["AIIMPL_RESULT_TOKEN"]

    def end(_: None) -> tuple[int, Any]:
        resp = client.post("/runner/result", headers=bearer(result_token), json=FAILURE)
        return resp.status_code, resp.get_json()

    calls = [_ask(workers[n % len(workers)], env["AIIMPL_NONCE"]) for n in range(REQUESTS)]
    answers = each_released_together(nullcontext, [end, *calls], timeout=60)
    assert answers[0][0] == 200, answers[0]
    for answer in answers[1:]:
        assert answer == REFUSED or (answer[0], answer[1]["token"]) == (200, "ghs_acme_api"), answer
    assert set(github) <= {("acme", "api")}
    # the job has ended: no worker hands out a token for its nonce any more
    after = [_ask(worker, env["AIIMPL_NONCE"])(None) for worker in workers]
    assert after == [REFUSED] * len(workers)
