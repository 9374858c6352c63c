"""Markdown ↔ Atlassian Document Format (ADF).

Jira's REST API v3 takes and returns rich text (descriptions, comments) as ADF documents. Our
comments are Markdown; :func:`markdown_to_adf` renders the subset the orchestrator writes
(paragraphs, headings, links and bare URLs, inline code, fenced code blocks, bullet and numbered
lists with nesting, bold, italic, strike-through, block quotes, rules); a block that ADF does not
allow where Markdown nests it (a heading in a quote, a quote in a list item) keeps its text in a
node ADF allows there. :func:`adf_to_markdown` turns a description or comment back into Markdown
for the planning context and the admin UI; nodes it does not know are rendered through their
children, so no text is lost.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

Node = dict[str, Any]

# -- Markdown -> ADF ---------------------------------------------------------------------------

#: A code fence line (also how :func:`.provider.fit_comment` finds the block a cut falls in). The
#: possessive ``*+`` never gives back what it took, which could not make a match anyway (the
#: language holds no blank, the line ends after the last one): with backtracking, a line of
#: blanks ending in a backtick took time quadratic in its length.
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*+(?P<lang>[^`\s]*+)\s*+$")
#: An ATX heading line: its opening ``#`` run, then (after a space or tab) its text, which may end
#: with a closing run; :func:`_heading_text` takes that off.
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*))?$")
_RULE = re.compile(r"^ {0,3}([-*_])(\s*\1){2,}\s*$")
_QUOTE = re.compile(r"^ {0,3}> ?(.*)$")
_ITEM = re.compile(r"^(?P<indent>\s*)(?P<marker>[-*+]|\d{1,9}[.)])\s+(?P<text>.*)$")

# What binds tighter than emphasis (CommonMark: backslash escapes, code spans, links and autolinks;
# and the bare URLs we link): found first, so that a ``*``, ``_`` or ``~`` inside one (a link's
# target ``…/run_42/output_.log``) never opens or closes emphasis. At any position the first
# alternative that matches wins, which gives code spans priority over links and links over bare URLs.
_ESCAPE = r"(?P<escape>\\[!-/:-@\[-`{-~])"  # (CommonMark: a backslash escapes ASCII punctuation)
#: A code span, matched only within the bounds (``pos`` to ``endpos``) where :class:`_CodeSpans`
#: finds one: CommonMark closes it at the first run of the opening's length, which a pattern finds
#: only by trying every opening length at every closing place (cubic on a line of backticks).
_CODE = r"(?P<code>(?P<ticks>`++)(?P<code_text>.+)(?P=ticks)\Z)"
_URL = r"(?P<url>https?://[^\s<>()\[\]]+)"
_ATOM = re.compile(
    "|".join((
        _ESCAPE,
        _CODE,
        r"\[(?P<link_text>[^\]]+)\]\((?P<link_url>[^)\s]+)\)",
        r"<(?P<autolink>https?://[^>\s]+)>",
        _URL,
    ))
)
#: The atoms that open with none of ``[``, ``<`` and a backtick: :func:`_atoms` finds links,
#: autolinks and code spans itself.
_UNBRACKETED_ATOM = re.compile("|".join((_ESCAPE, _URL)))
# Emphasis, matched on the text with the delimiters inside atoms masked (see :func:`_masked`); at
# any position the first alternative that matches wins. :class:`_EmphasisFinder` finds what a search
# of this pattern finds, without its cost: from every delimiter that closes nothing the search scans
# to the line's end, quadratic on a line of thousands of them.
_EMPHASIS = re.compile(
    r"\*\*(?P<strong>.+?)\*\*"
    r"|(?<![A-Za-z0-9])__(?P<strong2>.+?)__(?![A-Za-z0-9])"
    r"|~~(?P<strike>.+?)~~"
    r"|\*(?P<em>[^\s*](?:.*?[^\s*])?)\*"
    r"|(?<![A-Za-z0-9])_(?P<em2>[^\s_](?:.*?[^\s_])?)_(?![A-Za-z0-9])"
)
_EMPHASIS_MARKS = {"strong": "strong", "strong2": "strong", "strike": "strike", "em": "em", "em2": "em"}
_DELIMITERS = "*_~"
#: Stands in for a delimiter inside an atom: neither a delimiter, nor a letter, digit or space, so
#: the emphasis pattern's tests of the characters around a delimiter read it as punctuation.
_MASK = "\x00"
_TRAILING_PUNCT = ".,;:!?'\""


def _text(text: str, marks: Sequence[Node]) -> Node:
    node: Node = {"type": "text", "text": text}
    if marks:
        node["marks"] = [dict(m) for m in marks]
    return node


def _with_mark(marks: Sequence[Node], mark: Node) -> list[Node]:
    if any(m["type"] == mark["type"] for m in marks):
        return list(marks)
    return [*marks, mark]


#: addresses a link mark may carry; any other scheme (``javascript:``, ``data:``) stays plain text,
#: since comment text may come from a runner whose agent read the issue
_LINKABLE = re.compile(r"(?i)(?:https?://|mailto:)")


def _inline(text: str, marks: Sequence[Node] = ()) -> list[Node]:
    """Inline Markdown as text nodes: atoms (escapes, code spans, links, URLs) first, then the
    emphasis around and between them, whose delimiters are never those inside an atom."""
    atoms = [(match, _atom_end(match)) for match in _atoms(text)]
    spans = [(match.start(), end) for match, end in atoms]
    # Emphasis is looked for with the delimiters inside atoms masked. A bare URL's trailing "_",
    # "*" and "~" are its own unless an emphasis has no other closer ("_see https://x.test/a_"):
    # ``loose`` leaves them open, and its emphasis is taken only when it opens first.
    firm = _masked(text, spans)
    loose = _masked(text, [(m.start(), _url_core_end(m) if m.group("url") else end) for m, end in atoms])
    firm_next = _Next(_EmphasisFinder(firm).search)
    starts = [start for start, _end in spans]
    loose_finder = _EmphasisFinder(loose) if loose != firm else None
    loose_next = (
        _Next(lambda pos: _emphasis_outside(loose_finder, pos, spans, starts)) if loose_finder else None
    )
    out: list[Node] = []
    pos = 0
    following = 0  # index of the first atom not yet rendered
    while pos < len(text):
        while following < len(atoms) and atoms[following][0].start() < pos:
            following += 1  # inside the emphasis just rendered (its content was rendered whole)
        atom_start = atoms[following][0].start() if following < len(atoms) else len(text)
        emphasis = firm_next.at(pos)
        other = loose_next.at(pos) if loose_next is not None else None
        if other is not None and (emphasis is None or other.start() < emphasis.start()):
            emphasis = other
        if emphasis is not None and emphasis.start() < atom_start:
            out.append(_text(text[pos : emphasis.start()], marks))
            group = str(emphasis.lastgroup)
            mark = {"type": _EMPHASIS_MARKS[group]}
            out.extend(_inline(text[emphasis.start(group) : emphasis.end(group)], _with_mark(marks, mark)))
            pos = emphasis.end()
        elif following < len(atoms):
            match, end = atoms[following]
            out.append(_text(text[pos:atom_start], marks))
            out.extend(_atom(match, end, marks))
            pos = end
            following += 1
        else:
            break
    if pos < len(text):
        out.append(_text(text[pos:], marks))
    return _merge(out)


class _Next:
    """The first match at or after a position, found by ``find(position)``; looked for again only
    once the position has passed it (a search that found none finds none further on), so a line
    is scanned once, not once per atom."""

    def __init__(self, find: Callable[[int], Any]) -> None:
        self._find = find
        self._match: Any = None
        self._searched = False

    def at(self, pos: int) -> Any:
        if not self._searched or (self._match is not None and self._match.start() < pos):
            self._match = self._find(pos)
            self._searched = True
        return self._match


def _url_core_end(match: re.Match[str]) -> int:
    """Where a bare URL ends without its trailing punctuation and emphasis delimiters."""
    return match.start() + len(match.group("url").rstrip(_TRAILING_PUNCT + _DELIMITERS))


def _atom_end(match: re.Match[str]) -> int:
    """Where an atom ends: a bare URL leaves out the punctuation that ends a sentence."""
    if match.group("url"):
        return match.start() + len(match.group("url").rstrip(_TRAILING_PUNCT))
    return match.end()


def _masked(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with every emphasis delimiter inside ``spans`` replaced by :data:`_MASK` (one
    character for one, so a match's positions are the text's)."""
    chars = list(text)
    for start, end in spans:
        for i in range(start, end):
            if chars[i] in _DELIMITERS:
                chars[i] = _MASK
    return "".join(chars)


