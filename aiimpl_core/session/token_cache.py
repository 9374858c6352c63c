"""The repository tokens a session has fetched, in a file shared with its git credential helper.

Kept apart from :mod:`aiimpl_core.session.api` so that the helper, which git starts before every
network operation, answers from the file without loading an HTTP client: only a "get" with no
fresh token left asks the orchestrator.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RepoToken:
    """A GitHub installation token for the job's repository and when it expires (epoch seconds)."""

    token: str
    expires_at: float | None
    #: GitHub refused it (401: revoked before its expiry); kept only to be masked and named
    refused: bool = False

    def fresh(self, margin: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return True
        return self.expires_at - (time.time() if now is None else now) > margin


class TokenCache:
    """The tokens fetched so far, in a private file shared with the git credential helper.

    The file lives in the session's own temporary directory (mode 0600), never in the working
    tree or ``.git``; the helper appends the tokens it fetches so the session can redact them.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> list[RepoToken]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                rows = json.load(fh)
        except (OSError, ValueError):
            return []
        return [
            RepoToken(r["token"], r.get("expiresAt"), r.get("refused") is True)
            for r in rows
            if isinstance(r, dict) and isinstance(r.get("token"), str)
        ]

    def add(self, token: RepoToken) -> None:
        self._write([*self.load(), token])

    def discard(self, value: str) -> None:
        """Mark a token GitHub refused as expired and refused (kept in the file: it must still be
        redacted, and the next request for a token names it)."""
        self._write([RepoToken(t.token, 0.0, True) if t.token == value else t for t in self.load()])

    def last_refused(self) -> str | None:
        """The token GitHub refused last, if any: the orchestrator may still have it cached."""
        return next((t.token for t in reversed(self.load()) if t.refused), None)

    def _write(self, tokens: list[RepoToken]) -> None:
        rows = [{"token": t.token, "expiresAt": t.expires_at, "refused": t.refused} for t in tokens]
        directory = os.path.dirname(self.path) or "."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tokens-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(rows, fh)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def current(self, margin: float) -> RepoToken | None:
        """The newest token still valid for more than ``margin`` seconds."""
        for token in reversed(self.load()):
            if token.fresh(margin):
                return token
        return None
