"""The session's calls back to the orchestrator, and its repository-token cache.

Every body is redacted before it leaves (only the nonce a request must carry passes through);
the tokens the orchestrator hands out are learned by the redactor the moment they arrive.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import ProviderError
from ..http import HttpClient
from .redact import Redactor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepoToken:
    """A GitHub installation token for the job's repository and when it expires (epoch seconds)."""

    token: str
    expires_at: float | None

    def fresh(self, margin: float, now: float | None = None) -> bool:
        if self.expires_at is None:
            return True
        return self.expires_at - (time.time() if now is None else now) > margin


def parse_expiry(value: Any) -> float | None:
    """``2026-01-01T00:00:00Z`` → epoch seconds; anything unreadable → ``None``."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


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
            RepoToken(r["token"], r.get("expiresAt"))
            for r in rows
            if isinstance(r, dict) and isinstance(r.get("token"), str)
        ]

    def add(self, token: RepoToken) -> None:
        self._write([*self.load(), token])

    def discard(self, value: str) -> None:
        """Mark a token GitHub refused as expired (kept in the file: it must still be redacted)."""
        self._write([RepoToken(t.token, 0.0) if t.token == value else t for t in self.load()])

    def _write(self, tokens: list[RepoToken]) -> None:
        rows = [{"token": t.token, "expiresAt": t.expires_at} for t in tokens]
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


class Orchestrator:
    """Client of the orchestrator's session and runner endpoints.

    :param url: the orchestrator's base URL (``AIIMPL_URL``).
    :param nonce: the job's nonce (``/api/token``, ``/api/status``, ``/api/step-report``).
    :param tokens: run tokens by audience (``runner:result`` …); missing ones are ``None``.
    """

    def __init__(
        self,
        url: str,
        nonce: str,
        tokens: dict[str, str | None],
        redactor: Redactor,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        report_timeout: float = 10.0,
    ) -> None:
        self.http = HttpClient(url, provider="orchestrator", timeout=timeout, retries=retries, max_wait=30.0)
        #: seconds a progress report (a status event, a step) may wait for an answer: they are best
        #: effort, and a slow orchestrator must not hold the run past its budget
        self.report_timeout = report_timeout
        self.nonce = nonce
        self.tokens = tokens
        self.redactor = redactor

    def _bearer(self, audience: str) -> dict[str, str]:
        token = self.tokens.get(audience)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def repository_token(self, owner: str) -> RepoToken:
        """``POST /api/token``: a fresh installation token for the job's repository."""
        # minting is safe to repeat: a proxy's 502 or a dropped answer is retried like a read
        resp = self.http.post("/api/token", json={"nonce": self.nonce, "owner": owner}, retry_unsafe=True)
        body = resp.json()
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderError("orchestrator: /api/token answered without a token", provider="orchestrator")
        self.redactor.add(token)
        return RepoToken(token, parse_expiry(body.get("expiresAt")))

    def status(self, event: str, **fields: Any) -> bool:
        """``POST /api/status``; a failure is logged, never raised (the run goes on)."""
        body = {"nonce": self.nonce, "event": event, **{k: v for k, v in fields.items() if v is not None}}
        try:
            # the orchestrator de-duplicates an event per job, so a repeat never posts twice
            self.http.post("/api/status", json=self.redactor.data(body, keep=("nonce",)), retry_unsafe=True,
                           timeout=self.report_timeout)
            return True
        except ProviderError as exc:
            log.warning("status event %s was not accepted: %s", event, self.redactor.text(exc.message))
            return False

    def step(self, step: dict[str, Any]) -> bool:
        """Report a pipeline step (``/runner/progress``, or ``/api/step-report`` without a progress token)."""
        clean = self.redactor.data(step)
        try:
            if self.tokens.get("runner:progress"):
                self.http.post(
                    "/runner/progress",
                    json={"step": clean},
                    headers=self._bearer("runner:progress"),
                    retry_unsafe=True,
                    timeout=self.report_timeout,
                )
            else:
                self.http.post(
                    "/api/step-report", json={"nonce": self.nonce, "step": clean}, retry_unsafe=True,
                    timeout=self.report_timeout,
                )
            return True
        except ProviderError as exc:
            log.warning("step %s was not recorded: %s", step.get("id"), self.redactor.text(exc.message))
            return False

    def planning_context(self) -> dict[str, Any]:
        """``GET /runner/planning-context``."""
        resp = self.http.get("/runner/planning-context", headers=self._bearer("runner:planning-context"))
        body = resp.json()
        if not isinstance(body, dict):
            raise ProviderError(
                "orchestrator: the planning context is not an object", provider="orchestrator"
            )
        return body

    def result(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /runner/result`` (single-use token).

        A retry after a lost answer may meet ``409 already_consumed``: the first attempt was
        recorded, so that counts as delivered.
        """
        clean = self.redactor.data(body)
        attempts = 0
        while True:
            attempts += 1
            try:
                resp = self.http.post(
                    "/runner/result", json=clean, headers=self._bearer("runner:result"), retry_unsafe=False
                )
                return resp.json() if resp.content else {}
            except ProviderError as exc:
                if exc.status == 409 and attempts > 1:
                    return {"status": "already recorded"}
                retryable = exc.status is None or exc.status >= 500
                if not retryable or attempts > 3:
                    raise
                time.sleep(min(2.0 * attempts, 10.0))