def _emphasis_outside(
    finder: _EmphasisFinder, pos: int, spans: Sequence[tuple[int, int]], starts: Sequence[int]
) -> _Emphasis | None:
    """The first emphasis that ``finder`` finds from ``pos`` that does not open inside one of
    ``spans`` (whose ``starts`` are in order): one that would open on a URL's trailing delimiter
    does not, that URL keeps it."""
    while (match := finder.search(pos)) is not None:
        i = bisect.bisect_right(starts, match.start()) - 1
        if i < 0 or match.start() >= spans[i][1]:
            return match
        pos = match.start() + 1
    return None


def _first_from(positions: Sequence[int], pos: int) -> int | None:
    """The first of the sorted ``positions`` at or after ``pos``."""
    i = bisect.bisect_left(positions, pos)
    return positions[i] if i < len(positions) else None


def _positions(pattern: str, text: str) -> list[int]:
    return [match.start() for match in re.finditer(pattern, text)]


_ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


class _Emphasis:
    """An emphasis as :class:`_EmphasisFinder` finds it, read as a match of :data:`_EMPHASIS`:
    ``start()``/``end()`` of the whole, ``lastgroup`` (the alternative) and its content's span."""

    __slots__ = ("_content", "_whole", "lastgroup")

    def __init__(self, start: int, end: int, group: str, content: tuple[int, int]) -> None:
        self._whole = (start, end)
        self._content = content
        self.lastgroup = group

    def start(self, group: str | None = None) -> int:
        return (self._whole if group is None else self._content)[0]

    def end(self, group: str | None = None) -> int:
        return (self._whole if group is None else self._content)[1]


