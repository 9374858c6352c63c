"""The one helper for outbound HTTP.

Every remote call of the core and its plugins goes through :class:`HttpClient`: a timeout on every
request, retries with backoff on 429 and 5xx honouring ``Retry-After`` (and GitHub's
``x-ratelimit-reset``), a ``User-Agent`` naming the caller, and remote failures mapped to
:class:`~aiimpl_core.errors.ProviderError` in one place.
"""
from __future__ import annotations

import html
import ipaddress
import logging
import os
import re
import ssl
import time
import traceback
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import requests
import requests.utils
import urllib3

from . import __version__
from .errors import ProviderError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: seconds waited after a rate limit's refusal that says no time to come back
RATE_LIMIT_WAIT = 60.0
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or rate-limit reset headers."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    now = time.time() if now is None else now
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                return None
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - now)
        except ValueError:
            return None
    return None


class HttpClient:
    """A ``requests.Session`` with a base URL, default headers, timeouts and retries.

    :param base_url: prefix of every relative path.
    :param provider: id used in errors and the User-Agent (``linear``, ``github`` …).
    :param timeout: seconds for connect and read.
    :param retries: extra attempts on 429/5xx/connection errors (only for idempotent methods,
        unless ``retry_unsafe`` is true or the status is 429, which means nothing was done).
    :param max_wait: the longest ``Retry-After`` we sleep for; longer waits raise at once with
        ``retry_after`` set so the caller can postpone the whole connection.
    """

    def __init__(
        self,
        base_url: str = "",
        *,
        provider: str = "http",
        headers: Mapping[str, str] | None = None,
        timeout: float = 15.0,
        retries: int = 2,
        backoff: float = 0.5,
        max_wait: float = 10.0,
        user_agent: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.provider = provider
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_wait = max_wait
        self.sleep = sleep
        self.session = session or requests.Session()
        if session is None:
            # The environment's proxies and CA bundle are read once per host here, not by requests
            # on every call (it reads the whole environment twice per request: a pod may carry
            # hundreds of variables). Credentials come from the configuration only: a ~/.netrc
            # is not read.
            self.session.trust_env = False
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            if bundle:
                self.session.verify = bundle
        self._proxies: dict[str, dict[str, str]] = {}
        self.session.headers["User-Agent"] = user_agent or f"aiimpl/{__version__} ({provider})"
        if headers:
            self.session.headers.update(headers)
        self.calls = 0  # remote calls made (benchmarks and tests read it)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _proxies_for(self, url: str) -> dict[str, str]:
        """The environment's proxies for ``url``'s host (``HTTPS_PROXY``, ``NO_PROXY`` …), as
        requests would apply them, read the first time the host is called."""
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        proxies = self._proxies.get(key)
        if proxies is None:
            proxies = self._proxies[key] = requests.utils.get_environ_proxies(url)
        return proxies

    def request(
        self,
        method: str,
        path: str,
        *,
        retry_unsafe: bool = False,
        expected: tuple[int, ...] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send a request; return the response for 2xx (or ``expected``) statuses, raise otherwise."""
        method = method.upper()
        url = self.url(path)
        if not path.startswith(("http://", "https://")) and any(
            _dot_segment(segment) for segment in urlsplit(path).path.split("/")
        ):
            # resolved by urllib3 before it is sent, it would reach another resource: an id put in
            # the path without path_segment()
            raise ProviderError(
                f"{self.provider}: {method} {path} was not sent: a '.' or '..' segment of its path would "
                "name another resource", provider=self.provider,
            )
        kwargs.setdefault("timeout", self.timeout)
        if not self.session.trust_env and "proxies" not in kwargs:
            kwargs["proxies"] = self._proxies_for(url)
        attempt = 0
        while True:
            attempt += 1
            self.calls += 1
            try:
                resp = self.session.request(method, url, **kwargs)
            except requests.exceptions.InvalidHeader:
                # a header's value with a line break or spaces around it: a token or key setting
                # pasted with its newline, say (the value itself is never said)
                raise ProviderError(
                    f"{self.provider}: {method} {path} was not sent: a header value is not valid (a "
                    "line break or spaces around it: check the credential settings for a trailing "
                    "newline)", provider=self.provider,
                ) from None
            except UnicodeEncodeError as exc:
                if not _in_putheader(exc):
                    raise
                # a header's value with a character no header carries (HTTP's are Latin-1): a token
                # pasted with a typographic quote, say (http.client refuses it before anything is sent)
                raise ProviderError(
                    f"{self.provider}: {method} {path} was not sent: a header value is not valid (a "
                    "character a header cannot carry: check the credential settings for a character "
                    "pasted in with the value)", provider=self.provider,
                ) from None
            except requests.exceptions.InvalidJSONError:
                # a body JSON cannot write (NaN, an infinity): nothing was sent, and sending it
                # again would fail the same way (it is no outage to wait out)
                raise ProviderError(
                    f"{self.provider}: {method} {path} was not sent: its body is not valid JSON (a "
                    "number JSON cannot write, such as NaN)", provider=self.provider,
                ) from None
            except requests.RequestException as exc:
                if attempt <= self.retries and (method in IDEMPOTENT or retry_unsafe):
                    self.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise ProviderError(
                    f"{self.provider}: {method} {path} failed: {unanswered(exc)}", provider=self.provider
                ) from None
            ok = resp.status_code in expected if expected else resp.ok
            if ok:
                return resp
            wait = parse_retry_after(resp.headers)
            if wait is None and resp.status_code == 403 and "rate limit" in remote_message(resp).lower():
                # GitHub's secondary rate limit may say no time to come back: "wait for at least one
                # minute", its documentation asks (a 403 without a wait was a refusal for good)
                wait = RATE_LIMIT_WAIT
            retryable = resp.status_code in RETRY_STATUSES or (
                resp.status_code == 403 and wait is not None  # GitHub's secondary rate limit
            )
            # a rate limit's refusal (a 429, GitHub's 403 saying when to come back) was not carried
            # out: sending it again does it once, whatever the method
            limited = resp.status_code == 429 or (resp.status_code == 403 and wait is not None)
            may_repeat = method in IDEMPOTENT or retry_unsafe or limited
            if retryable and may_repeat and attempt <= self.retries:
                delay = wait if wait is not None else self.backoff * 2 ** (attempt - 1)
                if delay <= self.max_wait:
                    log.info("%s: %s %s -> %s, retrying in %.1fs", self.provider, method, path,
                             resp.status_code, delay)
                    self.sleep(delay)
                    continue
            raise ProviderError(
                f"{self.provider}: {method} {path} failed with HTTP {resp.status_code}: "
                f"{remote_message(resp)}",
                provider=self.provider,
                status=resp.status_code,
                retry_after=wait,
                detail=_json_or_text(resp),
            )

    def json(self, resp: requests.Response) -> Any:
        """The JSON of an answer :meth:`request` returned.

        A body that is not JSON (a proxy's or gateway's page answered with a 2xx status, an answer
        cut short) is the remote's failure: a :class:`~aiimpl_core.errors.ProviderError` naming the
        request and what came back, never a bare ``ValueError``. It has no ``status``: like a
        timeout, the request may or may not have been done, and waiting it out is worth it.
        """
        try:
            return resp.json()
        except ValueError:
            method = resp.request.method if resp.request is not None else "?"
            shape = "an empty body" if not resp.content else "a body that is not JSON"
            raise ProviderError(
                f"{self.provider}: {method} {urlsplit(resp.url).path} answered HTTP {resp.status_code} "
                f"with {shape} ({remote_message(resp)})",
                provider=self.provider,
            ) from None

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)


def unanswered(exc: requests.RequestException) -> str:
    """What came of a request that got no answer, in words: the exception's class, and what it
    means to an operator. Never its message, which quotes the URL (a query may hold a token) and
    the address behind it."""
    if isinstance(exc, (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidURL)):
        words = "not a valid http:// or https:// URL: check the setting that gives the address"
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        words = "no connection within the time limit"
    elif isinstance(exc, requests.exceptions.ReadTimeout):
        words = "no answer within the time limit"
    elif isinstance(exc, requests.exceptions.SSLError):
        words = "the TLS connection failed: a certificate not trusted, or no TLS server at that address"
    elif isinstance(exc, requests.exceptions.ProxyError):
        words = "the proxy failed the connection"
    elif isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                          requests.exceptions.ContentDecodingError)):
        words = "the answer was cut short or garbled"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        # (urllib3 1.26, which requests still takes, has no NameResolutionError of its own)
        if isinstance(reason, getattr(urllib3.exceptions, "NameResolutionError", ())):
            words = "the host name does not resolve"
        elif isinstance(reason, urllib3.exceptions.NewConnectionError):
            refused = "refused" in str(reason).lower()
            words = "the connection was refused" if refused else "no connection could be made"
        else:
            words = "the connection was closed before an answer came"
    else:
        return type(exc).__name__
    return f"{type(exc).__name__} ({words})"


#: failures of a request that never reached the server (``requests`` raises these before sending); an
#: ``SSLError`` is not one of them: it may come from the handshake or from the stream after it
_NOT_SENT = (
    requests.exceptions.ConnectTimeout,
    requests.exceptions.InvalidHeader,
    requests.exceptions.ProxyError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is one worth waiting out: no answer (a timeout, a connection refused), a
    ``429`` or ``5xx``, or an answer saying when to come back (``Retry-After``)."""
    if not isinstance(exc, ProviderError):
        return False
    return exc.status is None or exc.status == 429 or exc.status >= 500 or exc.retry_after is not None


def may_have_been_done(exc: ProviderError) -> bool:
    """Whether a request :class:`HttpClient` raised ``exc`` for may have been carried out all the
    same: a ``5xx``, or no answer to a request that went out (a read timeout, a connection dropped
    after sending, a TLS failure after the handshake such as the server's stream garbled while the
    answer was read). A refusal (``4xx``) did nothing, nor did a request never sent (no connection
    could be made: refused, a name that does not resolve, a connect timeout, a proxy failure, a TLS
    handshake failure such as a certificate not trusted; a header value that is not valid). A TLS
    failure not known to come from the handshake counts as maybe done. A backend whose dispatch
    may have been done raises :class:`~aiimpl_core.errors.DispatchUnanswered` rather than send it
    again."""
    if exc.status is not None:
        return exc.status >= 500
    cause = exc.__context__  # what the client caught (it raises ``from None``)
    if not isinstance(cause, requests.RequestException) or isinstance(cause, _NOT_SENT):
        return False
    if isinstance(cause, requests.exceptions.SSLError):
        return not _failed_in_tls_handshake(cause)
    reason = getattr(cause.args[0], "reason", None) if cause.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _failed_in_tls_handshake(exc: requests.exceptions.SSLError) -> bool:
    """Whether the ``ssl`` module's error behind ``exc`` was raised by the TLS handshake, which
    comes before any byte of the request is sent.

    Its kind does not tell: a server that does not speak TLS answering the handshake and a server
    garbling its stream after the request went out both give ``WRONG_VERSION_NUMBER``. Where it was
    raised does: its traceback passes through ``ssl``'s ``do_handshake`` (of the socket, or of the
    memory BIO urllib3 uses through an HTTPS proxy) only while the connection was being opened.
    urllib3 wraps it as ``args[0]`` of its own ``SSLError``, which is the ``reason`` of a
    ``MaxRetryError`` up to the answer's head, or ``exc``'s ``args[0]`` once the body was being
    read. Any other shape leaves the phase unknown: not a handshake."""
    failure = exc.args[0] if exc.args else None
    failure = getattr(failure, "reason", failure)  # a MaxRetryError: what urllib3 gave up on
    tls = failure.args[0] if isinstance(failure, urllib3.exceptions.SSLError) and failure.args else None
    if not isinstance(tls, ssl.SSLError):
        return False
    frame = tls.__traceback__
    while frame is not None:
        code, module = frame.tb_frame.f_code, frame.tb_frame.f_globals.get("__name__")
        if code.co_name == "do_handshake" and module == "ssl":
            return True
        frame = frame.tb_next
    return False


def http_url_problem(value: str) -> str | None:
    """What is wrong with ``value`` as the URL of a service (``must be an http:// or https:// URL
    with a host, not '…'``, credentials before the host never quoted), or ``None``; the core's
    settings and, through :func:`url_setting_problem`, the plugins' are checked with it."""
    url = value.strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and (parts.port or 1) > 0
    except ValueError:  # an unbalanced IPv6 bracket, a port that is not a number or out of range
        ok = False
    if ok:
        return None
    userinfo, at, rest = url.rpartition("@")
    scheme = userinfo.split("://", 1)[0] + "://" if "://" in userinfo else ""
    shown = f"{scheme}***@{rest}" if at else url
    return f"must be an http:// or https:// URL with a host, not {shown!r}"


def url_setting_problem(config: Mapping[str, Any], name: str) -> str | None:
    """A plugin's ``settings_problem`` for its URL setting ``name`` in ``config``: ``<name> must be
    an http:// or https:// URL …`` (:func:`http_url_problem`), or ``None`` when it is one, or unset
    or blank (its default applies)."""
    url = str(config.get(name) or "").strip()
    problem = http_url_problem(url) if url else None
    return f"{name} {problem}" if problem else None


#: what a value given at input may not hold to be put in a URL path as one segment: a separator (a
#: backslash is one to some servers), what ends the path, and ``%`` (an encoded form of any of them,
#: or of a dot)
_NOT_IN_A_SEGMENT = "/\\?#%"


def _in_putheader(exc: BaseException) -> bool:
    """Whether ``exc`` was raised where http.client encodes a header's value."""
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and frames[-1].name == "putheader"


def _dot_segment(value: str) -> bool:
    """Whether ``value``, percent-decoded as many times as it decodes, is ``.`` or ``..``: a segment
    that names the path itself or its parent. urllib3 resolves a literal one before the request is
    sent and decodes ``%2E`` into a dot (a server may then resolve it), so no encoding of it is safe."""
    for _ in range(8):
        if value in (".", ".."):
            return True
        decoded = unquote(value)
        if decoded == value:
            return False
        value = decoded
    return True  # still decoding: encoded more times than any id is


def path_segment_problem(value: object) -> str | None:
    """What keeps ``value``, an id given at input (a Jira field's id, a session's machine id), from
    being put in a URL path as one segment, said after the field's name (``fieldId must be an id
    that fits one segment of a URL path …``), or ``None``. Empty, ``.`` or ``..``, or holding
    ``/``, ``\\``, ``?``, ``#`` or ``%``, it would name another resource once in the path
    (``/machines/..`` is the app), or be an encoded form of one.

    A view or a settings check refuses such a value with it, naming the field; a value a remote
    answered goes through :func:`path_segment` instead."""
    text = str(value)
    if not text or _dot_segment(text) or any(c in text for c in _NOT_IN_A_SEGMENT):
        return ("must be an id that fits one segment of a URL path (not empty, '.' or '..', without '/', "
                f"'\\', '?', '#' or '%'), not {text[:100]!r}")
    return None


def path_segment(value: object, *, provider: str = "http", what: str = "id") -> str:
    """``value`` percent-encoded as one segment of a URL path: every ``/``, ``?``, ``#``, ``%`` and
    anything else not plain in a path is encoded, so it names one resource whatever it holds.

    Every id a client of :class:`HttpClient` puts in a path (a machine id, an issue key, a field id,
    a repository's name) goes through it: one a remote answered or the database kept, as one an
    operator gave (which its view or settings check refused already with
    :func:`path_segment_problem`, naming the field).

    :param provider: the remote's id, which the error names (``fly``, ``jira`` …).
    :param what: what the value is, for the error (``machine id``).
    :raises ProviderError: for an empty value, ``.`` or ``..``, or an encoded form of either: no
        encoding keeps them from naming the path itself or its parent (urllib3 resolves them, and
        decodes an encoded dot), so the request is not sent.
    """
    text = str(value)
    if not text or _dot_segment(text):
        raise ProviderError(
            f"{provider}: the {what} {text[:100]!r} cannot be put in a URL path (it would name another "
            "resource): nothing was sent",
            provider=provider,
        )
    return quote(text, safe="")


def host_only_address(url: str) -> str | None:
    """The host of ``url`` when it names this machine alone (``localhost``, a loopback address such
    as ``127.0.0.1`` or ``::1``, or an unspecified one such as ``0.0.0.0``), which a runner on
    another machine (GitHub's runners, a Fly machine, a container outside the host's network)
    cannot reach; ``None`` for any other host, or a URL without one.

    A runner plugin's ``check`` uses it on ``AIIMPL_PUBLIC_URL``, the URL its sessions report to."""
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:
        return None
    if not host:
        return None
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:  # (``::ffff:127.0.0.1``)
        address = address.ipv4_mapped
    return host if address.is_loopback or address.is_unspecified else None


def _json_or_text(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text[:2000]


def remote_message(resp: requests.Response) -> str:
    """The human message of a remote error body (GitHub ``message``, Jira ``errorMessages`` …)."""
    body = _json_or_text(resp)
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errorMessage"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
        msgs = body.get("errorMessages")
        if isinstance(msgs, list) and msgs:
            return "; ".join(str(m) for m in msgs)
        errors = body.get("errors")
        if isinstance(errors, dict) and errors:
            return "; ".join(f"{k}: {v}" for k, v in errors.items())
        if isinstance(errors, list) and errors:
            first = errors[0]
            return str(first.get("message", first)) if isinstance(first, dict) else str(first)
    text = str(body).strip()
    if _is_html(resp, text):
        # a proxy's or gateway's error page: its title says what happened, its markup nothing
        title = _html_title(text)
        shown = " ".join(html.unescape(title).split())[:200] if title else ""
        return f"{shown or resp.reason or 'no message'} (an HTML page)"
    return text[:300] or resp.reason or "no message"


_TITLE_OPENS, _TITLE_CLOSES = re.compile("<title", re.IGNORECASE), re.compile("</title>", re.IGNORECASE)


def _html_title(text: str) -> str | None:
    """The text of a page's first ``<title …>…</title>``, found in one pass (a pattern tried each
    ``<title`` against the rest of the page: quadratic on a remote's page of them)."""
    opened = _TITLE_OPENS.search(text)
    start = text.find(">", opened.end()) if opened else -1
    closed = _TITLE_CLOSES.search(text, start + 1) if start >= 0 else None
    return text[start + 1 : closed.start()] if closed else None


def media_type(resp: requests.Response) -> str:
    """The answer's media type, without its parameters (``text/html`` of ``text/html; charset=utf-8``)."""
    return (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip()


def _is_html(resp: requests.Response, text: str) -> bool:
    media = media_type(resp).lower()
    if media in ("text/html", "application/xhtml+xml"):
        return True
    return text[:15].lower().startswith(("<!doctype html", "<html"))
