"""A small GraphQL client for Linear's API over the core's :class:`~aiimpl_core.http.HttpClient`.

What it adds to the core helper:

* only documents registered in :mod:`aiimpl_linear.queries` are sent (so every one of them is
  validated against Linear's schema by the test suite);
* Linear's rate limiting: HTTP 429 or a ``RATELIMITED`` GraphQL error, with the wait read from
  ``Retry-After`` or Linear's ``X-RateLimit-*-Reset`` headers (epoch milliseconds). Short waits
  are slept through; a longer one raises :class:`~aiimpl_core.errors.ProviderError` with
  ``retry_after`` so the engine postpones only this connection. A response announcing an
  exhausted budget makes the next call wait (or raise) before it is sent -- the next call of the
  same operation only, for the budget of a single query or mutation (``X-RateLimit-Endpoint-*``);
* GraphQL ``errors`` become errors naming the operation; "entity not found" becomes
  :class:`~aiimpl_core.errors.NotFound`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from aiimpl_core.errors import NotFound, ProviderError
from aiimpl_core.http import HttpClient

from .config import PROVIDER_ID
from .queries import DOCUMENTS

log = logging.getLogger(__name__)

#: Linear's budgets: requests per hour and query complexity points per hour.
BUDGETS = ("Requests", "Complexity")
#: The request budget of a single query or mutation, lower than the global one for some (Linear
#: answers it with the same ``RATELIMITED`` error, and ``X-RateLimit-Endpoint-Requests-*`` headers).
ENDPOINT_BUDGET = "Endpoint-Requests"
RATE_LIMITED_CODE = "RATELIMITED"
#: Sleep through a rate limit at most this long inside one call.
DEFAULT_MAX_WAIT = 10.0
#: Added to a reset time: it is rounded to milliseconds and our clock is not Linear's.
RESET_MARGIN = 0.25
#: seconds a rate limit that names no reset is waited out, once the call's own short tries failed
NO_RESET_WAIT = 30.0


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def rate_limit_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until Linear accepts requests again, from ``Retry-After`` or an exhausted budget."""
    retry_after = _header(headers, "Retry-After")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    waits = [wait for budget in BUDGETS if (wait := _budget_wait(headers, budget, now)) is not None]
    return max(waits) if waits else None


def latest_reset_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the latest reset of any budget the answer names, whatever it says remains:
    Linear refuses a query that costs more than is left of a budget (``X-Complexity`` above
    ``…-Remaining``), which is then not spent."""
    waits = []
    for budget in (*BUDGETS, ENDPOINT_BUDGET):
        reset = _header(headers, f"X-RateLimit-{budget}-Reset")
        try:
            if reset is not None:
                waits.append(max(0.0, float(reset) / 1000.0 - now) + RESET_MARGIN)
        except ValueError:
            continue
    return max(waits) if waits else None


def endpoint_wait(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until Linear accepts this query or mutation again, when its own budget is spent."""
    return _budget_wait(headers, ENDPOINT_BUDGET, now)


def _budget_wait(headers: Mapping[str, str], budget: str, now: float) -> float | None:
    remaining = _header(headers, f"X-RateLimit-{budget}-Remaining")
    reset = _header(headers, f"X-RateLimit-{budget}-Reset")
    if remaining is None or reset is None:
        return None
    try:
        if float(remaining) > 0:
            return None
        # Linear sends epoch milliseconds
        return max(0.0, float(reset) / 1000.0 - now) + RESET_MARGIN
    except ValueError:
        return None


