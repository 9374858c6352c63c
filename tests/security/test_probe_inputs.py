"""Inputs a black-box probe sent that reached the database (or a float) unchecked.

Each case runs on SQLite and PostgreSQL and must answer the endpoint's own 4xx, in the
reference's shape, never a 500, and store nothing: JSON's non-numbers (``NaN``, ``Infinity``)
and numbers beyond a double, integers too large for a float, NUL in query filters, a merge commit
SHA that is none, run tokens whose claims no job or date can hold, an issue key that names no issue,
and oversized tracker webhook deliveries.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from sqlalchemy import func, select

from aiimpl_core.auth import tokens
from aiimpl_core.auth.signatures import github_signature
from aiimpl_core.extensions import db
from aiimpl_core.orm import ConsumedToken, Job, JobStep, Mapping, OutboxItem
from aiimpl_core.testing.pytest_plugin import specs_dir

from .conftest import SECRETS, bearer

KEY = SECRETS["AIIMPL_SECRET_KEY"]
GAP_FILL_BAD_BODY = "issueKey and positive integer prNumber required"
STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}
RESULT = {"outcome": "failure", "phase": "implementation", "comments": [], "error": "boom"}
#: raw JSON literals Python's parser takes but that are no JSON a database or client can take back
NOT_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]


def _count(model: Any) -> int:
    db.session.commit()
    return db.session.scalar(select(func.count()).select_from(model)) or 0


@pytest.fixture
def job(app, sec_mapping, sec_launch) -> tuple[int, dict[str, str]]:
    sec_mapping("ENG")
    return sec_launch("ENG-1")


def _raw(client: Any, url: str, raw: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(url, data=raw.encode(), headers=headers or {}, content_type="application/json")


# -- 1. NaN, Infinity and numbers beyond a double are not JSON ----------------------------------


@pytest.mark.parametrize("literal", NOT_NUMBERS)
def test_not_a_number_in_a_progress_detail_is_invalid_body(client, job, literal):
    _, env = job
    raw = json.dumps({"step": STEP})[:-2] + f', "detail": {literal}}}}}'
    resp = _raw(client, "/runner/progress", raw, bearer(env["AIIMPL_PROGRESS_TOKEN"]))
    assert (resp.status_code, resp.get_json()) == (400, {"error": "invalid_body"})
    assert _count(JobStep) == 0


@pytest.mark.parametrize("literal", NOT_NUMBERS)
def test_not_a_number_in_a_step_report_is_invalid_json_body(client, job, literal):
    _, env = job
    raw = json.dumps({"nonce": env["AIIMPL_NONCE"], "step": STEP})[:-2]
    raw += f', "detail": {{"x": {literal}}}}}}}'
    resp = _raw(client, "/api/step-report", raw)
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Invalid JSON body"})
    assert _count(JobStep) == 0


@pytest.mark.parametrize("literal", NOT_NUMBERS)
def test_not_a_number_in_a_result_is_invalid_body(client, job, literal):
    job_id, env = job
    raw = json.dumps(RESULT)[:-1] + f', "costUsd": {literal}}}'
    resp = _raw(client, "/runner/result", raw, bearer(env["AIIMPL_RESULT_TOKEN"]))
    assert (resp.status_code, resp.get_json()) == (400, {"error": "invalid_body"})
    assert db.session.get(Job, job_id).status == "dispatched"
    assert _count(ConsumedToken) == 0


@pytest.mark.parametrize("literal", NOT_NUMBERS)
def test_not_a_number_in_a_mapping_is_invalid_request_body(client, sec_admin, literal):
    body = {"teamKey": "OPS", "owner": "acme", "repo": "api", "defaultBranch": "main"}
    raw = json.dumps(body)[:-1] + f', "ticketing": {{"provider": "fake-tracker", "x": {literal}}}}}'
    resp = _raw(client, "/api/mappings", raw, sec_admin)
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Invalid request body"})
    assert _count(Mapping) == 0
    listed = client.get("/api/mappings", headers=sec_admin)
    assert listed.status_code == 200 and json.loads(listed.get_data(as_text=True)) == []


@pytest.mark.parametrize(
    ("url", "raw", "answer"),
    [
        ("/api/status", '{"nonce": "n", "event": "session_failed", "duration": NaN}', "Invalid JSON body"),
        ("/api/token", '{"nonce": "n", "owner": "acme", "x": Infinity}', "Failed to generate token"),
        ("/api/auth", '{"code": "c", "x": -Infinity}', "Invalid request body"),
        ("/api/runner-mode", '{"mode": "gha", "x": NaN}', "Invalid request body"),
        ("/api/mappings/ENG", '{"maxInProgressAiIssues": NaN}', "Invalid request body"),
        ("/api/global-secrets", '{"name": "A", "value": "v", "x": NaN}', "Invalid request body"),
    ],
)
def test_not_a_number_is_each_endpoints_not_json_answer(client, sec_admin, sec_mapping, url, raw, answer):
    sec_mapping("ENG")
    method = "PATCH" if url == "/api/mappings/ENG" else "POST"
    resp = client.open(url, method=method, data=raw.encode(), headers=sec_admin,
                       content_type="application/json")
    assert resp.status_code in (400, 500), resp.get_data(as_text=True)
    assert resp.get_json() == {"error": answer}


def test_not_a_number_in_a_gap_fill_is_the_bad_body_slug(client, sec_mapping):
    sec_mapping("ENG")
    resp = _raw(client, "/trigger/gap-fill", '{"issueKey": "ENG-1", "prNumber": 5, "x": NaN}',
                bearer(SECRETS["AIIMPL_TRIGGER_SECRET"]))
    assert (resp.status_code, resp.get_json()) == (400, {"error": GAP_FILL_BAD_BODY})
    assert _count(Job) == 0


def test_large_finite_numbers_are_still_json(client, job):
    _, env = job
    big = "1" + "0" * 400
    raw = json.dumps({"step": STEP})[:-2] + f', "detail": {{"a": 1.7e308, "b": 1e-400, "c": {big}}}}}}}'
    resp = _raw(client, "/runner/progress", raw, bearer(env["AIIMPL_PROGRESS_TOKEN"]))
    assert resp.status_code == 200, resp.get_data(as_text=True)


# -- 2. integers too large for a float --------------------------------------------------------


@pytest.mark.parametrize("field", ["costUsd", "durationSeconds"])
@pytest.mark.parametrize("value", ["1" + "0" * 400, "-1" + "0" * 400])
def test_an_integer_beyond_a_double_is_an_invalid_field(client, job, field, value):
    job_id, env = job
    raw = json.dumps(RESULT)[:-1] + f', "{field}": {value}}}'
    resp = _raw(client, "/runner/result", raw, bearer(env["AIIMPL_RESULT_TOKEN"]))
    assert (resp.status_code, resp.get_json()) == (400, {"error": "invalid_field", "field": field})
    assert db.session.get(Job, job_id).status == "dispatched"
    assert _count(ConsumedToken) == 0


def test_an_integer_beyond_a_double_in_a_status_event_is_posted_as_text(client, job):
    _, env = job
    raw = json.dumps({"nonce": env["AIIMPL_NONCE"], "event": "session_failed"})[:-1]
    raw += ', "reason": 1' + "0" * 400 + "}"
    resp = _raw(client, "/api/status", raw)
    assert resp.status_code == 200, resp.get_data(as_text=True)


# -- 3. NUL in query filters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("issue=a%00b", "issue must be 1 to 64 characters"),
        ("team=%00", "team must be 1 to 64 characters"),
        ("team=ENG%00", "team must be 1 to 64 characters"),
    ],
)
def test_nul_in_a_jobs_filter_is_refused(client, sec_admin, job, query, message):
    resp = client.get(f"/api/jobs?{query}", headers=sec_admin)
    assert (resp.status_code, resp.get_json()) == (400, {"error": message})


def test_nul_in_the_outbox_filter_is_refused(client, sec_admin):
    resp = client.get("/api/outbox?issueKey=%00", headers=sec_admin)
    assert (resp.status_code, resp.get_json()) == (400, {"error": "issueKey must be 1 to 64 characters"})


# -- 4. a merge commit SHA that is not one ------------------------------------------------------


def _merged_payload() -> dict[str, Any]:
    name = "pull_request.closed.merged.payload.json"
    path = os.path.join(specs_dir(), "github", "webhooks", "derived", name)
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _deliver(client: Any, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": github_signature(SECRETS["AIIMPL_GITHUB_WEBHOOK_SECRET"], body),
    }
    return client.post("/api/github/webhook", data=body, headers=headers, content_type="application/json")


@pytest.fixture
def merged_job(app, sec_mapping, sec_tracker) -> tuple[int, dict[str, Any]]:
    """A completed job that opened Codertocat/Hello-World#2, and GitHub's merge delivery for it."""
    sec_tracker.add("HW-7", title="Hello world change")
    mapping = sec_mapping("HW", owner="Codertocat", repo="Hello-World")
    payload = _merged_payload()
    pr = payload["pull_request"]
    job = Job(issue_key="HW-7", team_key="HW", mapping_id=mapping.id, provider="fake-tracker",
              phase="implementation", status="completed", backend="github-actions", owner="Codertocat",
              repo="Hello-World", base_branch="main", branch=pr["head"]["ref"], pr_number=pr["number"],
              pr_url=pr["html_url"])
    db.session.add(job)
    db.session.commit()
    return job.id, payload


