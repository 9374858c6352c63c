"""The session's calls back to the orchestrator, and its repository-token cache.

Every body is redacted before it leaves (only the nonce a request must carry passes through);
the tokens the orchestrator hands out are learned by the redactor the moment they arrive.

Every call rides out a deploy of the orchestrator (its workers restarting: no answer, or a
gateway's 502, 503 or 504, for tens of seconds), each as its :class:`Patience` says and through
one loop (:meth:`Orchestrator._call`), waiting at least what a ``Retry-After`` asked for: the
calls the run needs (a repository token, the planning context) and the result are tried for
:data:`RESULT_PATIENCE` seconds, a progress report (a status event, a step) for
:data:`REPORT_PATIENCE`. The calls the run needs never wait past the main part of the session's
budget, and a stop of the session ends their waiting. Progress reports are best effort and spend
the session's time sparingly: their tries never run past the main part of its budget, on the
kept-back time each gets one short try, and once the orchestrator has been found unreachable the
next ones are not sent for :data:`REPORT_PAUSE` seconds, but for a report saying the run failed,
which gets one short try (a call the run needs that gave up fails the run, and the orchestrator
may be back by then). The result keeps its patience whatever the budget and whatever the reports
met.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from ..errors import ProviderError
from ..http import HttpClient, media_type
from .redact import Redactor, map_strings
from .token_cache import RepoToken

log = logging.getLogger(__name__)

#: a gateway's answers saying the orchestrator behind it could not be reached (a proxy's 502, a
#: load balancer's 503 or 504): like no answer at all
UNREACHABLE_STATUSES = frozenset({502, 503, 504})
#: seconds progress reports are not sent after the orchestrator was found unreachable; the first
#: one after that gets a single try, and any answer from the orchestrator ends the pause
REPORT_PAUSE = 30.0
#: the longest try of a progress report made on the kept-back time (after a stop, or once the
#: main part of the budget is spent), and of one made once the whole budget is spent
RESERVE_REPORT_TIMEOUT = 5.0
LATE_REPORT_TIMEOUT = 2.0
#: seconds the result is tried for while the orchestrator cannot be reached or answers 429 or a 5xx
#: (a deploy): no try starts later than this after the first. It must not be lost, and the session
#: has nothing else left to do. The calls the run needs are tried as long while it cannot be
#: reached: the session has nothing to do without them
RESULT_PATIENCE = 60.0
#: the same for a progress report, a third as long: the run waits for it
REPORT_PATIENCE = RESULT_PATIENCE / 3
#: the tries of a call the orchestrator itself refused with 429 or a 5xx of its own (no deploy: a
#: bug, its database, GitHub failing it), but for the result's, which keep its patience
REFUSED_TRIES = 3
#: the waits before the next tries of a progress report or a call the run needs (0.5, 1, 2, 4,
#: then 5 s), and of the result (2, 4, 6, 8, then 10 s); the last one repeats
REPORT_WAITS = (0.5, 1.0, 2.0, 4.0, 5.0)
RESULT_WAITS = (2.0, 4.0, 6.0, 8.0, 10.0)
#: the longest wait a ``Retry-After`` gets
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Patience:
    """How long, and how, a call to the orchestrator is tried again.

    While the orchestrator cannot be reached (no answer, a gateway's 502, 503 or 504: a deploy),
    for ``seconds``: no try starts later than that after the first. On its own 429 or 5xx,
    ``refused_tries`` times at most (``None``: as while it cannot be reached). Any other answer (a
    4xx: a refusal) is final.

    :param waits: the waits before the next tries, the last one repeated; a longer ``Retry-After``
        is waited instead, :data:`MAX_RETRY_AFTER` at most.
    :param last_at_end: a wait that would run past ``seconds`` is cut so that the last try is at
        their end; without it no try is made then.
    :param budget: no try past the main part of the session's budget, none after a stop, and a
        stop ends a wait at once.
    """

    seconds: float
    waits: tuple[float, ...] = REPORT_WAITS
    refused_tries: int | None = REFUSED_TRIES
    last_at_end: bool = False
    budget: bool = True


def unanswered(error: ProviderError) -> bool:
    """Whether ``error`` says the orchestrator could not be reached (no answer, a gateway's 502,
    503 or 504) rather than that it answered."""
    return error.status is None or error.status in UNREACHABLE_STATUSES


#: the largest body the session sends (its JSON, as requests encodes it): the orchestrator refuses a
#: body over 2 MiB, and one of its own size limit, as not JSON (``invalid_body``), whatever it holds
MAX_BODY_BYTES = 1_000_000
#: what a text cut to fit a body ends with
CUT = "\n… ({} characters cut)"
#: what no body the orchestrator takes may hold: a NUL (PostgreSQL refuses it in text) and lone
#: surrogates (no UTF-8: the bytes of a variable that are no UTF-8 read back by Python)
_UNSENDABLE = re.compile(r"[\x00\ud800-\udfff]")


def sendable_text(text: str) -> str:
    """``text`` with what no body (nor a file written as UTF-8, nor a command line) can hold
    replaced by U+FFFD."""
    return _UNSENDABLE.sub("\ufffd", text)


def _texts(value: dict[str, Any] | list[Any]) -> Iterator[tuple[Any, Any, str]]:
    """Every text in ``value``: its container, its key (or index) there, and the text."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        if isinstance(item, str):
            yield value, key, item
        elif isinstance(item, dict | list):
            yield from _texts(item)


def sendable(body: dict[str, Any], limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """``body`` as the orchestrator takes it: a NUL or a lone surrogate in any text (an agent that
    printed a binary file) becomes U+FFFD, and the longest texts are cut, their start kept, until
    its JSON takes at most ``limit`` bytes: one refused body would lose the whole report. A number
    JSON cannot write (NaN, an infinity: an agent's cost of ``1e999``) is left out (``null``):
    the body could not be sent at all."""
    body = _finite(map_strings(body, sendable_text))
    for _ in range(64):
        excess = len(json.dumps(body)) - limit
        if excess <= 0:
            break
        leaves = list(_texts(body))
        if not leaves:
            break
        container, key, text = max(leaves, key=lambda leaf: len(leaf[2]))
        marker = len(CUT.format(len(text)))
        if len(text) <= marker:
            break  # nothing left worth cutting
        # each character takes at least a byte of the JSON: cutting ``excess`` of them is enough
        keep = max(0, len(text) - excess - marker)
        container[key] = text[:keep] + CUT.format(len(text) - keep)
    return body


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def describe_answer(resp: requests.Response) -> str:
    """``HTTP 200, text/html``: what an answer was, never its body (which may hold a token)."""
    media = media_type(resp)[:100]
    return f"HTTP {resp.status_code}, {media or 'no content type'}"


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"


def json_object(resp: requests.Response, what: str) -> dict[str, Any]:
    """The JSON object the orchestrator answered to ``what`` (``POST /api/token``); a
    :class:`ProviderError` naming its answer (status and content type) when it is something else,
    as an HTML page from a proxy in front of it is."""
    try:
        body = resp.json()
    except ValueError:
        shape = "an empty body" if not resp.content else "a body that is not JSON"
        raise ProviderError(
            f"orchestrator: {what} answered with {shape} ({describe_answer(resp)})", provider="orchestrator"
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(
            f"orchestrator: {what} answered with JSON that is {_json_kind(body)}, not an object "
            f"({describe_answer(resp)})",
            provider="orchestrator",
        )
    return body


def token_digest(token: str) -> str:
    """How a session names a token GitHub refused to ``POST /api/token`` without sending it
    (``refusedTokenSha256``): its SHA-256, hexadecimal."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


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


class Orchestrator:
    """Client of the orchestrator's session and runner endpoints.

    :param url: the orchestrator's base URL (``AIIMPL_URL``).
    :param nonce: the job's nonce (``/api/token``, ``/api/status``, ``/api/step-report``).
    :param tokens: run tokens by audience (``runner:result`` …); missing ones are ``None``.
    :param timeout: seconds one try of the result or of a call the run needs may wait for an answer.
    :param report_timeout: the same for a progress report (a status event, a step): they are best
        effort, and a slow orchestrator must not hold the run past its budget.
    :param deadline: ``time.monotonic()`` when the main part of the session's budget is spent: no
        progress report nor call the run needs tries past it, and after it each gets one short try.
    :param end: ``time.monotonic()`` when the whole budget is spent.
    :param stop: set when the runner stops the session: progress reports and the calls the run
        needs then hurry as after ``deadline``, and their waits end at once.
    :param report_patience: seconds a progress report is tried for (:data:`REPORT_PATIENCE`).
    :param result_patience: seconds the result is tried for (:data:`RESULT_PATIENCE`).
    :param needed_patience: seconds a call the run needs (a repository token, the planning
        context) is tried for while the orchestrator cannot be reached (:data:`RESULT_PATIENCE`).
    """

    def __init__(
        self,
        url: str,
        nonce: str,
        tokens: dict[str, str | None],
        redactor: Redactor,
        *,
        timeout: float = 30.0,
        report_timeout: float = 10.0,
        deadline: float | None = None,
        end: float | None = None,
        stop: threading.Event | None = None,
        report_patience: float = REPORT_PATIENCE,
        result_patience: float = RESULT_PATIENCE,
        needed_patience: float = RESULT_PATIENCE,
    ) -> None:
        # every call tries again on its own terms (see _call)
        self.http = HttpClient(url, provider="orchestrator", timeout=timeout, retries=0)
        self.report_timeout = report_timeout
        self.report_patience = report_patience
        self.result_patience = result_patience
        self.needed_patience = needed_patience
        #: the clock of the patience and of the budget (``time.monotonic``); the result's waits
        #: are ``self.http.sleep``, the others ``self.wait``, which a stop ends
        self.clock = time.monotonic
        self.wait: Callable[[float], object] = self._wait
        self.deadline = deadline
        self.end = end
        self.stop = stop
        #: ``time.monotonic()`` when the orchestrator was last found unreachable, until it answers
        self.unreachable_at: float | None = None
        #: ``unreachable_at`` as a report saying the run failed left it: that pause holds back the
        #: next such report too
        self.final_unreachable_at: float | None = None
        #: ``time.monotonic()`` until which progress reports are held back: a report given up on a
        #: 429 (a proxy's rate limit) waits no longer than that, and nor do the next ones
        self.rate_limited_until: float | None = None
        self.nonce = nonce
        self.tokens = tokens
        self.redactor = redactor

    def _bearer(self, audience: str) -> dict[str, str]:
        token = self.tokens.get(audience)
        return {"Authorization": f"Bearer {token}"} if token else {}

    # -- trying again -------------------------------------------------------------------------

    def _hurried(self, at: float) -> bool:
        """Whether the session is on its kept-back time at ``at``: stopped, or past ``deadline``."""
        return (self.stop is not None and self.stop.is_set()) or (
            self.deadline is not None and at >= self.deadline
        )

    def _wait(self, seconds: float) -> None:
        """Wait ``seconds``; a stop of the session ends the wait at once."""
        if self.stop is None:
            self.http.sleep(seconds)
        else:
            self.stop.wait(seconds)

    def _call(
        self, what: str, send: Callable[[], requests.Response], patience: Patience
    ) -> requests.Response:
        """``send()``'s answer, tried again as ``patience`` says; the last failure raised once it
        is given up (a :class:`ProviderError`).

        Whether the orchestrator was found unreachable is kept in :attr:`unreachable_at`; the
        first wait is logged, with what failed (never an answer's body).
        """
        give_up_at = self.clock() + patience.seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = send()
            except ProviderError as exc:
                error = exc
            else:
                self.unreachable_at = None
                return resp
            own = error.status is not None and (error.status == 429 or error.status >= 500)
            again = unanswered(error) or (
                own and (patience.refused_tries is None or attempt < patience.refused_tries)
            )
            now = self.clock()
            left = give_up_at - now
            scheduled = patience.waits[min(attempt, len(patience.waits)) - 1]
            wait = max(scheduled, min(error.retry_after or 0.0, MAX_RETRY_AFTER))
            if patience.last_at_end:
                wait = min(wait, left)
            if not again or left <= 0 or now + wait > give_up_at or (
                patience.budget and self._hurried(now + wait)
            ):
                break
            if attempt == 1:
                failed = "no answer" if error.status is None else f"HTTP {error.status}"
                log.warning("%s: %s from the orchestrator, trying again for up to %.0fs", what, failed, left)
            if patience.budget:
                self.wait(wait)
                if self._hurried(self.clock()):
                    break  # stopped meanwhile
            else:
                self.http.sleep(wait)
        self.unreachable_at = self.clock() if unanswered(error) else None
        raise error

    # -- what the run needs -------------------------------------------------------------------

    def _needed(self, what: str, send: Callable[[], requests.Response]) -> requests.Response:
        """A call the run cannot do without: it rides out an outage for ``needed_patience``
        seconds, the last try at their end, but not past the budget's main part nor a stop; the
        orchestrator's own 429 or 5xx gets :data:`REFUSED_TRIES` tries."""
        return self._call(what, send, Patience(self.needed_patience, last_at_end=True))

    def repository_token(self, owner: str, refused: str | None = None) -> RepoToken:
        """``POST /api/token``: a fresh installation token for the job's repository.

        :param refused: a token GitHub refused (revoked before its expiry), named by its SHA-256
            for the orchestrator to mint another rather than hand back the one it has cached.
        """
        what = "POST /api/token"
        # minting is safe to repeat: a proxy's 502 or a dropped answer is tried again like a read
        body = {"nonce": self.nonce, "owner": owner}
        if refused:
            body["refusedTokenSha256"] = token_digest(refused)
        resp = self._needed(what, lambda: self.http.post("/api/token", json=body))
        answer = json_object(resp, what)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise ProviderError(
                f"orchestrator: {what} answered without a token ({describe_answer(resp)})",
                provider="orchestrator",
            )
        self.redactor.add(token)
        return RepoToken(token, parse_expiry(answer.get("expiresAt")))

    def planning_context(self) -> dict[str, Any]:
        """``GET /runner/planning-context``: an object with the ``issue`` (an object whose key,
        title, description and url are text when present); comments that are not objects with a
        text body are left out."""
        what = "GET /runner/planning-context"
        resp = self._needed(what, lambda: self.http.get(
            "/runner/planning-context", headers=self._bearer("runner:planning-context")))
        body = json_object(resp, what)
        issue = body.get("issue")
        if not isinstance(issue, dict):
            raise ProviderError(
                f"orchestrator: {what} answered without the issue ({describe_answer(resp)})",
                provider="orchestrator",
            )
        wrong = [k for k in ("key", "title", "description", "url") if issue.get(k) is not None
                 and not isinstance(issue[k], str)]
        if wrong:
            raise ProviderError(
                f"orchestrator: {what} answered an issue whose {', '.join(wrong)} "
                f"{'is' if len(wrong) == 1 else 'are'} not text ({describe_answer(resp)})",
                provider="orchestrator",
            )
        comments = issue.get("comments")
        issue["comments"] = [
            c for c in (comments if isinstance(comments, list) else [])
            if isinstance(c, dict) and isinstance(c.get("body"), str)
        ]
        return body

    # -- progress reports (best effort) -------------------------------------------------------

    def _try_timeout(self, now: float) -> float:
        """Seconds the next try of a report may wait: up to the budget's main part (at least a
        second), or a short try on the kept-back time."""
        if not self._hurried(now):
            left = self.deadline - now if self.deadline is not None else self.report_timeout
            return max(1.0, min(self.report_timeout, left))
        left = self.end - now if self.end is not None else RESERVE_REPORT_TIMEOUT
        return min(self.report_timeout, RESERVE_REPORT_TIMEOUT, max(LATE_REPORT_TIMEOUT, left))

    def _report(
        self, what: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None,
        *, final: bool = False,
    ) -> bool:
        """POST a progress report; whether it was accepted. A failure is logged, never raised.

        Tries again while the orchestrator is unreachable (no answer, a gateway's 502, 503 or
        504: a deploy) for ``report_patience`` seconds, on its own 429 or 5xx :data:`REFUSED_TRIES`
        times at most, but never into the kept-back part of the budget; there, and for the first
        report after :data:`REPORT_PAUSE`, it has one try. A report that finds the orchestrator
        unreachable holds back the ones of the next ``REPORT_PAUSE`` seconds: each would pay its
        full timeout and retries again for nothing.

        :param final: the report says the run failed (its failed step, ``session_failed``): sent
            just before the result, it is the last word of the orchestrator's step and comments.
            Within the pause it gets one try of :data:`RESERVE_REPORT_TIMEOUT` seconds at most
            (the pause may have begun with the call the run needed giving up, at the very end of
            an outage); one that finds the orchestrator still unreachable holds the next such
            report back as any other.
        """
        now = self.clock()
        if not final and self.rate_limited_until is not None and now < self.rate_limited_until:
            # sent now, it would meet the same 429 and wait it out again, report after report
            log.warning("%s was not sent: the orchestrator asked to wait %.0fs more (HTTP 429)", what,
                        self.rate_limited_until - now)
            return False
        paused = self.unreachable_at is not None and now - self.unreachable_at < REPORT_PAUSE
        if paused and not (final and self.final_unreachable_at != self.unreachable_at):
            log.warning("%s was not sent: the orchestrator was unreachable %.0fs ago", what,
                        now - self.unreachable_at)
            return False
        single = self.unreachable_at is not None or self._hurried(now)
        patience = Patience(0.0 if single else self.report_patience)

        def send() -> requests.Response:
            timeout = self._try_timeout(self.clock())
            if paused:
                timeout = min(timeout, RESERVE_REPORT_TIMEOUT)
            return self.http.post(path, json=body, headers=headers, timeout=timeout)

        try:
            self._call(what, send, patience)
        except ProviderError as exc:
            if final:
                self.final_unreachable_at = self.unreachable_at
            if exc.status == 429:
                asked = min(exc.retry_after or REPORT_PAUSE, MAX_RETRY_AFTER)
                self.rate_limited_until = self.clock() + asked
            log.warning("%s was not accepted: %s", what, self.redactor.text(exc.message))
            return False
        return True

    def status(self, event: str, *, final: bool = False, **fields: Any) -> bool:
        """``POST /api/status``; a failure is logged, never raised (the run goes on).

        :param final: the event says the run failed (see :meth:`_report`).
        """
        body = {"nonce": self.nonce, "event": event, **{k: v for k, v in fields.items() if v is not None}}
        # the orchestrator de-duplicates an event per job, so a repeat never posts twice
        clean = sendable(self.redactor.data(body, keep=("nonce",)))
        return self._report(f"status event {event}", "/api/status", clean, final=final)

    def step(self, step: dict[str, Any], *, final: bool = False) -> bool:
        """Report a pipeline step (``/runner/progress``, or ``/api/step-report`` without a progress token).

        :param final: the step says the run failed (see :meth:`_report`).
        """
        clean = sendable(self.redactor.data(step))
        what = f"step {step.get('id')}"
        if self.tokens.get("runner:progress"):
            return self._report(what, "/runner/progress", {"step": clean}, self._bearer("runner:progress"),
                                final=final)
        return self._report(what, "/api/step-report", {"nonce": self.nonce, "step": clean}, final=final)

    # -- the result -----------------------------------------------------------------------------

    def result(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /runner/result`` (single-use token): the orchestrator's answer.

        Tried again on no answer, a 5xx or a 429 (a deploy of the orchestrator, a proxy's rate
        limit in front of it: nothing was done) for ``result_patience`` seconds, the last try at
        their end; whatever the budget, and whatever the progress reports met. A retry after a lost
        answer may meet ``409 already_consumed``: the first attempt was recorded, so that counts
        as delivered. So does any 2xx answer, whatever its body (an HTML page from a proxy in front
        of the orchestrator): its ``status`` then says so.
        """
        clean = sendable(self.redactor.data(body))
        tries: list[float] = []

        def send() -> requests.Response:
            tries.append(self.clock())
            return self.http.post("/runner/result", json=clean, headers=self._bearer("runner:result"))

        patience = Patience(self.result_patience, RESULT_WAITS, refused_tries=None, last_at_end=True,
                            budget=False)
        try:
            resp = self._call("the result", send, patience)
        except ProviderError as exc:
            if exc.status == 409 and len(tries) > 1:
                return {"status": "already recorded"}
            raise
        if not resp.content:
            return {}
        try:
            return json_object(resp, "POST /runner/result")
        except ProviderError:
            return {"status": f"delivered (the answer, {describe_answer(resp)}, is not a JSON object)"}
