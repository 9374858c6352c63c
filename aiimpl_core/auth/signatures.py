"""Shared-secret checks: the GitHub webhook signature and the gap-fill trigger bearer.

Both compare in constant time (:func:`hmac.compare_digest`) and never accept anything while their
secret is unset.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="


def github_signature(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_signature_valid(secret: str | None, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the HMAC-SHA256 of the raw ``body`` with ``secret``."""
    if not secret or not header:
        return False
    expected = github_signature(secret, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


def secret_matches(secret: str | None, candidate: str | None) -> bool:
    """Constant-time equality of a presented bearer and a configured secret."""
    if not secret or candidate is None:
        return False
    return hmac.compare_digest(candidate.encode("utf-8", "replace"), str(secret).encode())