@pytest.mark.parametrize(
    "sha",
    ["a" * 5000, "a" * 65, "a" * 39, "g" * 40, "a" * 41, "a" * 40 + "\n", "é" * 40, " " + "a" * 39],
    ids=["5000", "65", "39", "not-hex", "41", "newline", "non-ascii", "space"],
)
def test_a_merge_commit_sha_that_is_not_one_is_a_missing_pr_field(client, merged_job, sha):
    job_id, payload = merged_job
    payload = copy.deepcopy(payload)
    payload["pull_request"]["merge_commit_sha"] = sha
    resp = _deliver(client, payload)
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Missing required PR fields"})
    assert db.session.get(Job, job_id).merge_sha is None
    assert _count(OutboxItem) == 0


@pytest.mark.parametrize("sha", ["0123456789abcdef" * 4, "ABCDEF0123" * 4])
def test_sha1_and_sha256_merge_commits_are_taken(client, merged_job, sha):
    job_id, payload = merged_job
    payload = copy.deepcopy(payload)
    payload["pull_request"]["merge_commit_sha"] = sha
    resp = _deliver(client, payload)
    assert resp.status_code == 200 and resp.get_json()["jobId"] == job_id, resp.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Job, job_id).merge_sha == sha


def test_long_branch_repository_and_url_of_a_merge_match_nothing(client, merged_job):
    job_id, payload = merged_job
    payload = copy.deepcopy(payload)
    pr = payload["pull_request"]
    pr["number"] = payload["number"] = 999
    pr["head"]["ref"] = "b" * 5000
    pr["html_url"] = "https://github.com/" + "u" * 5000
    payload["repository"]["full_name"] = "o" * 3000 + "/" + "r" * 3000
    resp = _deliver(client, payload)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["matched"] is False


