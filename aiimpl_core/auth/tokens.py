"""Run tokens and job nonces.

Run tokens are JWTs (HS256, key ``AIIMPL_SECRET_KEY``, checked with its fallbacks too) with
``sub`` (job id), ``phase``, ``aud`` (the one endpoint they open), ``iat``, ``exp`` and ``jti``. A
job's nonce has 256 random bits and is stored only as its SHA-256.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

AUD_RESULT = "runner:result"
AUD_PROGRESS = "runner:progress"
AUD_PLANNING_CONTEXT = "runner:planning-context"
AUDIENCES = (AUD_RESULT, AUD_PROGRESS, AUD_PLANNING_CONTEXT)
ALGORITHM = "HS256"
#: the largest job id (the id column is a 32-bit INTEGER on PostgreSQL)
MAX_JOB_ID = 2**31 - 1
#: a token's id is stored when the token is spent (``consumed_tokens.jti``)
MAX_JTI_CHARS = 64
#: seconds a token (or an admin session) may seem issued in the future: the host that issued it may
#: have a clock a little ahead of the one that checks it
CLOCK_SKEW_SECONDS = 60


class TokenError(Exception):
    """A run token was refused; ``slug`` is the reference's error code."""

    def __init__(self, slug: str) -> None:
        super().__init__(slug)
        self.slug = slug


@dataclass(frozen=True)
class RunClaims:
    job_id: int
    phase: str
    audience: str
    jti: str
    expires_at: datetime


def issue_run_token(secret: str, job_id: int, phase: str, audience: str, ttl_seconds: int,
                    now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    claims = {
        "sub": str(job_id),
        "phase": phase,
        "aud": audience,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def issue_run_tokens(secret: str, job_id: int, phase: str, ttl_seconds: int) -> dict[str, str]:
    """The three run tokens of a job, keyed by audience."""
    return {aud: issue_run_token(secret, job_id, phase, aud, ttl_seconds) for aud in AUDIENCES}


def verify_run_token(secret: str | Sequence[str], token: str, audience: str) -> RunClaims:
    """Check signature, expiry, shape and audience; raise :class:`TokenError` with the slug.

    A runner presents the same token with every progress report: a token once verified is
    remembered (a bounded cache of valid tokens only), and only its expiry is checked again.

    :param secret: the key, or the keys a token may be signed with, the current one first
        (:func:`~aiimpl_core.config.secret_keys`): a token no key signed is ``bad_signature``.
    """
    keys = (secret,) if isinstance(secret, str) else tuple(secret)
    for key in keys[:-1]:
        try:
            claims = _verified(key, token, audience)
        except TokenError as exc:
            if exc.slug != "bad_signature":
                raise
        else:
            break
    else:
        claims = _verified(keys[-1], token, audience)
    if claims.expires_at.timestamp() <= time.time():
        raise TokenError("expired")
    return claims


@functools.lru_cache(maxsize=4096)
def _verified(secret: str, token: str, audience: str) -> RunClaims:
    """The token's claims once its signature, shape and audience are checked (a refusal raises,
    so it is never cached)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            # strict: the token's aud must be this one endpoint, not a list that happens to name it
            options={"require": ["sub", "aud", "exp", "iat", "jti"], "strict_aud": True},
            # an iat a moment ahead is another host's clock (PyJWT refuses it as not yet valid);
            # the expiry is checked again without it by verify_run_token
            leeway=CLOCK_SKEW_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("expired") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bad_signature") from None
    except jwt.InvalidAudienceError:
        raise TokenError("wrong_audience") from None
    except jwt.PyJWTError:
        raise TokenError("malformed") from None
    job_id = _job_id(claims["sub"])
    phase = claims.get("phase")
    jti = claims["jti"]
    if not isinstance(phase, str) or not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
        raise TokenError("malformed")
    if not jti.isprintable():  # a NUL or a lone surrogate: no id a spent token could be stored under
        raise TokenError("malformed")
    # PyJWT calls int() on a NumericDate, text included; every token issued holds numbers
    if not all(_numeric_date(claims[name]) for name in ("exp", "iat")):
        raise TokenError("malformed")
    try:
        expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    except (OverflowError, OSError, ValueError):  # beyond the years a datetime can hold
        raise TokenError("malformed") from None
    return RunClaims(job_id, phase, audience, jti, expires_at)


def _numeric_date(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _job_id(sub: object) -> int:
    """The job id a token's ``sub`` names: ASCII digits of a positive id that fits the id column
    (``int()`` would also take " 8 ", "+8", "8_0" or other scripts' digits)."""
    if (
        not isinstance(sub, str)
        or not (sub.isascii() and sub.isdigit())
        or len(sub) > len(str(MAX_JOB_ID))
        or not 0 < int(sub) <= MAX_JOB_ID
    ):
        raise TokenError("malformed")
    return int(sub)


def new_nonce() -> tuple[str, str]:
    """A fresh nonce and the hash to store."""
    nonce = secrets.token_urlsafe(32)
    return nonce, hash_nonce(nonce)


def hash_nonce(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()
