"""Every route answers bodies of every shape without a 5xx or a traceback.

The app loads every installed plugin from its entry point. Each request carries the credential
its route needs (admin session, run token of the right audience, trigger secret, webhook
signature computed over the very bytes sent), so the body reaches the parser instead of being
stopped at the door. Under ``/api/``, ``/runner/`` and ``/trigger/`` a failed answer is JSON with
a string ``error``; 5xx answers are allowed only where the reference documents them, with the
reference's body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiimpl_core.auth import tokens
from aiimpl_core.auth.signatures import github_signature

from .conftest import SECRETS, bearer

KEY = SECRETS["AIIMPL_SECRET_KEY"]
JSON = "application/json"
PARAMS = {"jobId": "1", "teamKey": "ENG", "name": "NPM_TOKEN", "machineId": "m-1"}

#: 5xx answers the reference documents: (route, status) → the body's ``error``.
DOCUMENTED_5XX: dict[tuple[str, int], str] = {
    ("/api/token", 500): "Failed to generate token",
    ("/api/jira/validate-jql", 501): "Jira not configured",
    ("/api/jira/fields", 501): "Jira not configured",
    ("/api/jira/field-options", 501): "Jira not configured",
    ("/api/mappings/<teamKey>/secrets", 503): "Fly sessions config not set",
    ("/api/mappings/<teamKey>/secrets/<name>", 503): "Fly sessions config not set",
    ("/api/global-secrets", 503): "Fly sessions config not set",
    ("/api/global-secrets/<name>", 503): "Fly sessions config not set",
    ("/api/sessions/<machineId>", 503): "Fly sessions config not set",
}

#: Routes with a known robustness problem on some bodies, each with its own xfail test below.
KNOWN: dict[str, set[str]] = {}

#: Routes that read no body and call the outside services on every request: each call waits out
#: the retries to the unreachable trackers (about 1.5 s), so these get a sample of the shapes.
REMOTE: dict[str, set[str]] = {
    "/api/checks": {"no body", "deep array", "3 MB"},
}


def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def _deep_object(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


#: NUL characters and lone surrogates have their own tests (test_nul_bytes.py,
#: test_lone_surrogates.py): most endpoints answer them with a 500 today.
WEIRD_VALUES: list[Any] = [
    None,
    0,
    -1,
    2**64,
    1.5,
    True,
    "",
    "x" * 70000,
    "\u202e\ud7ff\U0001f600 ../../etc/passwd <script>",
    [],
    {},
    [{}],
    {"a": [1]},
]


def _raw_bodies() -> list[tuple[str, bytes | None, str | None]]:
    """(name, body, content type) of every shape that is not a plausible object."""
    three_mb = b'{"x": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    wide = json.dumps({f"k{i}": i for i in range(40000)}).encode()
    return [
        ("no body", None, None),
        ("empty json", b"", JSON),
        ("whitespace", b"  \n ", JSON),
        ("not json", b"not json", JSON),
        ("truncated", b'{"a": ', JSON),
        ("array", b"[1, 2, 3]", JSON),
        ("null", b"null", JSON),
        ("number", b"42", JSON),
        ("float", b"-1.5e308", JSON),
        ("string", b'"a string"', JSON),
        ("true", b"true", JSON),
        ("deep array", _deep(100_000), JSON),
        ("deep object", _deep_object(50_000), JSON),
        ("moderately deep", _deep(900), JSON),
        ("wide object", wide, JSON),
        ("3 MB", three_mb, JSON),
        ("invalid utf-8", b'{"a": "\xff\xfe\xfd"}', JSON),
        ("lone surrogate", b'{"a": "\\ud800"}', JSON),
        ("nan and infinity", b'{"a": NaN, "b": Infinity, "c": -Infinity}', JSON),
        ("huge integer", b'{"a": 1' + b"0" * 5000 + b"}", JSON),
        ("utf-8 bom", b'\xef\xbb\xbf{"a": 1}', JSON),
        ("utf-16", '{"a": 1}'.encode("utf-16"), JSON),
        ("json as text/plain", b'{"a": 1}', "text/plain"),
        ("form", b"a=1&b=2", "application/x-www-form-urlencoded"),
        (
            "multipart",
            b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
        ),
    ]


#: Keys the endpoints read; each object body sets all of them to one odd value.
KEYS = (
    "nonce",
    "owner",
    "event",
    "step",
    "code",
    "teamKey",
    "repo",
    "defaultBranch",
    "mode",
    "name",
    "value",
    "jql",
    "outcome",
    "phase",
    "comments",
    "prUrl",
    "issueKey",
    "prNumber",
    "paused",
    "maxInProgressAiIssues",
    "extraEnv",
    "ticketing",
    "webhookTimestamp",
    "action",
    "pull_request",
    "repository",
    "issue",
    "webhookEvent",
    "type",
    "data",
    "logExcerpt",
    "error",
    "review",
)


def _object_bodies(nonce: str) -> list[tuple[str, bytes, str]]:
    out = []
    for value in WEIRD_VALUES:
        body = {k: value for k in KEYS}
        out.append((f"all keys = {value!r:.20}", json.dumps(body).encode(), JSON))
        # the same with the real nonce, so the nonce endpoints read further than the nonce
        body["nonce"] = nonce
        out.append((f"nonce + all keys = {value!r:.20}", json.dumps(body).encode(), JSON))
    step = {"id": 1, "type": [], "status": {}, "started_at": None, "detail": "x" * 50000}
    out.append(("odd step", json.dumps({"nonce": nonce, "step": step}).encode(), JSON))
    # a valid step whose detail nests deeply inside a small body: the parser takes it, and code
    # that walks it recursively (redaction) would run out of stack
    deep: Any = "x"
    for _ in range(400):
        deep = [deep]
    step = {"id": "s1", "type": "commit", "status": "running", "started_at": "2026-11-29T05:00:00Z",
            "detail": deep}
    out.append(("deep step detail", json.dumps({"nonce": nonce, "step": step}).encode(), JSON))
    out.append(("deep value", json.dumps({k: deep for k in KEYS}).encode(), JSON))
    return out


class Caller:
    """Sends a body to a route with the credential that route needs."""

    def __init__(self, app: Any, client: Any, admin_token: str, job_id: int) -> None:
        self.app, self.client, self.admin_token, self.job_id = app, client, admin_token, job_id

    def headers(self, rule: str, body: bytes | None) -> dict[str, str]:
        raw = body or b""
        if rule.startswith("/runner/"):
            aud = {"/runner/result": tokens.AUD_RESULT, "/runner/progress": tokens.AUD_PROGRESS}.get(
                rule, tokens.AUD_PLANNING_CONTEXT
            )
            # a fresh token each time: the result token is single-use
            return bearer(tokens.issue_run_token(KEY, self.job_id, "implementation", aud, 600))
        if rule == "/trigger/gap-fill":
            return bearer(SECRETS["AIIMPL_TRIGGER_SECRET"])
        if rule == "/metrics":
            return bearer(SECRETS["AIIMPL_METRICS_TOKEN"])
        if rule == "/api/github/webhook":
            return {
                "X-Hub-Signature-256": github_signature(SECRETS["AIIMPL_GITHUB_WEBHOOK_SECRET"], raw),
                "X-GitHub-Event": "pull_request",
            }
        if rule == "/api/linear/webhook":
            sig = hmac.new(SECRETS["AIIMPL_LINEAR_WEBHOOK_SECRET"].encode(), raw, hashlib.sha256).hexdigest()
            return {"Linear-Signature": sig}
        if rule == "/api/jira/webhook":
            return {"X-Aiimpl-Webhook-Secret": SECRETS["AIIMPL_JIRA_WEBHOOK_SECRET"]}
        if rule.startswith("/api/"):
            return bearer(self.admin_token)
        return {}

    def send(self, method: str, rule: str, body: bytes | None, content_type: str | None) -> Any:
        url = re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: PARAMS.get(m.group(1), "x"), rule)
        if "field-options" in url:
            url += "?fieldId=customfield_1"
        kwargs: dict[str, Any] = {"headers": self.headers(rule, body)}
        if body is not None:
            kwargs["data"] = body
        if content_type:
            kwargs["content_type"] = content_type
        resp = self.client.open(url, method=method, **kwargs)
        if (method, rule) == ("DELETE", "/api/auth") and resp.status_code == 200:
            # that was a sign-out: the routes after it need a session of their own
            self.admin_token = sign_in(self.client)
        return resp


def sign_in(client: Any) -> str:
    return client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]}).get_json()["token"]


def problems(rule: str, resp: Any) -> str | None:
    """What is wrong with an answer, or ``None``."""
    text = resp.get_data(as_text=True)
    if "Traceback" in text or 'File "' in text:
        return "traceback in the answer"
    if resp.status_code >= 500:
        documented = DOCUMENTED_5XX.get((rule, resp.status_code))
        body = resp.get_json(silent=True)
        if documented is None or not isinstance(body, dict) or body.get("error") != documented:
            return f"undocumented {resp.status_code}: {text[:120]}"
    if resp.status_code >= 400 and rule.startswith(("/api/", "/runner/", "/trigger/")):
        body = resp.get_json(silent=True)
        if not isinstance(body, dict):
            return f"{resp.status_code} without a JSON object: {text[:120]}"
        if "error" not in body and body != {"deleted": False}:
            return f"{resp.status_code} without error: {text[:120]}"
        if "error" in body and not isinstance(body["error"], str):
            return f"error is not a string: {text[:120]}"
        if rule.startswith("/runner/") and not re.fullmatch(r"[a-z][A-Za-z_]*", body.get("error", "x")):
            return f"/runner/ error is not a slug: {text[:120]}"
    return None


@pytest.fixture
def caller(full_app: Any) -> Iterator[Caller]:
    from aiimpl_core.auth.tokens import new_nonce
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job, Mapping

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
    nonce, digest = new_nonce()
    # a tracker that is not installed: the planning context falls back at once (no retries to
    # an unreachable Linear on every one of the hundreds of requests)
    job = Job(
        issue_key="ENG-1",
        team_key="ENG",
        mapping_id=mapping.id,
        provider="absent-tracker",
        phase="implementation",
        status="running",
        backend="github-actions",
        owner="acme",
        repo="api",
        base_branch="main",
        branch="ai/ENG-1",
        nonce_hash=digest,
    )
    db.session.add(job)
    db.session.commit()
    client = full_app.test_client()
    c = Caller(full_app, client, sign_in(client), job.id)
    c.nonce = nonce  # type: ignore[attr-defined]
    yield c


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, rule.rule))
    return out


def _admin_routes(app: Any) -> set[tuple[str, str]]:
    """The routes that need the admin session, as ``(method, rule)``."""
    from aiimpl_core.auth import needs_admin_session

    return {(method, rule.rule) for rule in app.url_map.iter_rules() for method in rule.methods
            if needs_admin_session(rule.rule, app.view_functions[rule.endpoint])}


@pytest.mark.long
def test_every_route_answers_every_body_shape(caller, full_app):
    routes, admin_routes = _routes(full_app), _admin_routes(full_app)
    assert ("POST", "/api/linear/webhook") in routes and ("POST", "/api/jira/webhook") in routes
    bodies = _raw_bodies() + _object_bodies(caller.nonce)
    assert all(names <= {name for name, _, _ in bodies} for names in REMOTE.values())
    failures = []
    for method, rule in routes:
        for name, body, content_type in bodies:
            if name in KNOWN.get(rule, set()) or name not in REMOTE.get(rule, {name}):
                continue
            resp = caller.send(method, rule, body, content_type)
            problem = problems(rule, resp)
            if resp.status_code == 401 and (method, rule) in admin_routes:
                # the audit itself lost its session: the rest would pass without being looked at
                problem = "401 with a valid admin session"
            if problem:
                failures.append(f"{method} {rule} [{name}]: {problem}")
    assert not failures, "\n".join(failures[:40])


def test_the_checker_catches_a_500(full_app):
    """The counter-check: :func:`problems` does flag an undocumented 500 and a non-JSON error."""

    class R:
        def __init__(self, status: int, text: str) -> None:
            self.status_code, self._text = status, text

        def get_data(self, as_text: bool = False) -> str:
            return self._text

        def get_json(self, silent: bool = False) -> Any:
            try:
                return json.loads(self._text)
            except ValueError:
                return None

    assert problems("/api/mappings", R(500, '{"error": "Internal server error"}'))
    assert problems("/api/mappings", R(400, "<html>Bad Request</html>"))
    assert problems("/runner/result", R(400, '{"error": "Body is missing"}'))
    assert problems("/api/token", R(500, '{"error": "Failed to generate token"}')) is None


# -- hypothesis: arbitrary JSON to the endpoints that parse objects ---------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries({}, optional={k: _json for k in KEYS}),
)
FUZZED = (
    "/runner/result",
    "/runner/progress",
    "/api/status",
    "/api/step-report",
    "/api/token",
    "/api/auth",
    "/api/mappings",
    "/api/runner-mode",
    "/api/global-secrets",
    "/trigger/gap-fill",
    "/api/github/webhook",
    "/api/jira/validate-jql",
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_bodies, nonce_in=st.booleans())
def test_fuzzed_json_bodies(caller, body, nonce_in):
    if nonce_in and isinstance(body, dict):
        body = {**body, "nonce": caller.nonce}
    raw = json.dumps(body).encode()
    failures = []
    for rule in FUZZED:
        resp = caller.send("POST", rule, raw, JSON)
        problem = problems(rule, resp)
        if problem:
            failures.append(f"{rule}: {problem}")
    assert not failures, (body, failures)


# -- known problems ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [_deep(100_000), _deep_object(50_000)], ids=["array", "object"])
def test_linear_webhook_deeply_nested_body(caller, body):
    resp = caller.send("POST", "/api/linear/webhook", body, JSON)
    assert resp.status_code == 400 and resp.get_json() == {"error": "Invalid JSON payload"}


def test_linear_webhook_huge_timestamp(caller):
    body = b'{"type": "Issue", "action": "update", "data": {}, "webhookTimestamp": 1' + b"0" * 400 + b"}"
    resp = caller.send("POST", "/api/linear/webhook", body, JSON)
    assert resp.status_code < 500, resp.get_data(as_text=True)


@pytest.mark.parametrize("body", [_deep(100_000), _deep_object(50_000)], ids=["array", "object"])
def test_jira_webhook_deeply_nested_body(caller, body):
    resp = caller.send("POST", "/api/jira/webhook", body, JSON)
    assert resp.status_code == 400 and resp.get_json() == {"error": "Invalid JSON payload"}


def test_jira_validate_jql_deeply_nested_body(caller, full_app):
    full_app.config.update(
        {"AIIMPL_JIRA_URL": "http://127.0.0.1:9", "AIIMPL_JIRA_EMAIL": "audit@example.test"}
    )
    # configured now: a plain bad body reaches the parser and is refused properly ...
    plain = caller.send("POST", "/api/jira/validate-jql", b"[1]", JSON)
    assert plain.status_code == 400 and plain.get_json() == {"error": "Invalid JSON body"}
    # ... a deeply nested one is not
    resp = caller.send("POST", "/api/jira/validate-jql", _deep(100_000), JSON)
    assert resp.status_code == 400 and resp.get_json() == {"error": "Invalid JSON body"}


def test_a_body_may_nest_up_to_the_limit() -> None:
    from aiimpl_core.schemas.common import MAX_DEPTH, NOT_JSON, parse_json

    assert parse_json(_deep(MAX_DEPTH)) is not NOT_JSON
    assert parse_json(_deep_object(MAX_DEPTH)) is not NOT_JSON
    assert parse_json(_deep(MAX_DEPTH + 1)) is NOT_JSON
    assert parse_json(_deep_object(MAX_DEPTH + 1)) is NOT_JSON


def test_an_integer_is_json_up_to_the_digits_python_reads() -> None:
    from aiimpl_core.schemas.common import NOT_JSON, parse_json

    assert parse_json('{"n": %s}' % ("9" * 4300)) == {"n": int("9" * 4300)}
    assert parse_json('{"n": -%s}' % ("9" * 4300)) == {"n": -int("9" * 4300)}
    assert parse_json('{"n": %s}' % ("9" * 4301)) is NOT_JSON