# -- 5. run tokens whose claims no job id or date can hold ----------------------------------------


def _token(aud: str, **claims: Any) -> str:
    now = int(datetime.now(UTC).timestamp())
    base = {"sub": "1", "phase": "implementation", "aud": aud, "iat": now, "exp": now + 600,
            "jti": uuid.uuid4().hex}
    base.update(claims)
    return jwt.encode(base, KEY, algorithm=tokens.ALGORITHM)


ODD_CLAIMS = [
    {"sub": str(2**70)},
    {"sub": str(2**31)},
    {"sub": "0"},
    {"sub": "-1"},
    {"sub": " 8 "},
    {"sub": "+8"},
    {"sub": "8_0"},
    {"sub": "\u0661"},
    {"sub": "\uff18"},
    {"sub": ""},
    {"exp": 10**12},
    {"exp": 10**20},
    {"exp": 10**400},
    {"jti": "j" * 5000},
    {"jti": ""},
    {"jti": "a\u0000b"},  # (PostgreSQL refused it as the spent token's id: a 500)
    {"jti": "ab\ud800"},  # (not encodable: a 500 on both databases)
]


def _claim_id(claims: dict[str, Any]) -> str:
    [(name, value)] = claims.items()
    return f"{name}={str(value)[:12]}"


@pytest.mark.parametrize("claims", ODD_CLAIMS, ids=_claim_id)
@pytest.mark.parametrize(
    ("method", "url", "aud"),
    [
        ("POST", "/runner/result", tokens.AUD_RESULT),
        ("POST", "/runner/progress", tokens.AUD_PROGRESS),
        ("GET", "/runner/planning-context", tokens.AUD_PLANNING_CONTEXT),
    ],
)
def test_run_token_claims_out_of_range_are_malformed(client, job, claims, method, url, aud):
    job_id, _ = job
    claims = {"sub": str(job_id), **claims}
    body = RESULT if url == "/runner/result" else {"step": STEP}
    resp = client.open(url, method=method, headers=bearer(_token(aud, **claims)),
                       json=body if method == "POST" else None)
    assert (resp.status_code, resp.get_json()) == (401, {"error": "malformed"})
    assert _count(JobStep) == 0 and _count(ConsumedToken) == 0


