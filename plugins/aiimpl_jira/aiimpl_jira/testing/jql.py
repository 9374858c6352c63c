"""A small JQL parser and evaluator for the fake Jira.

It understands the subset a tracker integration sends (``field = value``, ``!=``, ``in``,
``not in``, ``~``, ``AND``/``OR``/``NOT``, parentheses, ``ORDER BY``) over the fields the fake
keeps (``status``, ``project``, ``labels``, ``key``, ``summary``, ``statusCategory``), and
reports errors in Jira's words, so tests see the plugin's queries actually select the right
issues and bad clauses are refused the way Jira refuses them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KNOWN_FIELDS = frozenset(
    {
        "status",
        "project",
        "labels",
        "key",
        "issuekey",
        "summary",
        "statuscategory",
        "created",
        "updated",
        "issuetype",
        "type",
        "assignee",
        "priority",
    }
)
_KEYWORDS = frozenset({"and", "or", "not", "in", "order", "by", "asc", "desc", "empty", "null", "is"})

_TOKEN = re.compile(
    r"\s*(?:(?P<string>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')|(?P<op>!=|!~|<=|>=|=|~|<|>)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z0-9_.\-@*]+)|(?P<bad>\S))"
)


class JqlError(ValueError):
    """A query Jira would refuse; the message is Jira's."""


@dataclass(frozen=True)
class Token:
    """One lexical token: ``word``, ``value`` (a quoted string), ``op`` or ``punct``."""

    kind: str
    value: str


