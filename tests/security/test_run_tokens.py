"""Run tokens and nonces: each opens one endpoint of one job, and nothing else.

Tokens and nonces are the ones :mod:`aiimpl_core.services.launch` really issues to the session.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from aiimpl_core.auth import tokens
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job
from aiimpl_core.types import Phase

from .conftest import SECRETS, bearer

KEY = SECRETS["AIIMPL_SECRET_KEY"]
# an HS512 forgery with the real (short for SHA-512) key is one of the cases
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
STEP = {"id": "s1", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}
FAILURE = {"outcome": "failure", "phase": "implementation", "comments": [], "error": "boom"}


def _status(job_id: int) -> str:
    db.session.commit()
    job = db.session.get(Job, job_id)
    assert job is not None
    return job.status


@pytest.fixture
def two_jobs(app, sec_mapping, sec_launch) -> tuple[tuple[int, dict[str, str]], tuple[int, dict[str, str]]]:
    sec_mapping("ENG")
    return sec_launch("ENG-1"), sec_launch("ENG-2")


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(job_id: int, aud: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(job_id),
        "phase": "implementation",
        "aud": aud,
        "iat": now,
        "exp": now + 600,
        "jti": "j-" + aud,
    }


# -- one job, one endpoint --------------------------------------------------------------------


def test_a_jobs_tokens_act_on_that_job_only(client, two_jobs):
    (a, env_a), (b, env_b) = two_jobs
    ctx = client.get("/runner/planning-context", headers=bearer(env_a["AIIMPL_CONTEXT_TOKEN"])).get_json()
    assert ctx["jobId"] == a and ctx["issue"]["key"] == "ENG-1"
    progress = client.post(
        "/runner/progress", headers=bearer(env_a["AIIMPL_PROGRESS_TOKEN"]), json={"step": STEP, "jobId": b}
    )  # a body naming job B changes nothing
    assert progress.get_json()["jobId"] == a
    result = client.post(
        "/runner/result", headers=bearer(env_a["AIIMPL_RESULT_TOKEN"]), json={**FAILURE, "jobId": b}
    )
    assert result.status_code == 200 and result.get_json()["jobId"] == a
    assert _status(a) == "failed"
    assert _status(b) == "dispatched"
    from aiimpl_core.orm import JobStep

    assert {s.job_id for s in db.session.query(JobStep)} == {a}


def test_a_nonce_acts_on_its_job_only(client, two_jobs):
    (a, env_a), (b, env_b) = two_jobs
    resp = client.post("/api/step-report", json={"nonce": env_a["AIIMPL_NONCE"], "step": STEP, "jobId": b})
    assert resp.status_code == 200 and resp.get_json()["jobId"] == a
    assert _status(b) == "dispatched"


@pytest.mark.parametrize(
    ("holder", "endpoint"),
    [
        ("AIIMPL_RESULT_TOKEN", ("POST", "/runner/progress")),
        ("AIIMPL_RESULT_TOKEN", ("GET", "/runner/planning-context")),
        ("AIIMPL_PROGRESS_TOKEN", ("POST", "/runner/result")),
        ("AIIMPL_PROGRESS_TOKEN", ("GET", "/runner/planning-context")),
        ("AIIMPL_CONTEXT_TOKEN", ("POST", "/runner/result")),
        ("AIIMPL_CONTEXT_TOKEN", ("POST", "/runner/progress")),
    ],
)
def test_a_token_opens_its_own_endpoint_only(client, two_jobs, holder, endpoint):
    (a, env_a), _ = two_jobs
    method, url = endpoint
    body = {"step": STEP} if url.endswith("progress") else FAILURE
    resp = client.open(url, method=method, headers=bearer(env_a[holder]), json=body)
    assert resp.status_code == 401 and resp.get_json() == {"error": "wrong_audience"}
    assert _status(a) == "dispatched"


def test_result_token_is_single_use(client, two_jobs):
    (a, env_a), _ = two_jobs
    headers = bearer(env_a["AIIMPL_RESULT_TOKEN"])
    assert client.post("/runner/result", headers=headers, json=FAILURE).status_code == 200
    again = client.post("/runner/result", headers=headers, json=FAILURE)
    assert again.status_code == 409 and again.get_json() == {"error": "already_consumed"}


def test_phase_claim_is_enforced(client, app, sec_mapping, sec_launch):
    sec_mapping("ENG", planning_enabled=True)
    job, env = sec_launch("ENG-1", Phase.PLANNING)
    resp = client.post(
        "/runner/result",
        headers=bearer(env["AIIMPL_RESULT_TOKEN"]),
        json={**FAILURE, "phase": "implementation"},
    )
    assert resp.status_code == 400 and resp.get_json() == {"error": "phase_mismatch"}
    assert _status(job) == "dispatched"


# -- forged and malformed tokens --------------------------------------------------------------


def _rsa_pem() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _hmac_token(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT made by hand (pyjwt refuses a PEM key as an HMAC secret, an attacker does not)."""
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def _forgeries(job_id: int) -> dict[str, tuple[str, set[str]]]:
    """name → (token, acceptable refusal slugs) for the progress endpoint."""
    aud = tokens.AUD_PROGRESS
    claims = _claims(job_id, aud)
    private, public = _rsa_pem()
    header_none = _b64({"alg": "none", "typ": "JWT"})
    good = jwt.encode(claims, KEY, algorithm="HS256")
    head, body, sig = good.split(".")
    return {
        "another key": (
            jwt.encode(claims, "another-secret-key-0123456789abcdef", algorithm="HS256"),
            {"bad_signature"},
        ),
        "alg none, no signature": (f"{header_none}.{_b64(claims)}.", {"malformed", "bad_signature"}),
        "alg none, with signature": (f"{header_none}.{_b64(claims)}.{sig}", {"malformed", "bad_signature"}),
        "alg None": (f"{_b64({'alg': 'None'})}.{_b64(claims)}.", {"malformed", "bad_signature"}),
        "RS256 with a foreign key": (
            jwt.encode(claims, private, algorithm="RS256"),
            {"malformed", "bad_signature"},
        ),
        # HS/RS confusion: an HMAC made with a public key as the secret
        "HS256 keyed with a public key": (_hmac_token(claims, public), {"bad_signature"}),
        "HS512 with the right key": (
            jwt.encode(claims, KEY, algorithm="HS512"),
            {"malformed", "bad_signature"},
        ),
        "claims swapped under a good signature": (
            f"{head}.{_b64({**claims, 'sub': str(job_id + 1)})}.{sig}",
            {"bad_signature"},
        ),
        "expired": (
            jwt.encode({**claims, "exp": int(time.time()) - 10}, KEY, algorithm="HS256"),
            {"expired"},
        ),
        "no audience": (
            jwt.encode({k: v for k, v in claims.items() if k != "aud"}, KEY, algorithm="HS256"),
            {"malformed", "wrong_audience"},
        ),
        "no exp": (
            jwt.encode({k: v for k, v in claims.items() if k != "exp"}, KEY, algorithm="HS256"),
            {"malformed"},
        ),
        "sub not a number": (jwt.encode({**claims, "sub": "job-1"}, KEY, algorithm="HS256"), {"malformed"}),
        # PyJWT takes a NumericDate given as text (it calls int() on it); no token issued holds one
        "exp as text": (
            jwt.encode({**claims, "exp": str(claims["exp"])}, KEY, algorithm="HS256"), {"malformed"},
        ),
        "iat as text": (
            jwt.encode({**claims, "iat": str(claims["iat"])}, KEY, algorithm="HS256"), {"malformed"},
        ),
        "exp true": (jwt.encode({**claims, "exp": True}, KEY, algorithm="HS256"), {"malformed", "expired"}),
        "two segments": (f"{head}.{body}", {"malformed"}),
        "admin session token": ("eyJhZG1pbiI6dHJ1ZX0.ZZZZZZ.ZZZZZZZZZZZZZZZZZZZZZZZZZZZ", {"malformed"}),
        "kid header pointing elsewhere": (
            jwt.encode(claims, KEY, algorithm="HS256", headers={"kid": "../../etc/passwd"}),
            set(),
        ),
    }


