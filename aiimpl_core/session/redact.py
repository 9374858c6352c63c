"""Redaction of every secret the session knows from everything it sends back or prints.

A secret can reach an output in more shapes than its plain text: URL-encoded (in a remote URL),
base64 inside an HTTP ``Authorization: Basic`` header (curl traces), or split across lines by a
tool that wraps long output. :class:`Redactor` matches all of them.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
#: shorter values are not redacted: masking "1" or "on" everywhere would garble every text
MIN_LENGTH = 6
_SPLIT = r"(?:\s|\\n|\\r)*"  # a real line break, or one escaped inside a JSON string
#: variants longer than this are matched as written, not across line breaks (their lines are
#: variants of their own)
LONG = 512
_NOTHING = re.compile(r"(?!)")  # matches nowhere: every variant is a long one


def _variant_pattern(variant: str) -> str:
    """A regex for ``variant`` that tolerates line breaks between any two characters and either
    case in percent escapes (encoders differ: ``%2F`` or ``%2f``)."""
    tokens: list[str] = []
    i = 0
    while i < len(variant):
        ch = variant[i]
        if ch == "%" and re.fullmatch(r"[0-9A-Fa-f]{2}", variant[i + 1 : i + 3]):
            tokens.append("%" + _SPLIT + f"(?i:{variant[i + 1]}){_SPLIT}(?i:{variant[i + 2]})")
            i += 3
            continue
        if not ch.isspace():
            tokens.append(re.escape(ch))
        i += 1
    return _SPLIT.join(tokens)


class Redactor:
    """Replaces known secret values (and their encodings) with ``[REDACTED]``; thread-safe."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._long: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.add(*values)

    @property
    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def add(self, *values: str | None) -> None:
        """Learn more secret values (empty and very short ones are ignored)."""
        fresh = {v.strip() for v in values if v and len(v.strip()) >= MIN_LENGTH} - self._values
        if not fresh:
            return
        with self._lock:
            self._values |= fresh
            self._pattern = None

    def _variants(self, value: str) -> set[str]:
        out = {value, quote(value, safe=""), quote_plus(value, safe="")}
        for raw in (value, f"x-access-token:{value}"):
            out.add(base64.b64encode(raw.encode()).decode().rstrip("="))
        return {v for v in out if len(v) >= MIN_LENGTH}

    @staticmethod
    def _lines(value: str) -> set[str]:
        """A multi-line secret's (a PEM key's) lines, each secret on its own."""
        lines = {line.strip() for line in value.splitlines()}
        return {line for line in lines if len(line) >= 16} if len(lines) > 1 else set()

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                variants: set[str] = set()
                lines: set[str] = set()
                for value in self._values:
                    variants |= self._variants(value)
                    lines |= self._lines(value)
                # A value (or an encoding of it) may be broken across lines anywhere; a long one is
                # replaced as written, and a multi-line one's lines each as written: a pattern that
                # allows a break between any two characters costs seconds to compile per few
                # kilobytes. Longest first, so a value containing another is masked whole.
                self._long = tuple(sorted((v for v in variants if len(v) > LONG), key=len, reverse=True))
                short = [(v, _variant_pattern(v)) for v in variants if len(v) <= LONG]
                short += [(line, re.escape(line)) for line in lines - variants]
                parts = [pattern for _, pattern in sorted(short, key=lambda p: len(p[0]), reverse=True)]
                self._pattern = re.compile("|".join(parts)) if parts else _NOTHING
            return self._pattern

    def text(self, value: str | None) -> str:
        """``value`` with every known secret masked (``None`` becomes ``""``)."""
        if not value:
            return value or ""
        pattern = self._compiled()
        if pattern is None:
            return value
        for variant in self._long:
            if variant in value:
                value = value.replace(variant, MASK)
        return pattern.sub(MASK, value)

    def data(self, value: Any, keep: Iterable[str] = ()) -> Any:
        """A JSON-like value with every string masked, an object's keys included; top-level keys
        in ``keep`` pass unchanged with their values (the nonce a request must carry)."""
        kept = set(keep)
        if isinstance(value, dict):
            return {
                (k if k in kept or not isinstance(k, str) else self.text(k)): v if k in kept else self.data(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value