class LinearClient:
    """Sends registered GraphQL operations to Linear.

    :param url: the GraphQL endpoint.
    :param authorization: the ``Authorization`` header value (a bare API key or ``Bearer <token>``).
    :param http_factory: the provider context's ``http`` (builds an :class:`HttpClient`).
    :param max_wait: the longest rate-limit wait slept through; longer ones raise.
    """

    def __init__(
        self,
        url: str,
        authorization: str,
        *,
        http_factory: Callable[..., HttpClient] = HttpClient,
        timeout: float = 15.0,
        max_wait: float = DEFAULT_MAX_WAIT,
        retries: int = 2,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.max_wait = max_wait
        self.retries = retries
        self.sleep = sleep
        self.clock = clock
        self.http = http_factory(
            url,
            provider=PROVIDER_ID,
            headers={"Authorization": authorization, "Content-Type": "application/json"},
            timeout=timeout,
            retries=retries,
            max_wait=max_wait,
            sleep=sleep,
        )
        #: epoch seconds before which Linear said it will refuse us (an exhausted budget)
        self.not_before = 0.0
        #: the same for one operation, whose own budget (not the global one) is spent
        self.operation_not_before: dict[str, float] = {}

    @property
    def calls(self) -> int:
        """Remote calls made so far (benchmarks and tests read it)."""
        return self.http.calls

    def execute(self, operation: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run a registered operation; return its ``data``.

        :raises NotFound: when Linear reports the entity does not exist.
        :raises ProviderError: on any other failure, naming the operation; ``retry_after`` is set
            when Linear rate-limited us for longer than ``max_wait``.
        """
        document = DOCUMENTS.get(operation)
        if document is None:
            raise ProviderError(f"Linear: unknown operation {operation}", provider=PROVIDER_ID)
        body = {"query": document, "variables": dict(variables or {}), "operationName": operation}
        is_query = document.lstrip().startswith("query")
        attempt = 0
        while True:
            attempt += 1
            self._wait_for_budget(operation)
            try:
                # 400 and 429 carry GraphQL errors we read ourselves; 5xx and connection errors
                # are retried by the core helper, for queries only (a mutation may have happened).
                resp = self.http.post(self.url, json=body, expected=(200, 400, 429), retry_unsafe=is_query)
            except ProviderError as exc:
                raise ProviderError(
                    f"Linear {operation} failed: {_strip_prefix(exc.message)}",
                    provider=PROVIDER_ID,
                    status=exc.status,
                    retry_after=exc.retry_after,
                    detail=exc.detail,
                ) from None
            now = self.clock()
            wait = rate_limit_wait(resp.headers, now)
            own = endpoint_wait(resp.headers, now)
            payload = _json(resp)
            errors = payload.get("errors") if isinstance(payload, dict) else None
            limited = resp.status_code == 429 or _has_code(errors, RATE_LIMITED_CODE)
            if limited:
                waits = [w for w in (wait, own) if w is not None]
                # no budget spent: the latest reset any names, else a guess, short inside the
                # call and at least NO_RESET_WAIT for the poller's back-off (it was 3 s: every cycle
                # sent three more refused requests)
                fallback = latest_reset_wait(resp.headers, now)
                delay = max(waits) if waits else (fallback if fallback is not None else 1.0 * attempt)
                if delay <= self.max_wait and attempt <= self.retries:
                    log.info("Linear %s rate-limited, retrying in %.1fs", operation, delay)
                    self.sleep(delay)
                    continue
                if not waits and fallback is None:
                    delay = max(delay, NO_RESET_WAIT)
                if wait is None and own is not None:
                    self._hold(operation, now + delay)  # only this operation's budget is spent
                else:
                    self.not_before = max(self.not_before, now + delay)
                raise ProviderError(
                    f"Linear {operation} failed: rate limited for {delay:.0f}s",
                    provider=PROVIDER_ID,
                    status=resp.status_code,
                    retry_after=delay,
                )
            if wait is not None and wait > 0:
                # this call went through but spent the last of a budget: the next one must wait
                self.not_before = max(self.not_before, now + wait)
            if own is not None and own > 0:
                self._hold(operation, now + own)
            if errors:
                raise _graphql_error(operation, errors, resp.status_code)
            if (
                resp.status_code != 200
                or not isinstance(payload, dict)
                or not isinstance(payload.get("data"), dict)
            ):
                raise ProviderError(
                    f"Linear {operation} failed: unexpected HTTP {resp.status_code} response",
                    provider=PROVIDER_ID,
                    status=resp.status_code,
                )
            return payload["data"]

    def _hold(self, operation: str, until: float) -> None:
        self.operation_not_before[operation] = max(self.operation_not_before.get(operation, 0.0), until)

    def _wait_for_budget(self, operation: str) -> None:
        delay = max(self.not_before, self.operation_not_before.get(operation, 0.0)) - self.clock()
        if delay <= 0:
            return
        if delay > self.max_wait:
            raise ProviderError(
                f"Linear {operation} not sent: rate limit resets in {delay:.0f}s",
                provider=PROVIDER_ID,
                status=429,
                retry_after=delay,
            )
        self.sleep(delay)


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _has_code(errors: Any, code: str) -> bool:
    if not isinstance(errors, list):
        return False
    return any(
        isinstance(e, dict) and isinstance(e.get("extensions"), dict) and e["extensions"].get("code") == code
        for e in errors
    )


def _strip_prefix(message: str) -> str:
    # the core helper says "linear: POST <url> failed with HTTP 401: ..." or, when no answer came,
    # "linear: POST <url> failed: ConnectionError (…)"; keep the informative part
    for marker in (" failed ", " failed: "):
        if marker in message:
            return message.split(marker, 1)[1]
    return message


def _graphql_error(operation: str, errors: list[Any], status: int) -> Exception:
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    extensions = first.get("extensions") if isinstance(first.get("extensions"), dict) else {}
    message = str(extensions.get("userPresentableMessage") or first.get("message") or "unknown error")
    raw = str(first.get("message") or "")
    code = extensions.get("code")
    if raw.startswith("Entity not found") or extensions.get("type") == "entity not found":
        return NotFound(f"Linear {operation}: {message}")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    suffix = f" [{code}]" if code else ""
    return ProviderError(
        f"Linear {operation} failed: {message}{suffix}{more}",
        provider=PROVIDER_ID,
        # Linear answers a refused key with HTTP 400: reported as what it is, so a caller never
        # takes it for a request that can never succeed (credentials can be fixed)
        status=_AUTH_STATUS.get(str(code), status),
        detail=errors,
    )


#: GraphQL error codes that mean the credentials, not the request, were refused
_AUTH_STATUS = {"AUTHENTICATION_ERROR": 401, "UNAUTHENTICATED": 401, "FORBIDDEN": 403}
