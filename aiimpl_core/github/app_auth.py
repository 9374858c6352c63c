"""GitHub App authentication: the App JWT and installation tokens, cached.

The orchestrator authenticates as a GitHub App: it signs a short JWT (RS256) with the App's
private key, looks up the App's installation for a repository, and exchanges the JWT for an
installation access token limited to that one repository and the permissions asked for. Tokens
last an hour; :class:`TokenCache` keeps each until five minutes before it expires, so sessions
that ask again get the same token instead of minting one per call.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from .. import logs
from ..errors import ProviderConfigError

#: GitHub refuses an App JWT whose ``exp`` is more than ten minutes ahead; ``iat`` is set in the
#: past to absorb clock drift between us and GitHub
JWT_BACKDATE = timedelta(seconds=60)
JWT_LIFETIME = timedelta(minutes=9)
#: a cached token is replaced this long before GitHub's ``expires_at``
REFRESH_MARGIN = timedelta(minutes=5)


def load_private_key(value: str) -> str:
    """The App's PEM key from ``AIIMPL_GITHUB_PRIVATE_KEY``: PEM text, or a path to a PEM file.

    Environment variables often carry the key with literal ``\\n`` sequences; those are expanded.
    The key itself never appears in an error message.
    """
    text = value.strip()
    if "-----BEGIN" in text:
        pem = text.replace("\\n", "\n") + "\n"
        logs.mask(pem)
        return pem
    if text and os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as fh:
                pem = fh.read()
        except OSError as exc:
            raise ProviderConfigError(
                f"AIIMPL_GITHUB_PRIVATE_KEY: cannot read the key file ({exc.strerror})", provider="github"
            ) from None
        if "-----BEGIN" in pem:
            logs.mask(pem)
            return pem
    raise ProviderConfigError(
        "AIIMPL_GITHUB_PRIVATE_KEY is neither a PEM private key nor the path of one", provider="github"
    )


def app_jwt(app_id: str | int, private_key_pem: str, now: datetime | None = None) -> str:
    """A GitHub App JWT: ``iss`` the App id, ``iat`` a minute ago, ``exp`` under ten minutes ahead."""
    now = now or datetime.now(UTC)
    payload = {
        "iat": int((now - JWT_BACKDATE).timestamp()),
        "exp": int((now + JWT_LIFETIME).timestamp()),
        "iss": str(app_id),
    }
    try:
        return jwt.encode(payload, _signing_key(private_key_pem), algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError):
        # the library's message may quote key material: say only what is wrong
        raise ProviderConfigError(
            "AIIMPL_GITHUB_PRIVATE_KEY is not a usable RSA private key", provider="github"
        ) from None


@functools.lru_cache(maxsize=8)
def _signing_key(private_key_pem: str) -> object:
    """The key of a PEM text, read once: reading it checks the RSA key whole, some 20-50 ms of CPU,
    which every JWT (each installation lookup and token) paid again. An unreadable key raises
    ``ValueError`` (or ``TypeError``) each time; nothing is kept of it."""
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(private_key_pem.encode("utf-8"), password=None)


@dataclass(frozen=True)
class CachedToken:
    token: str
    expires_at: datetime


def permissions_key(permissions: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(permissions.items()))


class TokenCache:
    """Installation tokens by (API URL, App id, repository, permissions), thread-safe, and the
    installation each repository was found in.

    A lock per key makes concurrent callers for the same repository wait for one mint instead of
    each minting their own.
    """

    def __init__(self, margin: timedelta = REFRESH_MARGIN) -> None:
        self.margin = margin
        self._tokens: dict[tuple[object, ...], CachedToken] = {}
        # (API URL, App id, repository) -> installation id: a repository's installation is the
        # App's on its owner, whose id changes only when the App is installed anew
        self._installations: dict[tuple[object, ...], int] = {}
        self._locks: dict[tuple[object, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def lock_for(self, key: tuple[object, ...]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[object, ...], now: datetime | None = None) -> CachedToken | None:
        now = now or datetime.now(UTC)
        with self._guard:
            cached = self._tokens.get(key)
        if cached is not None and cached.expires_at - self.margin > now:
            return cached
        return None

    def put(self, key: tuple[object, ...], token: CachedToken) -> None:
        with self._guard:
            self._tokens[key] = token

    def discard(self, key: tuple[object, ...], token: str) -> None:
        """Drop ``token`` cached under ``key`` (GitHub refused it: revoked before its expiry),
        unless another has replaced it meanwhile."""
        with self._guard:
            cached = self._tokens.get(key)
            if cached is not None and cached.token == token:
                del self._tokens[key]

    def installation(self, key: tuple[object, ...]) -> int | None:
        with self._guard:
            return self._installations.get(key)

    def put_installation(self, key: tuple[object, ...], installation: int) -> None:
        with self._guard:
            self._installations[key] = installation

    def discard_installation(self, key: tuple[object, ...], installation: int) -> None:
        """Forget that ``key``'s repository is in ``installation`` (GitHub refused a token of it),
        unless another id has replaced it meanwhile."""
        with self._guard:
            if self._installations.get(key) == installation:
                del self._installations[key]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()
            self._installations.clear()


#: one cache per process: tokens are keyed by API URL and App id, so apps and tests never share one
TOKENS = TokenCache()