def test_the_largest_job_id_is_still_a_job_id(client, job):
    resp = client.get("/runner/planning-context",
                      headers=bearer(_token(tokens.AUD_PLANNING_CONTEXT, sub=str(2**31 - 1))))
    assert (resp.status_code, resp.get_json()) == (404, {"error": "job_not_found"})


# -- 6. an issue key that names no issue --------------------------------------------------------


@pytest.mark.parametrize("key", ["ENG-", "ENG", "ENG-0", "ENG-1 ", "ENG-1/..", "ENG-\u0661", "ENG-x"])
def test_gap_fill_refuses_what_is_not_an_issue_key(client, sec_mapping, key):
    sec_mapping("ENG")
    resp = client.post("/trigger/gap-fill", headers=bearer(SECRETS["AIIMPL_TRIGGER_SECRET"]),
                       json={"issueKey": key, "prNumber": 5})
    assert (resp.status_code, resp.get_json()) == (400, {"error": GAP_FILL_BAD_BODY})
    assert _count(Job) == 0


# -- 7. oversized tracker webhook deliveries ------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/linear/webhook", "/api/jira/webhook"])
def test_an_oversized_tracker_webhook_is_invalid_json_payload(full_app, url):
    body = b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    resp = full_app.test_client().post(url, data=body, content_type="application/json")
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Invalid JSON payload"})



def _chunked(client: Any, url: str, body: bytes, **headers: str) -> Any:
    """``body`` sent as a server passes on a chunked request: no ``Content-Length``, and a stream
    the server ends itself (gunicorn's ``wsgi.input_terminated``)."""
    import io

    sent = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **headers}
    return client.post(url, input_stream=io.BytesIO(body), headers=sent,
                       environ_overrides={"wsgi.input_terminated": True})


class _BrokenChunks:
    """gunicorn's ``wsgi.input`` for a chunked body whose framing breaks after its first bytes."""

    def __init__(self, error: Exception) -> None:
        self.error, self.sent = error, False

    def read(self, size: int = -1) -> bytes:
        if self.sent:
            raise self.error
        self.sent = True
        return b'{"'

    readline = read


def _broken_errors() -> list[Exception]:
    from gunicorn.http.errors import ChunkMissingTerminator, InvalidChunkSize, NoMoreData

    return [InvalidChunkSize(b"zz"), ChunkMissingTerminator(b"xx"), NoMoreData(b""), ConnectionResetError()]


@pytest.mark.parametrize("error", _broken_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("url", ["/api/auth", "/api/status", "/api/step-report", "/api/token",
                                 "/api/github/webhook", "/api/linear/webhook", "/api/jira/webhook",
                                 "/runner/result", "/runner/progress", "/api/mappings"])
def test_a_body_the_server_cannot_read_is_answered_as_one_that_is_no_json(full_app, url, error):
    """A chunked body whose framing breaks (gunicorn raises from ``wsgi.input``: an invalid chunk
    size, a missing terminator, the connection ended) is answered as one over the size limit (the
    endpoint's answer to a body it cannot take), never with the 500 of an unexpected error."""
    from aiimpl_core.api.webhook import MAX_DELIVERY_BYTES

    client = full_app.test_client()
    limit = MAX_DELIVERY_BYTES if url == "/api/github/webhook" else full_app.config["MAX_CONTENT_LENGTH"]
    expected = client.post(url, data=b"{" * (limit + 1), content_type="application/json")
    resp = client.post(url, headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input": _BrokenChunks(error), "wsgi.input_terminated": True})
    assert (resp.status_code, resp.get_json()) == (expected.status_code, expected.get_json())
    assert resp.status_code != 500 or url == "/api/token", resp.get_json()


@pytest.mark.parametrize("url", ["/api/linear/webhook", "/api/jira/webhook"])
def test_an_oversized_chunked_tracker_webhook_is_invalid_json_payload(full_app, url):
    body = b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    resp = _chunked(full_app.test_client(), url, body)
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Invalid JSON payload"})


def test_a_chunked_body_past_the_limit_is_not_read_as_its_first_part(client):
    """Werkzeug stops reading a chunked body at the limit: the part before it, here a whole JSON
    object, must not be taken for the body."""
    head = json.dumps({"code": "a-guess"}).encode()
    resp = _chunked(client, "/api/auth", head + b" " * (2 * 1024 * 1024) + b"trailing, not JSON")
    assert (resp.status_code, resp.get_json()) == (400, {"error": "Invalid request body"})
    small = _chunked(client, "/api/auth", head)  # (a chunked body within the limit is read whole)
    assert (small.status_code, small.get_json()) == (403, {"error": "Invalid access code"})