def test_forged_tokens_are_refused(client, two_jobs):
    (a, _), _ = two_jobs
    failures = []
    for name, (token, slugs) in _forgeries(a).items():
        resp = client.post("/runner/progress", headers=bearer(token), json={"step": STEP})
        if name == "kid header pointing elsewhere":
            # a harmless header: the token is valid and the kid is ignored
            ok = resp.status_code == 200
        else:
            ok = resp.status_code == 401 and resp.get_json().get("error") in slugs
        if not ok:
            failures.append((name, resp.status_code, resp.get_json()))
    assert not failures
    assert _status(a) in ("dispatched", "running")


def test_an_audience_list_does_not_open_several_endpoints(client, two_jobs):
    (a, _), _ = two_jobs
    token = jwt.encode(
        {**_claims(a, tokens.AUD_PROGRESS), "aud": list(tokens.AUDIENCES)}, KEY, algorithm="HS256"
    )
    resp = client.post("/runner/progress", headers=bearer(token), json={"step": STEP})
    assert resp.status_code == 401 and resp.get_json() == {"error": "wrong_audience"}


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Token abc", "Basic abc", "bearer"])
def test_missing_bearer(client, header):
    resp = client.post(
        "/runner/progress", headers={"Authorization": header} if header else {}, json={"step": STEP}
    )
    assert resp.status_code == 401 and resp.get_json() == {"error": "missing_bearer"}


def test_token_of_a_deleted_job_is_job_not_found(client, two_jobs):
    (a, env_a), _ = two_jobs
    db.session.delete(db.session.get(Job, a))
    db.session.commit()
    resp = client.post(
        "/runner/progress", headers=bearer(env_a["AIIMPL_PROGRESS_TOKEN"]), json={"step": STEP}
    )
    assert resp.status_code == 404 and resp.get_json() == {"error": "job_not_found"}


