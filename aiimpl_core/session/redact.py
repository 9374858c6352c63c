"""Redaction of every secret the session knows from everything it sends back or prints.

A secret can reach an output in more shapes than its plain text: URL-encoded (in a remote URL),
base64 inside an HTTP ``Authorization: Basic`` header (curl traces), or split across lines by a
tool that wraps long output. :class:`Redactor` matches all of them.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
#: shorter values are not redacted as written: masking "1" or "on" everywhere would garble every text
#: (their base64 forms are, where they are distinctive: :data:`MIN_BASE64_LENGTH`)
MIN_LENGTH = 6
#: the shortest base64 form of a value shorter than :data:`MIN_LENGTH` that is masked. A base64 form
#: is no word of the text around it, but the short fragments a value of a few bytes leaves (``YWJj``,
#: ``hYmNk`` of ``abcd``) turn up inside other base64, hashes and identifiers; from six characters on
#: a form is as long as the shortest value masked as written, and one shaped like a word or a number
#: (letters of one case, or a capital and small letters, or digits only) is left out as well, as such
#: a value would be (:func:`_distinctive`)
MIN_BASE64_LENGTH = 6
#: what a base64 form of a short value may not look like: an ordinary word or number
_WORD_SHAPED = re.compile(r"[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
#: what may come between two characters of a secret in an output: a real line break or space, or
#: a line break escaped inside a JSON string
_BREAK = re.compile(r"\s|\\n|\\r")
#: variants longer than this are found with a plain substring search, not a pattern
LONG = 512
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
#: patterns a redactor keeps before it compiles all its values into one again
MAX_CHUNKS = 8
#: the credentials of a URL (``https://user:password@host``, ``https://TOKEN@host``), whatever
#: their value: a package index or a remote with a token in its address, quoted by the tool that
#: failed to reach it, is no variable the session knows to be secret
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]{0,31}://[^\s/?#@:\"'<>`]*:)[^\s/?#@\"'<>`]+(?=@)")
_URL_TOKEN = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]{0,31}://)[A-Za-z0-9_-]{20,}(?=@)")


def mask_url_credentials(text: str) -> str:
    """``text`` with the password (or the token standing as the user) of every URL in it masked."""
    if "://" not in text:
        return text
    return _URL_TOKEN.sub(lambda m: m.group(1) + MASK, _URL_PASSWORD.sub(lambda m: m.group(1) + MASK, text))


def _base64_variants(data: bytes, *, padded_ends: bool = False) -> set[str]:
    """``data`` base64-encoded wherever it starts in what is encoded (after ``user:`` in a
    ``Basic`` header, inside an encoded file or JSON object): each of the three alignments encodes
    it differently. What depends on the bytes around it is left out: the characters the bytes
    before it share (the first two after one byte, the first three after two: the next ones hold
    the secret's own bits, which are matched), and the last one when its last group is not whole
    (the bytes after it share that one).

    :param padded_ends: also each alignment's end whole with its ``=`` padding (``YWJjZA==`` of
        ``abcd``), as it is where the value ends what was encoded (the password of a ``Basic``
        header, ``echo -n VALUE | base64``).
    """
    out = set()
    for before in range(3):
        padded = base64.b64encode(b"\0" * before + data).decode()
        encoded = padded.rstrip("=")
        start = (0, 2, 3)[before]
        end = len(encoded) - 1 if (before + len(data)) % 3 else len(encoded)
        out.add(encoded[start:end])
        if padded_ends:
            out.add(padded[start:])
    return out


def _short_base64_variants(data: bytes) -> set[str]:
    """The base64 forms of a value shorter than :data:`MIN_LENGTH` that are masked (it is not masked
    as written): those of :func:`_base64_variants`, its padded ends included, kept when
    :func:`_distinctive`."""
    return {v for v in _base64_variants(data, padded_ends=True) if _distinctive(v)}


def _distinctive(variant: str) -> bool:
    """Whether a base64 form of a short value may be masked wherever it appears: at least
    :data:`MIN_BASE64_LENGTH` characters, and not shaped like a word or a number (``Secret``,
    ``NOTICE``, ``123456`` may be base64 too)."""
    return len(variant) >= MIN_BASE64_LENGTH and not _WORD_SHAPED.fullmatch(variant)


def _json_escaped(value: str) -> set[str]:
    r"""``value`` as a JSON string holds it (a tool printing JSON): quotes, backslashes and control
    characters escaped; letters outside ASCII escaped (``\u00e4``) or as they are; ``/`` escaped
    (``\/``) or as it is."""
    forms = {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    return forms | {form.replace("/", "\\/") for form in forms}


def _squeezed(text: str) -> str:
    return _BREAK.sub("", text)


def _variant_pattern(variant: str) -> str:
    """A regex for ``variant`` (squeezed) that accepts either case in percent escapes (encoders
    differ: ``%2F`` or ``%2f``)."""
    out: list[str] = []
    at = 0
    for m in _PERCENT.finditer(variant):
        out.append(re.escape(variant[at : m.start()]))
        out.append("%" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in m.group()[1:]))
        at = m.end()
    out.append(re.escape(variant[at:]))
    return "".join(out)


def _compile(variants: Iterable[str]) -> re.Pattern[str]:
    """One pattern of ``variants``, longest first, so a value containing another is masked whole."""
    return re.compile("|".join(_variant_pattern(v) for v in sorted(variants, key=len, reverse=True)))


class _Positions:
    """Maps a position in the squeezed text back to the text it was squeezed from."""

    def __init__(self, text: str) -> None:
        self.starts: list[int] = []  # where each kept run starts in the squeezed text ...
        self.origins: list[int] = []  # ... and in the original
        kept = at = 0
        for m in _BREAK.finditer(text):
            if m.start() > at:
                self.starts.append(kept)
                self.origins.append(at)
                kept += m.start() - at
            at = m.end()
        if at < len(text):
            self.starts.append(kept)
            self.origins.append(at)

    def original(self, position: int) -> int:
        run = bisect_right(self.starts, position) - 1
        return self.origins[run] + position - self.starts[run]


class Redactor:
    """Replaces known secret values (and their encodings) with ``[REDACTED]``; thread-safe.

    A secret is found even when an output broke it across lines: the text is matched with its
    line breaks and spaces taken out (its "squeezed" form), and what matched is masked in the text
    as written, the breaks inside it included. Values learned later are compiled on their own, not
    with all the earlier ones again: a process that knows hundreds of secrets learns one more in
    milliseconds.
    """

    def __init__(self, values: Iterable[str] = (), *, url_credentials: bool = False) -> None:
        self.url_credentials = url_credentials  # mask the credentials of every URL (see above)
        self._values: set[str] = set()
        #: values shorter than MIN_LENGTH, masked in their base64 forms only
        self._short: set[str] = set()
        self._pending: set[str] = set()
        self._chunks: tuple[re.Pattern[str], ...] = ()
        self._long: tuple[str, ...] = ()
        self._longest = 0  # the length of the longest variant compiled
        self._lock = threading.Lock()
        self.add(*values)

    @property
    def values(self) -> frozenset[str]:
        """The values masked as written (those of at least :data:`MIN_LENGTH` characters)."""
        return frozenset(self._values)

    @property
    def masks_any(self) -> bool:
        """Whether it knows any value, a short one masked in its base64 forms only included."""
        return bool(self._values or self._short)

    def add(self, *values: str | None) -> None:
        """Learn more secret values (empty ones are ignored; one shorter than :data:`MIN_LENGTH` is
        masked in its distinctive base64 forms only, see :data:`MIN_BASE64_LENGTH`)."""
        stripped = {v.strip() for v in values if v and v.strip()}
        fresh = {v for v in stripped if len(v) >= MIN_LENGTH} - self._values
        short = {v for v in stripped if len(v) < MIN_LENGTH} - self._short
        if not fresh and not short:
            return
        with self._lock:
            self._values |= fresh
            self._short |= short
            self._pending |= fresh | short

    def _variants(self, value: str) -> set[str]:
        # (a value from the environment may hold bytes that are no UTF-8, which Python keeps as lone
        # surrogates: encoded back to those bytes, as they would be sent)
        data = value.encode("utf-8", "surrogateescape")
        if len(value) < MIN_LENGTH:
            return _short_base64_variants(data)
        out = {value, quote(data, safe=""), quote_plus(data, safe=""), *_json_escaped(value)}
        out |= _base64_variants(data)
        # a multi-line secret's (a PEM key's) lines, each a secret on its own
        lines = {line.strip() for line in value.splitlines()}
        if len(lines) > 1:
            out |= {line for line in lines if len(line) >= 16}
        squeezed = {_squeezed(v) for v in out}
        return {v for v in squeezed if len(v) >= MIN_LENGTH}

    def _compiled(self) -> tuple[tuple[re.Pattern[str], ...], tuple[str, ...]]:
        with self._lock:
            if self._pending:
                if len(self._chunks) >= MAX_CHUNKS:
                    self._pending, self._chunks, self._long = self._values | self._short, (), ()
                variants: set[str] = set()
                for value in self._pending:
                    variants |= self._variants(value)
                short = {v for v in variants if len(v) <= LONG}
                if short:
                    self._chunks += (_compile(short),)
                self._long += tuple(variants - short)
                self._longest = max(self._longest, *map(len, variants), 0)
                self._pending = set()
            return self._chunks, self._long

    def text(self, value: str | None) -> str:
        """``value`` with every known secret masked (``None`` becomes ``""``), and with
        ``url_credentials`` the credentials of every URL in it."""
        masked = self.known(value)
        return mask_url_credentials(masked) if self.url_credentials else masked

    def known(self, value: str | None) -> str:
        """``value`` with every known secret masked, and nothing else."""
        if not value:
            return value or ""
        chunks, long = self._compiled()
        if not chunks and not long:
            return value
        squeezed = _squeezed(value)
        spans: list[tuple[int, int]] = []
        for variant in long:
            at = squeezed.find(variant)
            while at >= 0:
                spans.append((at, at + len(variant)))
                at = squeezed.find(variant, at + 1)
        if spans:  # the patterns need not read what is masked already (a certificate bundle)
            parts, at = [], 0
            for start, end in sorted(spans):
                start = max(start, at)
                if end > start:
                    parts += (squeezed[at:start], "\0" * (end - start))
                    at = end
            squeezed = "".join(parts) + squeezed[at:]
        # every match, overlapping ones too: two secrets sharing characters are masked together
        for chunk in chunks:
            match = chunk.search(squeezed)
            while match:
                spans.append(match.span())
                match = chunk.search(squeezed, match.start() + 1)
        if not spans:
            return value
        positions = _Positions(value)
        out: list[str] = []
        written = 0  # the end in ``value`` of what is in ``out`` already
        for start, end in sorted(spans):
            first, last = positions.original(start), positions.original(end - 1) + 1
            if first < written:  # overlaps the mask before it: that mask grows
                written = max(written, last)
                continue
            out += (value[written:first], MASK)
            written = last
        out.append(value[written:])
        return "".join(out)

    def scan(self) -> Scan:
        """A :class:`Scan` for a text too large to hold, read a part at a time."""
        chunks, long = self._compiled()
        return Scan(chunks, long, self._longest)

    def data(self, value: Any, keep: Iterable[str] = ()) -> Any:
        """A JSON-like value with every string masked, an object's keys included; top-level keys
        in ``keep`` pass unchanged with their values (the nonce a request must carry)."""
        return map_strings(value, self.text, keep)


class Scan:
    """Whether a text given a part at a time holds a secret: what :meth:`Redactor.known` would mask
    in the whole text is found wherever the parts cut it (a secret split by a cut, or by a line
    break as well). Only the end of what was read is kept, as long as the longest form of a secret."""

    def __init__(self, chunks: tuple[re.Pattern[str], ...], long: tuple[str, ...], longest: int) -> None:
        self._chunks = chunks
        self._long = long
        self._keep = longest  # (a secret found across a cut is in the end kept and the next part)
        self._carry = ""  # the end of the squeezed text read so far
        self._backslash = False  # a part ended in a backslash: with the next part's "n", a line break
        self.found = False

    def feed(self, text: str) -> bool:
        """Read the next part; whether a secret was found so far."""
        if self.found or not (self._chunks or self._long):
            return self.found
        if self._backslash:
            text = "\\" + text
        # (squeezed apart, two parts are as squeezed together unless the first ends in a backslash)
        self._backslash = text.endswith("\\")
        return self._read(text[:-1] if self._backslash else text)

    def _read(self, text: str) -> bool:
        squeezed = self._carry + _squeezed(text)
        self.found = any(v in squeezed for v in self._long) or any(c.search(squeezed) for c in self._chunks)
        self._carry = squeezed[-self._keep :] if self._keep else ""
        return self.found

    def end(self) -> bool:
        """The text has been read whole: whether it holds a secret."""
        if self._backslash and not self.found:
            self._backslash = False
            self._read("\\")
        return self.found


def map_strings(value: Any, text: Callable[[str], str], keep: Iterable[str] = ()) -> Any:
    """A JSON-like value with ``text`` applied to every string, an object's keys included;
    top-level keys in ``keep`` pass unchanged with their values."""
    kept = set(keep)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {(k if not isinstance(k, str) else text(k)): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str):
            return text(value)
        return value

    if isinstance(value, dict) and kept:
        return {
            (k if k in kept or not isinstance(k, str) else text(k)): v if k in kept else walk(v)
            for k, v in value.items()
        }
    return walk(value)
