"""A fake HTTP service for tests, checked against the real service's OpenAPI description.

:class:`OpenAPIFakeServer` serves a Flask app (the fake's behaviour) on ``127.0.0.1`` on a free
port in a background thread. Every request that reaches it and every response the fake answers
are validated with openapi-core against the official description, so a test catches both a
client that sends what the real service would refuse and a fake that answers what the real
service never would. Each exchange is recorded for assertions::

    app = flask.Flask("fake")
    ...  # routes shaped like the real service
    with OpenAPIFakeServer(app, "/path/to/openapi.json") as server:
        requests.get(server.url + "/things")
        server.assert_clean()  # no request or response broke the description

Parsed descriptions are cached per file for the whole test session: a large one (Jira's is
2.4 MB, GitHub's full one 13 MB) is read once.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import flask
from werkzeug.wrappers import Request, Response

from .serving import ServerThread, serve_wsgi

#: a fake sets this response header on a real-world answer its description does not document
#: (for example an error status the description omits); the server skips validating that
#: response, strips the header and marks the record ``undocumented``. The fake is then
#: responsible for checking the body's shape itself.
UNDOCUMENTED_HEADER = "X-Fake-Undocumented"

_SPEC_CACHE: dict[tuple[str, str], LoadedSpec] = {}
_SPEC_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedSpec:
    """A parsed description: the openapi-core object, the document, and its multi-segment paths."""

    openapi: Any
    document: dict[str, Any]
    multi_segment: list[tuple[re.Pattern[str], str]]


def load_openapi(spec_path: str, server_base: str = "") -> Any:
    """The openapi-core ``OpenAPI`` object of a description file (see :func:`load_spec`)."""
    return load_spec(spec_path, server_base).openapi


def load_spec(spec_path: str, server_base: str = "") -> LoadedSpec:
    """A description file parsed for validation, cached per (path, base).

    The description's ``servers`` are replaced by the relative ``server_base`` (``""`` means the
    API's paths start at the root) so requests to ``http://127.0.0.1:<port>`` match. The
    description itself is not re-validated: some official files carry harmless quirks that strict
    spec validators reject (Jira's, for one) and they are checked elsewhere.
    """
    from openapi_core import Config, OpenAPI

    key = (spec_path, server_base)
    with _SPEC_LOCK:
        cached = _SPEC_CACHE.get(key)
        if cached is not None:
            return cached
        with open(spec_path, encoding="utf-8") as fh:
            if spec_path.endswith((".yaml", ".yml")):
                import yaml

                data = yaml.safe_load(fh)
            else:
                data = json.load(fh)
        # shallow copy: only the top-level ``servers`` differs from the official text
        data = dict(data)
        data["servers"] = [{"url": server_base or "/"}]
        config = Config(spec_validator_cls=None, security_provider_factory=_security_providers())
        api = OpenAPI.from_dict(data, config=config)
        loaded = LoadedSpec(api, data, _multi_segment_patterns(data, server_base))
        _SPEC_CACHE[key] = loaded
        return loaded


def _security_providers() -> Any:
    """openapi-core's security checks, with OAuth 2.0 and OpenID Connect checked too.

    openapi-core checks ``apiKey`` and ``http`` schemes and lets the other two through with a
    warning. Their access tokens travel as ``Authorization: Bearer …`` (RFC 6750), so a request
    whose only matching scheme is one of them must carry a bearer token; which token the fake
    accepts is the fake's own check.
    """
    from openapi_core.security.exceptions import SecurityProviderError
    from openapi_core.security.factories import SecurityProviderFactory
    from openapi_core.security.providers import BaseProvider

    class BearerToken(BaseProvider):
        def __call__(self, parameters: Any) -> Any:
            if "Authorization" not in parameters.header:
                raise SecurityProviderError("Missing authorization header.")
            kind, _, token = parameters.header["Authorization"].partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise SecurityProviderError("Not a bearer token.")
            return token

    class Providers(SecurityProviderFactory):
        PROVIDERS = {**SecurityProviderFactory.PROVIDERS, "oauth2": BearerToken, "openIdConnect": BearerToken}

    return Providers()


def _multi_segment_patterns(data: dict[str, Any], server_base: str) -> list[tuple[re.Pattern[str], str]]:
    """Regexes for paths whose parameters may span several segments (GitHub's ``x-multi-segment``).

    Clients send such values with raw slashes (``contents/docs/a.md``), as the real service
    accepts; openapi-core matches one segment per parameter, so the validator sees the value with
    its slashes escaped.
    """
    out: list[tuple[re.Pattern[str], str]] = []
    for template, item in (data.get("paths") or {}).items():
        params = list(item.get("parameters") or [])
        for op in item.values():
            if isinstance(op, dict):
                params.extend(op.get("parameters") or [])
        multi = {p.get("name") for p in params if isinstance(p, dict) and p.get("x-multi-segment")}
        if not multi:
            continue
        regex = ""
        for part in re.split(r"(\{[^}]+\})", template):
            if part.startswith("{") and part.endswith("}"):
                name = part[1:-1]
                group = re.sub(r"\W", "_", name)
                regex += f"(?P<{group}>{'.+' if name in multi else '[^/]+'})"
            else:
                regex += re.escape(part)
        out.append((re.compile(re.escape(server_base) + regex), ",".join(sorted(multi))))
    return out


def _escape_multi_segment(patterns: list[tuple[re.Pattern[str], str]], path: str) -> str:
    for pattern, names in patterns:
        match = pattern.fullmatch(path)
        if not match:
            continue
        for name in names.split(","):
            group = re.sub(r"\W", "_", name)
            start, end = match.span(group)
            path = path[:start] + path[start:end].replace("/", "%2F") + path[end:]
        return path
    return path


@dataclass
class RecordedRequest:
    """One exchange the fake served: what came in and what went out."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any
    body: bytes
    status: int = 0
    response_json: Any = None
    violations: list[str] = field(default_factory=list)
    undocumented: bool = False

    def header(self, name: str) -> str | None:
        """A request header, case-insensitively."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def describe_error(error: BaseException) -> str:
    """A readable one-paragraph description of an openapi-core validation error."""
    parts = [f"{type(error).__name__}: {_short(str(error))}"]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for sub in getattr(current, "schema_errors", None) or ():
            path = "/".join(str(p) for p in getattr(sub, "absolute_path", ()) or ())
            parts.append(f"  at {path or '<root>'}: {_short(str(getattr(sub, 'message', sub)))}")
        current = current.__cause__ or current.__context__
        if current is not None and not getattr(current, "schema_errors", None):
            text = str(current)
            if text and text not in parts[0]:
                parts.append(f"  caused by {type(current).__name__}: {_short(text)}")
    return "\n".join(parts)


def _short(text: str, limit: int = 400) -> str:
    # validators quote whole bodies; keep each finding readable
    return text if len(text) <= limit else text[: limit // 2] + " … " + text[-limit // 2 :]


class OpenAPIFakeServer:
    """Serve ``app`` locally; validate and record every exchange against ``spec_path``.

    :param app: the Flask app implementing the fake service.
    :param spec_path: an OpenAPI 3 description (JSON or YAML).
    :param server_base: the path prefix the description's paths live under on the fake
        (``""``: at the root, like ``https://api.github.com``).
    :param validate_responses: check the fake's own answers too (default); turn it off only
        for a deliberate off-spec answer in a test of error handling.
    """

    def __init__(
        self,
        app: flask.Flask,
        spec_path: str,
        *,
        server_base: str = "",
        validate_responses: bool = True,
    ) -> None:
        self.app = app
        self.spec_path = spec_path
        self.server_base = server_base.rstrip("/")
        self.validate_responses = validate_responses
        self.spec = load_spec(spec_path, self.server_base)
        self.openapi = self.spec.openapi
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self._lock = threading.Lock()
        self._live: ServerThread | None = None

    # -- lifecycle --

    @property
    def url(self) -> str:
        """Base URL of the fake (``http://127.0.0.1:<port>`` plus ``server_base``)."""
        if self._live is None:
            raise RuntimeError("the fake server is not started")
        return self._live.url + self.server_base

    def start(self) -> OpenAPIFakeServer:
        if self._live is None:
            self._live = serve_wsgi(self._wsgi, name="openapi-fake").start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> OpenAPIFakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inspection --

    def assert_clean(self) -> None:
        """Fail when any request or response broke the description."""
        if self.violations:
            raise AssertionError(
                f"{len(self.violations)} OpenAPI violation(s) on the fake of {self.spec_path}:\n"
                + "\n\n".join(self.violations)
            )

    def requests_to(self, method: str, path_suffix: str = "") -> list[RecordedRequest]:
        """Recorded requests with this method whose path ends with ``path_suffix``."""
        return [r for r in self.requests if r.method == method.upper() and r.path.endswith(path_suffix)]

    def reset(self) -> None:
        """Forget recorded requests and violations."""
        with self._lock:
            self.requests.clear()
            self.violations.clear()

    # -- the WSGI wrapper --

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse

        patterns = self.spec.multi_segment

        class _Request(WerkzeugOpenAPIRequest):
            @property
            def path(self) -> str:
                return _escape_multi_segment(patterns, super().path)

        request = Request(environ)
        body = request.get_data(cache=True)
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query={k: request.args.getlist(k) for k in request.args},
            headers=dict(request.headers.items()),
            json=_parse_json(body),
            body=body,
        )
        try:
            self.openapi.validate_request(_Request(request))
        except Exception as exc:  # noqa: BLE001 - every validation failure is a finding
            record.violations.append(
                f"request {request.method} {request.full_path.rstrip('?')}: {describe_error(exc)}"
            )

        # the fake app reads the body again from a fresh stream
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        response = Response.from_app(self.app, environ, buffered=True)
        record.status = response.status_code
        data = response.get_data()
        record.response_json = _parse_json(data)
        if UNDOCUMENTED_HEADER in response.headers:
            del response.headers[UNDOCUMENTED_HEADER]
            record.undocumented = True
        elif self.validate_responses:
            try:
                self.openapi.validate_response(_Request(request), WerkzeugOpenAPIResponse(response))
            except Exception as exc:  # noqa: BLE001
                where = f"response {response.status_code} to {request.method} {request.path}"
                record.violations.append(f"{where}: {describe_error(exc)}")
        with self._lock:
            self.requests.append(record)
            self.violations.extend(record.violations)
        return response(environ, start_response)


def _parse_json(data: bytes) -> Any:
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


__all__ = [
    "UNDOCUMENTED_HEADER",
    "LoadedSpec",
    "OpenAPIFakeServer",
    "RecordedRequest",
    "describe_error",
    "load_openapi",
    "load_spec",
]