# -- nonces -----------------------------------------------------------------------------------


@pytest.mark.parametrize("final", ["completed", "failed", "timed_out", "review_failed"])
def test_nonce_of_a_terminal_job_is_refused(client, two_jobs, final):
    (a, env_a), _ = two_jobs
    job = db.session.get(Job, a)
    job.status = final
    db.session.commit()
    nonce = env_a["AIIMPL_NONCE"]
    for url, body in (
        ("/api/status", {"nonce": nonce, "event": "session_created"}),
        ("/api/step-report", {"nonce": nonce, "step": STEP}),
        ("/api/token", {"nonce": nonce, "owner": "acme"}),
    ):
        resp = client.post(url, json=body)
        assert resp.status_code == 403 and resp.get_json() == {"error": "Invalid or expired nonce"}, url


def test_nonce_is_not_accepted_by_prefix_case_or_hash(client, two_jobs):
    (a, env_a), _ = two_jobs
    nonce = env_a["AIIMPL_NONCE"]
    import hashlib

    for guess in (
        nonce[:-1],
        nonce + "x",
        nonce.upper(),
        f" {nonce}",
        hashlib.sha256(nonce.encode()).hexdigest(),
    ):
        resp = client.post("/api/step-report", json={"nonce": guess, "step": STEP})
        assert resp.status_code == 403, guess


def test_a_relaunch_replaces_the_nonce(client, app, two_jobs):
    """Credentials are issued per launch: the earlier nonce of a job stops working."""
    from aiimpl_core.services import launch

    (a, env_a), _ = two_jobs
    job = db.session.get(Job, a)
    launch.issue_credentials(job)
    db.session.commit()
    resp = client.post("/api/step-report", json={"nonce": env_a["AIIMPL_NONCE"], "step": STEP})
    assert resp.status_code == 403


def test_a_result_cannot_flood_the_tracker_with_comments(client, two_jobs, sec_tracker):
    """A result's comments are posted while the request waits: at most 20, each at most 32,767
    characters (Jira Cloud's limit). More is refused whole, and nothing is posted or consumed."""
    from aiimpl_core.schemas.runner import MAX_COMMENT_CHARS, MAX_RESULT_COMMENTS

    (a, env_a), _ = two_jobs
    headers = bearer(env_a["AIIMPL_RESULT_TOKEN"])
    too_many = [{"body": f"note {i}"} for i in range(MAX_RESULT_COMMENTS + 1)]
    resp = client.post("/runner/result", headers=headers, json={**FAILURE, "comments": too_many})
    assert (resp.status_code, resp.get_json()["error"]) == (400, "invalid_comments")
    too_long = [{"body": "x" * (MAX_COMMENT_CHARS + 1)}]
    resp = client.post("/runner/result", headers=headers, json={**FAILURE, "comments": too_long})
    assert (resp.status_code, resp.get_json()["error"]) == (400, "invalid_comment_shape")
    assert sum(len(v) for v in sec_tracker.comments.values()) == 0

    # the limits themselves are accepted, and the token was not spent by the refusals
    at_limit = [{"body": f"note {i}"} for i in range(MAX_RESULT_COMMENTS - 1)]
    at_limit.append({"body": "y" * MAX_COMMENT_CHARS})
    resp = client.post("/runner/result", headers=headers, json={**FAILURE, "comments": at_limit})
    assert resp.status_code == 200, resp.get_json()
    posted = [body for bodies in sec_tracker.comments.values() for body in bodies]
    assert {f"note {i}" for i in range(MAX_RESULT_COMMENTS - 1)} <= set(posted)
    assert "y" * MAX_COMMENT_CHARS in posted


def test_a_token_verified_before_still_expires_and_its_variants_are_refused(client, two_jobs):
    """Verified tokens are remembered (a runner sends the same one with every report): a
    remembered token is still refused once it expires, and a token that differs from it in its
    signature alone is checked afresh."""
    (a, _), _ = two_jobs
    # a short lifetime, longer where a loaded machine took the first two reports past it
    for lifetime in (3, 10, 30):
        claims = {**_claims(a, "runner:progress"), "exp": int(time.time()) + lifetime}
        token = jwt.encode(claims, KEY, algorithm="HS256")
        first = client.post("/runner/progress", headers=bearer(token), json={"step": STEP})
        header, payload, signature = token.split(".")
        tampered = f"{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
        resp = client.post("/runner/progress", headers=bearer(tampered), json={"step": STEP})
        if time.time() < claims["exp"] - 1:
            break
    assert first.status_code == 200
    assert (resp.status_code, resp.get_json()["error"]) == (401, "bad_signature")
    time.sleep(max(0.0, claims["exp"] - time.time()) + 0.05)
    resp = client.post("/runner/progress", headers=bearer(token), json={"step": STEP})
    assert (resp.status_code, resp.get_json()["error"]) == (401, "expired")