class _EmphasisFinder:
    """``_EMPHASIS.search(text, pos)`` in time linear in ``text`` over all the searches of a line.

    Each alternative's content is the shortest that ends before a closing delimiter, so where it
    closes is the first of that alternative's closers (found up front, each in one scan) after
    the least content, on the same line: an opening delimiter costs a lookup, whether it closes or
    not. The ``em`` alternatives try their longer form (``*a…b*``) before the one-character one
    (``*a*``), as the pattern's greedy ``(?:…)?`` does.
    """

    #: where each alternative's content may end: its closing delimiter follows
    CLOSERS: ClassVar[dict[str, re.Pattern[str]]] = {
        "strong": re.compile(r"(?=\*\*)"),
        "strong2": re.compile(r"(?=__(?![A-Za-z0-9]))"),
        "strike": re.compile(r"(?=~~)"),
        "em": re.compile(r"(?<=[^\s*])(?=\*)"),
        "em2": re.compile(r"(?<=[^\s_])(?=_(?![A-Za-z0-9]))"),
    }

    def __init__(self, text: str) -> None:
        self.text = text
        self.opens = _positions(r"[*_~]", text)
        # (most texts have no delimiter, or are the few characters of an emphasis: nothing to find)
        self.newlines = _positions("\n", text) if self.opens else []  # (a pattern's "." stops at one)
        self.closers = {group: [m.start() for m in pattern.finditer(text)] if self.opens else []
                        for group, pattern in self.CLOSERS.items()}

    def search(self, pos: int) -> _Emphasis | None:
        for i in range(bisect.bisect_left(self.opens, pos), len(self.opens)):
            found = self._at(self.opens[i])
            if found is not None:
                return found
        return None

    def _close(self, group: str, content: int, least: int) -> int | None:
        """Where the content of ``group`` that starts at ``content`` ends, at ``least`` or later."""
        end = _first_from(self.closers[group], least)
        newline = _first_from(self.newlines, content)
        return end if end is not None and (newline is None or newline >= end) else None

    def _at(self, p: int) -> _Emphasis | None:
        text = self.text
        double = text.startswith(text[p] * 2, p)
        if text[p] == "~":
            end = self._close("strike", p + 2, p + 3) if double else None
            return None if end is None else _Emphasis(p, end + 2, "strike", (p + 2, end))
        if text[p] == "_" and p and text[p - 1] in _ASCII_ALNUM:
            return None  # (?<![A-Za-z0-9]): both "_" alternatives
        strong, em = ("strong", "em") if text[p] == "*" else ("strong2", "em2")
        if double:
            end = self._close(strong, p + 2, p + 3)
            if end is not None:
                return _Emphasis(p, end + 2, strong, (p + 2, end))
        first = text[p + 1 : p + 2]
        if not first or first == text[p] or first.isspace():
            return None
        end = self._close(em, p + 1, p + 3)
        if end is None and text[p + 2 : p + 3] == text[p] and (
            em == "em" or text[p + 3 : p + 4] not in _ASCII_ALNUM
        ):
            end = p + 2
        return None if end is None else _Emphasis(p, end + 1, em, (p + 1, end))


