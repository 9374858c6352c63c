"""The one error schema of the ``/api/*`` admin endpoints, and the exception views raise to answer with it.

Every failed ``/api/*`` admin request answers ``{"error": "<message>"}`` (the reference's text), so
the OpenAPI description documents a single error body. :class:`ApiError` carries the status and
the message (and the rare extra fields) from a view or a service to the handler registered in
:mod:`aiimpl_core.api`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from flask import request
from marshmallow import Schema, fields
from werkzeug.exceptions import BadRequest, HTTPException

from ..errors import ValidationError

#: The body of a request that is missing, not JSON, too large or too deeply nested.
NOT_JSON = object()

INVALID_BODY = "Invalid request body"
UNAUTHORIZED = "Unauthorized"


class ErrorSchema(Schema):
    """An error of the admin API: ``error`` is the reference's human-readable message."""

    error = fields.String(required=True, metadata={"description": "the reference's message"})


class HealthSchema(Schema):
    """``GET /healthz``: whether this process can serve."""

    status = fields.String(required=True, metadata={"description": "`ok` or `degraded`"})
    database = fields.String(required=True, metadata={"description": "`ok` or `unavailable`"})
    schema = fields.String(
        required=True, allow_none=True,
        metadata={"description": "`ok`, `upgrade needed` (run `aiimpl db upgrade`), or null when the "
                                 "database does not answer"},
    )
    failedPlugins = fields.List(  # noqa: N815 - the answer's JSON name
        fields.String(), required=True, metadata={"description": "plugins that failed to load"}
    )


class ApiError(Exception):
    """Answer the current request with ``status`` and ``{"error": message, **extra}``.

    ``message=None`` answers with ``extra`` alone (``DELETE /api/mappings/<teamKey>``'s
    ``{"deleted": false}``).
    """

    def __init__(self, status: int, message: str | None, **extra: Any) -> None:
        super().__init__(message or "")
        self.status = status
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.message is None else {"error": self.message}
        out.update(self.extra)
        return out


#: How deeply a request body may nest. Real payloads (webhooks included) stay far below it; a
#: deeper one is refused like unparsable JSON, so no code walking a body (the redaction of a step's
#: detail, say) can run out of stack on what the parser accepted.
MAX_DEPTH = 64


#: what no database or encoder takes in text: NUL, and a surrogate the parser left alone (a pair
#: is read as the one character it encodes)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _replaced(value: Any, depth: int = 0) -> Any:
    """``value`` with each NUL and lone surrogate of its strings (keys included) replaced by
    U+FFFD; :data:`NOT_JSON` when it nests more than :data:`MAX_DEPTH` levels."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            return NOT_JSON
        if isinstance(value, list):
            items = [_replaced(item, depth + 1) for item in value]
            return NOT_JSON if any(item is NOT_JSON for item in items) else items
        pairs = [(_replaced(key), _replaced(item, depth + 1)) for key, item in value.items()]
        return NOT_JSON if any(item is NOT_JSON for _, item in pairs) else dict(pairs)
    return value


def _storable(value: Any) -> bool:
    """Whether ``value`` nests at most :data:`MAX_DEPTH` levels and every string in it can be stored
    and re-encoded: no NUL (PostgreSQL refuses it in text) and no lone surrogate (not encodable as
    UTF-8)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                return False
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                item = item.values()
            stack.extend((child, depth + 1) for child in item)
    return True


def _not_a_json_constant(name: str) -> Any:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``: Python's parser takes them, but they are not
    JSON, PostgreSQL's json type refuses them and no answer that echoes them back is JSON."""
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused when a double cannot hold it (``1e400``
    would become ``inf``, stored and answered as the ``Infinity`` that is not JSON)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def parse_json(raw: bytes | str | None, *, replace_unstorable: bool = False) -> Any:
    """``raw`` parsed as JSON, or :data:`NOT_JSON` when it is empty, not UTF-8, not JSON (``NaN``,
    ``Infinity`` and a fraction beyond a double's range such as ``1e400`` included), nested more
    than :data:`MAX_DEPTH` levels, or holds text no database or encoder can take (NUL, lone
    surrogates). Never raises: every endpoint reads its body through here, so a body of any shape
    gets a 4xx, not a 500.

    :param replace_unstorable: replace such text with U+FFFD instead of refusing the body: for a
        service's signed delivery (a webhook), whose people's text (a pull request's description)
        may hold them and which would be refused again on each redelivery, the event lost. A body
        whose values are taken as given (a secret, a nonce, a mapping) is refused, never altered.
    """
    if not raw or not raw.strip():
        return NOT_JSON
    try:
        value = json.loads(raw, parse_constant=_not_a_json_constant, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return NOT_JSON
    if _storable(value):
        return value
    return _replaced(value) if replace_unstorable else NOT_JSON


def is_given(value: Any) -> bool:
    """Whether a required field of an admin body is there for the reference's "… required"
    messages: not missing (``None``), empty or blank (spaces only). A value of another type is
    there: its own message names the field (``owner must be a string``)."""
    return value is not None and (not isinstance(value, str) or value.strip() != "")


def require_strings(values: Mapping[str, Any]) -> None:
    """Refuse the first of ``values`` (field name -> value) that is no string, naming it (``owner
    must be a string``): the message after :func:`is_given` for a field that is there."""
    for name, value in values.items():
        if not isinstance(value, str):
            raise ValidationError(f"{name} must be a string")


class UnreadableBody(BadRequest):
    """A request body the server could not read: answered as one over the size limit is (each
    endpoint's answer to a body it cannot take, :func:`aiimpl_core.api._install_error_handlers`)."""

    description = "the request's body could not be read"


def read_json() -> Any:
    """The request body parsed with :func:`parse_json`, or :data:`NOT_JSON`."""
    try:
        raw = request.get_data(cache=True)
    except HTTPException:  # larger than MAX_CONTENT_LENGTH
        return NOT_JSON
    return parse_json(raw)


def json_object(message: str = INVALID_BODY) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`ApiError` 400 with ``message``."""
    data = read_json()
    if data is NOT_JSON or not isinstance(data, dict):
        raise ApiError(400, message)
    return data


__all__ = ["INVALID_BODY", "NOT_JSON", "UNAUTHORIZED", "ApiError", "ErrorSchema", "UnreadableBody",
           "json_object", "parse_json", "read_json"]