def tokenize(query: str) -> list[Token]:
    """Split a query into tokens; :class:`JqlError` for an unterminated string or a reserved character."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN.match(query, pos)
        if not match or match.end() == pos:
            break
        pos = match.end()
        kind = match.lastgroup or ""
        text = match.group(kind) if kind else ""
        if kind == "string":
            if len(text) < 2 or text[-1] != text[0]:
                raise JqlError("Error in the JQL Query: The quoted string has not been completed.")
            tokens.append(Token("value", re.sub(r"\\(.)", r"\1", text[1:-1])))
        elif kind == "bad":
            if text in "\"'":
                raise JqlError("Error in the JQL Query: The quoted string has not been completed.")
            raise JqlError(
                f"Error in the JQL Query: The character '{text}' is a reserved JQL character. "
                "You must enclose it in a string or use the escape '\\u0025' instead."
            )
        else:
            tokens.append(Token(kind, text))
    return tokens


Predicate = Callable[[dict[str, Any]], bool]


class _Parser:
    def __init__(self, query: str) -> None:
        self.tokens = tokenize(query)
        self.pos = 0
        self.projects: list[str] = []

    def peek(self, offset: int = 0) -> Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def word(self, offset: int = 0) -> str | None:
        token = self.peek(offset)
        return token.value.lower() if token is not None and token.kind == "word" else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise JqlError("Error in the JQL Query: Expecting a field name but got the end of the query.")
        self.pos += 1
        return token

    def parse(self) -> tuple[Predicate | None, list[tuple[str, bool]]]:
        predicate = None
        if self.peek() is not None and self.word() != "order":
            predicate = self.or_clause()
        order: list[tuple[str, bool]] = []
        if self.word() == "order":
            self.pos += 1
            if self.word() != "by":
                raise JqlError("Error in the JQL Query: Expecting 'by' after 'order'.")
            self.pos += 1
            while True:
                field = self.take()
                if field.kind != "word" or field.value.lower() not in KNOWN_FIELDS:
                    raise JqlError(f"Not able to sort using field '{field.value}'.")
                descending = False
                if self.word() in ("asc", "desc"):
                    descending = self.take().value.lower() == "desc"
                order.append((field.value.lower(), descending))
                if self.peek() is not None and self.peek().value == ",":  # type: ignore[union-attr]
                    self.pos += 1
                    continue
                break
        leftover = self.peek()
        if leftover is not None:
            raise JqlError(
                f"Error in the JQL Query: Expecting either 'OR' or 'AND' but got '{leftover.value}'."
            )
        return predicate, order

    def or_clause(self) -> Predicate:
        parts = [self.and_clause()]
        while self.word() == "or":
            self.pos += 1
            parts.append(self.and_clause())
        return parts[0] if len(parts) == 1 else (lambda issue: any(p(issue) for p in parts))

    def and_clause(self) -> Predicate:
        parts = [self.not_clause()]
        while self.word() == "and":
            self.pos += 1
            parts.append(self.not_clause())
        return parts[0] if len(parts) == 1 else (lambda issue: all(p(issue) for p in parts))

    def not_clause(self) -> Predicate:
        if self.word() == "not":
            self.pos += 1
            inner = self.not_clause()
            return lambda issue: not inner(issue)
        token = self.peek()
        if token is not None and token.value == "(" and token.kind == "punct":
            self.pos += 1
            inner = self.or_clause()
            close = self.peek()
            if close is None:
                raise JqlError("Error in the JQL Query: Expecting ')' but got the end of the query.")
            if close.value != ")":
                raise JqlError(f"Error in the JQL Query: Expecting ')' but got '{close.value}'.")
            self.pos += 1
            return inner
        return self.term()

    def term(self) -> Predicate:
        field_token = self.take()
        if field_token.kind not in ("word", "value") or field_token.value.lower() in _KEYWORDS:
            raise JqlError(f"Error in the JQL Query: Expecting a field name but got '{field_token.value}'.")
        field = field_token.value.lower()
        if field not in KNOWN_FIELDS:
            raise JqlError(
                f"Field '{field_token.value}' does not exist or you do not have permission to view it."
            )
        op_token = self.peek()
        if op_token is None:
            raise JqlError("Error in the JQL Query: Expecting operator but got the end of the query.")
        negate = False
        if op_token.kind == "word" and op_token.value.lower() == "not" and self.word(1) == "in":
            self.pos += 2
            op, negate = "in", True
        elif op_token.kind == "word" and op_token.value.lower() == "in":
            self.pos += 1
            op = "in"
        elif op_token.kind == "op":
            self.pos += 1
            op = op_token.value
        else:
            raise JqlError(f"Error in the JQL Query: Expecting operator but got '{op_token.value}'.")
        if op == "in":
            values = self.value_list()
            if field == "project":
                self.projects += values
            return lambda issue: _matches_any(issue, field, values) != negate
        value = self.value()
        if field == "project":
            self.projects.append(value)
        if op == "=":
            return lambda issue: _matches_any(issue, field, [value])
        if op == "!=":
            return lambda issue: not _matches_any(issue, field, [value])
        if op == "~":
            return lambda issue: value.casefold() in " ".join(_values(issue, field)).casefold()
        if op == "!~":
            return lambda issue: value.casefold() not in " ".join(_values(issue, field)).casefold()
        # ordering comparisons on dates: accepted, compared as strings
        return lambda issue: any(_compare(v, op, value) for v in _values(issue, field))

    def value(self) -> str:
        token = self.peek()
        if token is None:
            raise JqlError(
                "Error in the JQL Query: Expecting either a value, list or function but got the "
                "end of the query."
            )
        if token.kind not in ("word", "value") or (
            token.kind == "word" and token.value.lower() in ("and", "or", "order")
        ):
            raise JqlError(
                f"Error in the JQL Query: Expecting either a value, list or function but got '{token.value}'."
            )
        self.pos += 1
        return token.value

    def value_list(self) -> list[str]:
        token = self.peek()
        if token is None or token.value != "(":
            raise JqlError("Error in the JQL Query: Expecting '(' after 'in'.")
        self.pos += 1
        values = [self.value()]
        while self.peek() is not None and self.peek().value == ",":  # type: ignore[union-attr]
            self.pos += 1
            values.append(self.value())
        close = self.peek()
        if close is None or close.value != ")":
            raise JqlError(
                "Error in the JQL Query: Expecting ')' but got the end of the query."
                if close is None
                else f"Error in the JQL Query: Expecting ')' but got '{close.value}'."
            )
        self.pos += 1
        return values


def _values(issue: dict[str, Any], field: str) -> list[str]:
    field = {"issuekey": "key", "type": "issuetype"}.get(field, field)
    value = issue.get(field)
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(v) for v in value]
    return [str(value)]


def _matches_any(issue: dict[str, Any], field: str, wanted: list[str]) -> bool:
    have = {v.casefold() for v in _values(issue, field)}
    return any(w.casefold() in have for w in wanted)


def _compare(have: str, op: str, value: str) -> bool:
    return {"<": have < value, ">": have > value, "<=": have <= value, ">=": have >= value}.get(op, False)


@dataclass(frozen=True)
class Query:
    """A parsed query: a predicate over an issue's searchable values, and its ordering."""

    predicate: Predicate | None
    order: list[tuple[str, bool]]
    #: the values the query compares ``project`` with (Jira refuses one naming no project it shows)
    projects: tuple[str, ...] = ()

    def matches(self, issue: dict[str, Any]) -> bool:
        return self.predicate is None or self.predicate(issue)

    def sort(self, issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = list(issues)
        for field, descending in reversed(self.order):
            if field in ("key", "issuekey"):  # keys sort by project, then number: ENG-2 before ENG-10
                out.sort(key=lambda i: i.get("_natural_key") or (str(i.get("key")), 0), reverse=descending)
            else:
                out.sort(key=lambda i, f=field: _values(i, f)[0] if _values(i, f) else "", reverse=descending)
        return out


def parse(query: str) -> Query:
    """Parse a JQL query; :class:`JqlError` with Jira's message when it is invalid."""
    parser = _Parser(query)
    predicate, order = parser.parse()
    return Query(predicate, order, tuple(parser.projects))