class _Brackets:
    """Where the links (``[text](url)``) and autolinks (``<https://…>``) of a text open, as
    :data:`_ATOM` reads them, each told by the next ``]``, ``)``, ``>`` or blank after it (found
    up front) instead of by a scan to the line's end from every ``[`` or ``<`` that opens none."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.opens = _positions(r"[\[<]", text)
        found = bool(self.opens)
        self.closing = _positions(r"\]", text) if found else []
        self.url_ends = _positions(r"[)\s]", text) if found else []
        self.autolink_ends = _positions(r"[>\s]", text) if found else []
        self._next = 0  # index in opens of the first that may open one

    def first_from(self, pos: int) -> int | None:
        """The first position at or after ``pos`` (which never goes back) where one opens."""
        while self._next < len(self.opens) and (
            self.opens[self._next] < pos or not self._opens_at(self.opens[self._next])
        ):
            self._next += 1
        return self.opens[self._next] if self._next < len(self.opens) else None

    def _opens_at(self, p: int) -> bool:
        text = self.text
        if text[p] == "[":
            close = _first_from(self.closing, p + 1)
            if close is None or close == p + 1 or text[close + 1 : close + 2] != "(":
                return False
            end = _first_from(self.url_ends, close + 2)
            return end is not None and end > close + 2 and text[end] == ")"
        scheme = next((s for s in ("https://", "http://") if text.startswith(s, p + 1)), None)
        if scheme is None:
            return False
        end = _first_from(self.autolink_ends, p + 1 + len(scheme))
        return end is not None and end > p + 1 + len(scheme) and text[end] == ">"


class _CodeSpans:
    """Where the code spans of a text open and close, from one scan of its backtick runs.

    CommonMark: a run of backticks opens a code span that the next run of exactly as many closes
    (a longer or shorter run is part of the code); a run that none closes is text, all of it. A
    span does not cross a line break. Each run's closer is found by a lookup in the runs of its
    length, not by a pattern that tries every closing place for every opening length: that took
    time cubic in the length of a line of backticks.
    """

    def __init__(self, text: str) -> None:
        self.runs: list[tuple[int, int]] = []
        self.lines: list[int] = []  # the line of each run
        line = 0
        if "`" in text:
            for match in re.finditer(r"`+|\n", text):
                if match.group() == "\n":
                    line += 1
                else:
                    self.runs.append(match.span())
                    self.lines.append(line)
        self.starts = [start for start, _end in self.runs]
        self.by_length: dict[int, list[int]] = {}  # the indexes of the runs of each length, in order
        for index, (start, end) in enumerate(self.runs):
            self.by_length.setdefault(end - start, []).append(index)
        #: the runs that open a span: where each opens, and where its span ends
        self.opens: list[int] = []
        self.ends: list[int] = []
        for index, (start, end) in enumerate(self.runs):
            closer = self._closer(index, end - start)
            if closer is not None:
                self.opens.append(start)
                self.ends.append(self.runs[closer][1])

    def _closer(self, index: int, length: int) -> int | None:
        """The run that closes a span opening with the last ``length`` backticks of run ``index``:
        the next run of that length, on the same line."""
        same = self.by_length.get(length, [])
        after = bisect.bisect_right(same, index)
        if after < len(same) and self.lines[same[after]] == self.lines[index]:
            return same[after]
        return None

    def first_from(self, pos: int) -> tuple[int, int] | None:
        """Where the first code span opening at or after ``pos`` starts and ends.

        A ``pos`` inside a run (after a backslash-escaped backtick: the escape took the first one)
        opens with the rest of that run.
        """
        index = bisect.bisect_right(self.starts, pos) - 1
        if index >= 0 and self.runs[index][0] < pos < self.runs[index][1]:
            closer = self._closer(index, self.runs[index][1] - pos)
            if closer is not None:
                return pos, self.runs[closer][1]
        i = bisect.bisect_left(self.opens, pos)
        return (self.opens[i], self.ends[i]) if i < len(self.opens) else None


def _atoms(text: str) -> list[re.Match[str]]:
    """The atoms of ``text`` in order, each a match of :data:`_ATOM`, in time linear in ``text``.

    Read from left to right, the first atom that opens at or after where the last one ended is
    taken (two never open at one position: each kind opens with its own character). Links and
    autolinks are found by :class:`_Brackets`, code spans by :class:`_CodeSpans`, escapes and
    bare URLs by their own pattern; each atom taken is matched by :data:`_ATOM` where it starts.
    """
    found: list[re.Match[str]] = []
    unbracketed = _Next(lambda pos: _UNBRACKETED_ATOM.search(text, pos))
    brackets = _Brackets(text)
    code_spans = _CodeSpans(text)
    pos = 0
    while True:
        start = brackets.first_from(pos)
        other = unbracketed.at(pos)
        if other is not None and (start is None or other.start() < start):
            start = other.start()
        code = code_spans.first_from(pos)
        if code is not None and (start is None or code[0] < start):
            match = _ATOM.match(text, *code)
        elif start is not None:
            match = _ATOM.match(text, start)
        else:
            return found
        assert match is not None
        found.append(match)
        pos = match.end()


def _atom(match: re.Match[str], end: int, marks: Sequence[Node]) -> list[Node]:
    """The nodes of an atom (``end``: where it ends, see :func:`_atom_end`)."""
    if match.group("escape"):
        return [_text(match.group("escape")[1], marks)]
    if match.group("code"):
        # ADF allows the code mark only together with a link mark.
        kept = [m for m in marks if m["type"] == "link"]
        code = match.group("code_text")
        return [_text(code.strip(" ") or code, [*kept, {"type": "code"}])]
    if match.group("link_text") is not None:
        if _LINKABLE.match(match.group("link_url")):
            link = {"type": "link", "attrs": {"href": match.group("link_url")}}
            return _inline(match.group("link_text"), _with_mark(marks, link))
        # a javascript:, data: or relative address is no link on a ticket: kept as text
        return [_text(match.group(0), marks)]
    if match.group("autolink"):
        url = match.group("autolink")
        return [_text(url, _with_mark(marks, {"type": "link", "attrs": {"href": url}}))]
    url = match.string[match.start() : end]
    if any(m["type"] == "link" for m in marks):
        return [_text(url, marks)]
    return [_text(url, [*marks, {"type": "link", "attrs": {"href": url}}])]


def _merge(nodes: Iterable[Node]) -> list[Node]:
    """Join neighbouring text nodes that carry the same marks."""
    merged: list[Node] = []
    for node in nodes:
        if not node.get("text") and node["type"] == "text":
            continue
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and prev["type"] == "text"
            and node["type"] == "text"
            and prev.get("marks") == node.get("marks")
        ):
            prev["text"] += node["text"]
        else:
            merged.append(node)
    return merged


def _paragraph(lines: Sequence[str]) -> Node:
    content: list[Node] = []
    for i, line in enumerate(lines):
        if i:
            content.append({"type": "hardBreak"})
        content.extend(_inline(line.strip()))
    return {"type": "paragraph", "content": content}


def _heading_text(text: str | None) -> str:
    """The text of a heading, from what follows its opening ``#`` run, without a closing run.

    In CommonMark a closing run of ``#`` counts only after a space or tab (``## Port it to C#``
    keeps its ``#``), or when it is all the text (``## ##`` is an empty heading). Read with string
    methods, not a pattern: one that tries each place the text could end is quadratic or worse on a
    long line of spaces.
    """
    text = (text or "").strip(" \t")
    bare = text.rstrip("#")
    if not bare:
        return ""
    if bare != text and bare[-1] in " \t":
        return bare.rstrip(" \t")
    return text


def _starts_block(line: str) -> bool:
    return bool(
        FENCE.match(line)
        or _HEADING.match(line)
        or _RULE.match(line)
        or _QUOTE.match(line)
        or _ITEM.match(line)
    )


def _item_indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


#: How deep quotes and list items nest before what is inside is read as paragraphs, its markers
#: kept as text: every level is a recursion, and a line such as ``- - - …`` or ``>>>…`` thousands
#: of markers long would exhaust Python's stack (and no one reads a list 32 levels deep).
MAX_NESTING = 32


def _blocks(lines: list[str], depth: int = 0) -> list[Node]:
    if depth > MAX_NESTING:
        return [_paragraph(run) for run in _runs(lines)]
    out: list[Node] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = FENCE.match(line)
        if fence:
            marker = fence.group("fence")
            body: list[str] = []
            i += 1
            while i < len(lines):
                close = FENCE.match(lines[i])
                if (
                    close
                    and close.group("fence")[0] == marker[0]
                    and len(close.group("fence")) >= len(marker)
                    and not close.group("lang")
                ):
                    i += 1
                    break
                body.append(lines[i])
                i += 1
            node: Node = {"type": "codeBlock"}
            if fence.group("lang"):
                node["attrs"] = {"language": fence.group("lang")}
            text = "\n".join(body)
            if text:
                node["content"] = [{"type": "text", "text": text}]
            out.append(node)
            continue
        heading = _HEADING.match(line)
        if heading:
            out.append(
                {
                    "type": "heading",
                    "attrs": {"level": len(heading.group(1))},
                    "content": _inline(_heading_text(heading.group(2))),
                }
            )
            i += 1
            continue
        if _RULE.match(line):  # a thematic break wins over a list item ("* * *")
            out.append({"type": "rule"})
            i += 1
            continue
        if _QUOTE.match(line):
            quoted: list[str] = []
            while i < len(lines) and _QUOTE.match(lines[i]):
                quoted.append(_QUOTE.match(lines[i]).group(1))  # type: ignore[union-attr]
                i += 1
            inner = _nested(_blocks(quoted, depth + 1))
            out.append({"type": "blockquote", "content": inner or [_empty_paragraph()]})
            continue
        if _ITEM.match(line):
            node, i = _list(lines, i, depth)
            out.append(node)
            continue
        para = [line]
        i += 1
        while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
            para.append(lines[i])
            i += 1
        out.append(_paragraph(para))
    return out


def _runs(lines: Sequence[str]) -> Iterator[list[str]]:
    """The runs of non-blank lines."""
    run: list[str] = []
    for line in lines:
        if line.strip():
            run.append(line)
        elif run:
            yield run
            run = []
    if run:
        yield run


#: What ADF lets a blockquote and a listItem hold, of the nodes we write (media aside).
_NESTED_CHILDREN = ("paragraph", "bulletList", "orderedList", "codeBlock")
#: What a listItem may start with (ADF's ``listItem`` spec: lists only after one of these).
_LIST_ITEM_FIRST = ("paragraph", "codeBlock")


def _empty_paragraph() -> Node:
    return {"type": "paragraph", "content": []}


def _strong(node: Node) -> Node:
    """``node`` with the strong mark added (not to code: ADF combines code only with link)."""
    marks = node.get("marks") or []
    if node["type"] != "text" or any(m["type"] == "code" for m in marks):
        return node
    return {**node, "marks": _with_mark(marks, {"type": "strong"})}


def _nested(nodes: Iterable[Node]) -> list[Node]:
    """``nodes`` as children of a blockquote or a listItem, without losing any text.

    ADF allows only paragraphs, lists and code blocks there (and media, which we never write).
    A heading becomes a paragraph of strong text; a quote gives its own children (ADF quotes do
    not nest); a rule is left out, having no text; anything else becomes a paragraph of its text.
    """
    out: list[Node] = []
    for node in nodes:
        kind = node["type"]
        if kind in _NESTED_CHILDREN:
            out.append(node)
        elif kind == "heading":
            out.append({"type": "paragraph", "content": [_strong(n) for n in node.get("content") or ()]})
        elif kind == "blockquote":
            out.extend(_nested(node.get("content") or ()))
        elif adf_text(node):
            out.append({"type": "paragraph", "content": [_text(adf_text(node), ())]})
    return out


def _list(lines: list[str], i: int, depth: int) -> tuple[Node, int]:
    first = _ITEM.match(lines[i])
    assert first is not None
    indent = len(first.group("indent"))
    ordered = first.group("marker")[0].isdigit()
    items: list[Node] = []
    while i < len(lines):
        match = _ITEM.match(lines[i])
        if not match or len(match.group("indent")) != indent or match.group("marker")[0].isdigit() != ordered:
            break
        content_col = len(match.group("indent")) + len(match.group("marker")) + 1
        body = [match.group("text")]
        i += 1
        while i < len(lines):
            nxt = lines[i]
            if not nxt.strip():
                # a blank line ends the item unless indented content follows it
                if i + 1 < len(lines) and lines[i + 1].strip() and _item_indent(lines[i + 1]) > indent:
                    body.append("")
                    i += 1
                    continue
                break
            if _item_indent(nxt) <= indent and (_ITEM.match(nxt) or _starts_block(nxt)):
                break
            if _item_indent(nxt) <= indent and not body[-1].strip():
                break
            body.append(
                nxt[min(content_col, _item_indent(nxt)) :] if _item_indent(nxt) > indent else nxt.strip()
            )
            i += 1
        children = _nested(_blocks(body, depth + 1))
        if not children or children[0]["type"] not in _LIST_ITEM_FIRST:
            # "- - x": the item's first line is a list; ADF wants a paragraph before it
            children.insert(0, _empty_paragraph())
        items.append({"type": "listItem", "content": children})
        # skip blank lines between items of the same list
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and j != i:
            nxt_item = _ITEM.match(lines[j])
            if nxt_item and len(nxt_item.group("indent")) == indent:
                i = j
    node: Node = {"type": "orderedList" if ordered else "bulletList", "content": items}
    if ordered:
        start = int(first.group("marker")[:-1])
        node["attrs"] = {"order": start}
    return node, i


def markdown_to_adf(markdown: str) -> Node:
    """Render Markdown as an ADF ``doc`` (version 1)."""
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").expandtabs(4).split("\n")
    content = _blocks(lines)
    return {"type": "doc", "version": 1, "content": content}


# -- ADF -> Markdown ---------------------------------------------------------------------------


#: Nodes that sit in a line of text; any other node with content is a block, on lines of its own.
_INLINE_NODES = frozenset({"text", "hardBreak", "mention", "emoji", "inlineCard", "status", "date"})


def _marked(text: str, marks: Sequence[Node]) -> str:
    kinds = {m.get("type"): m for m in marks or ()}
    if kinds and text.strip() and text != text.strip():
        # Markdown delimiters must touch the text: keep surrounding spaces outside them
        lead = text[: len(text) - len(text.lstrip())]
        trail = text[len(text.rstrip()) :]
        return lead + _marked(text.strip(), marks) + trail
    if "code" in kinds:
        ticks = "``" if "`" in text else "`"
        text = f"{ticks}{text}{ticks}"
    else:
        if "strong" in kinds:
            text = f"**{text}**"
        if "em" in kinds:
            text = f"*{text}*"
        if "strike" in kinds:
            text = f"~~{text}~~"
    link = kinds.get("link")
    if link:
        href = (link.get("attrs") or {}).get("href", "")
        text = href if text == href else f"[{text}]({href})"
    return text


def _inline_md(nodes: Iterable[Node]) -> str:
    parts: list[str] = []
    for node in nodes or ():
        kind = node.get("type")
        attrs = node.get("attrs") or {}
        if kind == "text":
            parts.append(_marked(str(node.get("text", "")), node.get("marks") or ()))
        elif kind == "hardBreak":
            parts.append("\n")
        elif kind == "mention":
            parts.append(str(attrs.get("text") or f"@{attrs.get('id', '')}"))
        elif kind == "emoji":
            parts.append(str(attrs.get("text") or attrs.get("shortName") or ""))
        elif kind in ("inlineCard", "blockCard"):
            parts.append(str(attrs.get("url", "")))
        elif kind == "status":
            parts.append(f"[{attrs.get('text', '')}]")
        elif kind == "date":
            parts.append(_day(attrs.get("timestamp")))
        else:
            parts.append(_inline_md(node.get("content") or ()))
    return "".join(parts)


def _day(timestamp: object) -> str:
    """The day of a ``date`` node, whose timestamp is epoch milliseconds (midnight UTC)."""
    try:
        return datetime.fromtimestamp(int(str(timestamp)) / 1000, UTC).date().isoformat()
    except (ValueError, OverflowError, OSError):
        return str(timestamp or "")


def _task_list_md(items: Iterable[Node]) -> str:
    """A checklist (``- [x]`` done, ``- [ ]`` to do); a nested ``taskList`` is indented."""
    lines = []
    for item in items:
        if item.get("type") == "taskList":
            lines.append(_indent(_task_list_md(item.get("content") or ()), "  "))
            continue
        box = "[x]" if (item.get("attrs") or {}).get("state") == "DONE" else "[ ]"
        first, _, rest = _inline_md(item.get("content") or ()).partition("\n")
        lines.append(f"- {box} {first}" + ("\n" + _indent(rest, " " * 6) if rest else ""))
    return "\n".join(lines)


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def _block_md(node: Node) -> str:
    kind = node.get("type")
    content = node.get("content") or []
    attrs = node.get("attrs") or {}
    if kind == "paragraph":
        return _inline_md(content)
    if kind == "heading":
        return "#" * int(attrs.get("level", 1)) + " " + _inline_md(content)
    if kind == "codeBlock":
        text = "".join(str(c.get("text", "")) for c in content)
        fence = "````" if "```" in text else "```"
        return f"{fence}{attrs.get('language') or ''}\n{text}\n{fence}"
    if kind == "rule":
        return "---"
    if kind == "blockquote":
        return _indent(_blocks_md(content), "> ").replace("\n\n", "\n>\n")
    if kind in ("bulletList", "orderedList"):
        lines = []
        number = int(attrs.get("order", 1) or 1)
        for item in content:
            marker = f"{number}." if kind == "orderedList" else "-"
            number += 1
            body = _blocks_md(item.get("content") or [], sep="\n")
            pad = " " * (len(marker) + 1)
            first, _, rest = body.partition("\n")
            lines.append(f"{marker} {first}" + ("\n" + _indent(rest, pad) if rest else ""))
        return "\n".join(lines)
    if kind == "table":
        rows = []
        for r, row in enumerate(content):
            cells = [
                _blocks_md(c.get("content") or [], sep=" ").replace("|", "\\|").replace("\n", " ")
                for c in row.get("content") or []
            ]
            rows.append("| " + " | ".join(cells) + " |")
            if r == 0:
                rows.append("|" + "---|" * len(cells))
        return "\n".join(rows)
    if kind in _INLINE_NODES:
        # where a block was expected (beside blocks in a node we do not know): still its text
        return _inline_md([node])
    if kind == "media":
        # an attachment, which has no text; a mediaSingle's caption is read through its children
        return ""
    if kind in ("blockCard", "embedCard"):
        # a link shown as a card: its address is all the text it has
        return str(attrs.get("url") or (attrs.get("data") or {}).get("url") or "")
    if kind == "taskList":
        return _task_list_md(content)
    if content and all(c.get("type") in _INLINE_NODES for c in content):
        return _inline_md(content)
    return _blocks_md(content)


def _blocks_md(nodes: Iterable[Node], sep: str = "\n\n") -> str:
    return sep.join(part for part in (_block_md(n) for n in nodes or ()) if part != "")


def adf_to_markdown(doc: object) -> str:
    """Markdown of an ADF document; a plain string (older payloads) is returned as it is."""
    if doc is None:
        return ""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict):
        try:
            if doc.get("type") == "doc":
                return _blocks_md(doc.get("content") or [])
            return _block_md(doc)
        except RecursionError:
            # nested deeper than Python's stack (Jira's API takes such a description): its text,
            # so that one issue's description does not fail the listing of every issue
            return _plain_text(doc)
    return ""


def _plain_text(doc: object) -> str:
    """The text of an ADF document, each block on lines of its own, read without recursion."""
    parts: list[str] = []
    pending: list[object] = [doc]
    while pending:
        node = pending.pop()
        if isinstance(node, str):
            parts.append(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "text":
            parts.append(str(node.get("text", "")))
        elif kind == "hardBreak":
            parts.append("\n")
        children = node.get("content")
        if isinstance(children, list) and children:
            if kind not in _INLINE_NODES:
                pending.append("\n")
            pending.extend(reversed(children))
    return re.sub(r"\n{3,}", "\n\n", "".join(parts)).strip()


def adf_text(doc: object) -> str:
    """All the plain text of an ADF document (for searching and tests)."""
    if isinstance(doc, dict):
        own = str(doc.get("text", "")) if doc.get("type") == "text" else ""
        return own + "".join(adf_text(c) for c in doc.get("content") or [])
    if isinstance(doc, list):
        return "".join(adf_text(c) for c in doc)
    return ""
