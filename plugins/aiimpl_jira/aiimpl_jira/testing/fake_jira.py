"""A fake Jira Cloud site for tests, served on 127.0.0.1 and checked against Jira's OpenAPI description.

:class:`FakeJira` keeps projects, issues (status, labels, links, ADF description and comments),
a workflow, fields with their contexts and options, and answers the REST v3 operations the plugin
uses the way Jira does: the token-paginated ``search/jql`` with a real (small) JQL evaluator,
``jql/parse`` with Jira's error messages, transitions limited by the workflow (with screens whose
required fields must have a value once the transition is made, sent with it or already on the
issue, :meth:`FakeJira.add_screen_field`), ADF comments with
their entity properties (listed with ``expand=properties``, newest first with ``orderBy=-created``),
refused past Jira's limits: 32,767 characters of text (400) and a number of comments per issue
(413, :attr:`FakeJira.comment_limit`).
:meth:`FakeJira.fail_next` answers a request with an error instead of carrying it out;
:meth:`FakeJira.lose_next_answer` carries it out and loses the answer (a proxy's 502, a dropped
connection); :meth:`FakeJira.alter_answers` changes what it answers (a broken or inconsistent page,
still within Jira's description).

Served through :class:`aiimpl_core.testing.fakeserver.OpenAPIFakeServer`, every request and every
answer is validated against ``jira/swagger-v3.v3.json``; on top of that the fake checks what the
description leaves free: ADF documents it receives (:func:`adf_violations`) and the shapes of the
issue field values it returns (against the description's component schemas). Findings land in
``violations``; :meth:`FakeJira.assert_clean` fails a test on any of them::

    with FakeJira() as jira:
        jira.add_issue("ENG-1", status="Ready")
        provider = JiraProvider(make_context(jira.config()))
        ...
        jira.assert_clean()
"""

from __future__ import annotations

import base64
import itertools
import json
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, jsonify, request

from ..adf import markdown_to_adf
from . import jql as jql_mod

SPEC_RELATIVE = ("jira", "swagger-v3.v3.json")

#: Status name → status category key (``new``, ``indeterminate``, ``done``).
DEFAULT_STATUSES: dict[str, str] = {
    "To Do": "new",
    "Ready": "new",
    "Planning": "indeterminate",
    "Plan Approved": "indeterminate",
    "Implementing": "indeterminate",
    "PR Ready": "indeterminate",
    "Planning Failed": "indeterminate",
    "Implementation Failed": "indeterminate",
    "Done": "done",
    "Won't Do": "done",
}
#: The resolutions of the fake site (a Done transition's screen offers them).
DEFAULT_RESOLUTIONS: tuple[str, ...] = ("Won't Do", "Duplicate", "Done", "Cannot Reproduce")
#: Jira's longest comment text, in characters (UTF-16 code units, as Java counts them)
COMMENT_MAX_CHARS = 32_767
#: Jira Cloud's limit on comments per issue; past it a new comment is refused with 413
COMMENTS_PER_ISSUE = 5_000
_CATEGORY = {
    "new": (2, "blue-gray", "To Do"),
    "indeterminate": (4, "yellow", "In Progress"),
    "done": (3, "green", "Done"),
}

# -- ADF checks --------------------------------------------------------------------------------

_BLOCKS = {
    "paragraph",
    "heading",
    "bulletList",
    "orderedList",
    "codeBlock",
    "blockquote",
    "rule",
    "panel",
    "table",
    "mediaSingle",
    "mediaGroup",
    "expand",
    "blockCard",
}
_INLINES = {"text", "hardBreak", "mention", "emoji", "inlineCard", "date", "status"}
_LIST_ITEM_CHILDREN = {"paragraph", "bulletList", "orderedList", "codeBlock", "mediaSingle"}
#: ADF's ``listItem`` is a tuple: it starts with one of these, lists come only after it.
_LIST_ITEM_FIRST = {"paragraph", "codeBlock", "mediaSingle"}
_QUOTE_CHILDREN = {"paragraph", "bulletList", "orderedList", "codeBlock", "mediaGroup", "mediaSingle"}
_MARKS = {"code", "em", "link", "strike", "strong", "subsup", "textColor", "underline"}


def adf_violations(doc: object) -> list[str]:
    """What makes ``doc`` an invalid ADF document (the structure rules of ADF v1); empty when valid."""
    problems: list[str] = []
    if not isinstance(doc, dict) or doc.get("type") != "doc":
        return ["the body is not an ADF document (type 'doc')"]
    if doc.get("version") != 1:
        problems.append("doc.version must be 1")
    content = doc.get("content")
    if not isinstance(content, list):
        return [*problems, "doc.content must be an array"]
    for i, node in enumerate(content):
        _check_node(node, _BLOCKS, f"doc.content[{i}]", problems)
    return problems


def _check_node(node: object, allowed: set[str], where: str, problems: list[str]) -> None:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        problems.append(f"{where}: not a node")
        return
    kind = node["type"]
    if kind not in allowed:
        problems.append(f"{where}: '{kind}' is not allowed here")
        return
    content = node.get("content")
    attrs = node.get("attrs") or {}
    children: Sequence[Any] = content if isinstance(content, list) else []
    if content is not None and not isinstance(content, list):
        problems.append(f"{where}.content must be an array")
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            problems.append(f"{where}: a text node needs non-empty text")
        marks = node.get("marks") or []
        kinds = [m.get("type") for m in marks if isinstance(m, dict)]
        if len(kinds) != len(marks) or any(k not in _MARKS for k in kinds):
            problems.append(f"{where}: unknown mark in {marks}")
        if len(set(kinds)) != len(kinds):
            problems.append(f"{where}: a mark is repeated")
        if "code" in kinds and set(kinds) - {"code", "link"}:
            problems.append(f"{where}: the code mark combines only with link")
        for mark in marks:
            if (
                isinstance(mark, dict)
                and mark.get("type") == "link"
                and not (mark.get("attrs") or {}).get("href")
            ):
                problems.append(f"{where}: a link mark needs attrs.href")
        return
    if kind in ("hardBreak", "rule", "mention", "emoji", "inlineCard", "date", "status"):
        if content:
            problems.append(f"{where}: '{kind}' has no content")
        return
    if kind in ("paragraph", "heading"):
        if kind == "heading" and attrs.get("level") not in range(1, 7):
            problems.append(f"{where}: heading level must be 1-6")
        for i, child in enumerate(children):
            _check_node(child, _INLINES, f"{where}.content[{i}]", problems)
        return
    if kind in ("bulletList", "orderedList"):
        if not children:
            problems.append(f"{where}: a list needs at least one listItem")
        if (
            kind == "orderedList"
            and "order" in attrs
            and (not isinstance(attrs["order"], int) or attrs["order"] < 0)
        ):
            problems.append(f"{where}: orderedList.attrs.order must be a non-negative integer")
        for i, child in enumerate(children):
            _check_node(child, {"listItem"}, f"{where}.content[{i}]", problems)
        return
    if kind == "listItem":
        if not children:
            problems.append(f"{where}: a listItem needs content")
        elif isinstance(children[0], dict) and children[0].get("type") not in _LIST_ITEM_FIRST:
            problems.append(
                f"{where}.content[0]: a listItem starts with a paragraph, codeBlock or mediaSingle, "
                f"not '{children[0].get('type')}'"
            )
        for i, child in enumerate(children):
            _check_node(child, _LIST_ITEM_CHILDREN, f"{where}.content[{i}]", problems)
        return
    if kind == "codeBlock":
        if "language" in attrs and not isinstance(attrs["language"], str):
            problems.append(f"{where}: codeBlock.attrs.language must be a string")
        for i, child in enumerate(children):
            if not isinstance(child, dict) or child.get("type") != "text" or child.get("marks"):
                problems.append(f"{where}.content[{i}]: a codeBlock holds unmarked text only")
            else:
                _check_node(child, {"text"}, f"{where}.content[{i}]", problems)
        return
    if kind == "blockquote":
        for i, child in enumerate(children):
            _check_node(child, _QUOTE_CHILDREN, f"{where}.content[{i}]", problems)
        return
    for i, child in enumerate(children):  # panels, tables …: accept any block or inline inside
        _check_node(
            child,
            _BLOCKS | _INLINES | {"listItem", "tableRow", "tableCell", "tableHeader", "media"},
            f"{where}.content[{i}]",
            problems,
        )


# -- state -------------------------------------------------------------------------------------


@dataclass
class FakeComment:
    """A comment as the fake stores it: its ADF body as received, and its entity properties
    (key → value) given on create."""

    id: str
    body: dict[str, Any]
    created: datetime
    author: str = "AI-Implement"
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeLink:
    """``key`` is blocked by ``blocker`` (a "Blocks" link, inward from ``key``'s side)."""

    id: str
    blocked: str
    blocker: str
    type_name: str = "Blocks"


@dataclass
class FakeIssue:
    """An issue of the fake site; ``status`` is a status name of the fake's workflow."""

    key: str
    id: str
    summary: str
    status: str
    description: dict[str, Any] | None = None
    labels: list[str] = field(default_factory=list)
    comments: list[FakeComment] = field(default_factory=list)
    #: the other fields' values (``resolution``, custom fields …), set through a transition's screen
    #: or :meth:`FakeJira.set_field_value`: field id → the value as stored
    values: dict[str, Any] = field(default_factory=dict)
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def project(self) -> str:
        return self.key.rsplit("-", 1)[0]


def _stamp(at: datetime) -> str:
    # Jira writes offsets as "+0000", which the description's own ``date-time`` format rejects;
    # the fake answers RFC 3339 ("+00:00") so its answers validate. The provider reads both.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")


class FakeJira:
    """A Jira Cloud site in memory, served by an :class:`OpenAPIFakeServer`.

    :param email: / :param api_token: the basic credentials it accepts.
    :param bearer_token: a bearer token it accepts too.
    :param statuses: status name → category key; defaults to the orchestrator's workflow.
    :param workflow: status name → statuses reachable from it. ``None``: every status is
        reachable from every other (global transitions), the recommended set-up.
    :param spec_path: Jira's OpenAPI description (found under the shared specs by default).
    """

    def __init__(
        self,
        *,
        email: str = "bot@acme.test",
        api_token: str = "jira-api-token-secret",
        bearer_token: str | None = None,
        statuses: Mapping[str, str] | None = None,
        workflow: Mapping[str, Iterable[str]] | None = None,
        spec_path: str | None = None,
    ) -> None:
        self.email = email
        self.api_token = api_token
        self.bearer_token = bearer_token
        self.statuses: dict[str, str] = dict(statuses or DEFAULT_STATUSES)
        self.workflow: dict[str, list[str]] | None = (
            {k: list(v) for k, v in workflow.items()} if workflow is not None else None
        )
        self.issues: dict[str, FakeIssue] = {}
        self.links: list[FakeLink] = []
        #: target status → the fields of the screen of the transitions to it (field id → metadata)
        self.screens: dict[str, dict[str, dict[str, Any]]] = {}
        self.projects: dict[str, str] = {}
        self.fields: list[dict[str, Any]] = list(_default_fields())
        self.contexts: dict[str, list[dict[str, Any]]] = {}
        self.options: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.violations: list[str] = []
        #: (method, path suffix) → queue of (status, body, headers) answered before the real one
        self.failures: dict[tuple[str, str], list[tuple[int, Any, dict[str, str]]]] = {}
        #: (method, path suffix) → queue of what replaces the answer of a request carried out:
        #: a status (a proxy's error page), or ``None`` (the connection is dropped)
        self.lost_answers: dict[tuple[str, str], list[int | None]] = {}
        #: (method, path suffix) → what changes each JSON answer to a matching request (:meth:`alter_answers`)
        self.answer_changes: dict[tuple[str, str], Callable[[Any, dict[str, Any]], Any]] = {}
        #: the comments an issue may hold: at this many, ``POST …/comment`` answers 413 as Jira
        #: does (a test lowers it rather than adding thousands of comments)
        self.comment_limit = COMMENTS_PER_ISSUE
        self.lock = threading.RLock()
        self._ids = itertools.count(10001)
        self._clock = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        self.app = self._make_app()
        self.spec_path = spec_path or _default_spec_path()
        self.server: Any = None

    # -- lifecycle --

    def start(self) -> FakeJira:
        from aiimpl_core.testing.fakeserver import OpenAPIFakeServer

        self.server = OpenAPIFakeServer(self.app, self.spec_path).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> FakeJira:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return str(self.server.url)

    def config(self, **extra: Any) -> dict[str, Any]:
        """The ``AIIMPL_JIRA_*`` configuration that points the plugin here."""
        values: dict[str, Any] = {"AIIMPL_JIRA_URL": self.url}
        if self.bearer_token:
            values["AIIMPL_JIRA_BEARER_TOKEN"] = self.bearer_token
        else:
            values["AIIMPL_JIRA_EMAIL"] = self.email
            values["AIIMPL_JIRA_API_TOKEN"] = self.api_token
        values.update(extra)
        return values

    @property
    def requests(self) -> list[Any]:
        return list(self.server.requests) if self.server is not None else []

    def requests_to(self, method: str, path_suffix: str = "") -> list[Any]:
        return self.server.requests_to(method, path_suffix)

    def assert_clean(self) -> None:
        """Fail when a request or answer broke Jira's description or the fake's own checks."""
        problems = list(self.violations)
        if self.server is not None:
            problems.extend(self.server.violations)
        if problems:
            raise AssertionError(f"{len(problems)} problem(s) on the fake Jira:\n" + "\n\n".join(problems))

    # -- building state --

    def _tick(self) -> datetime:
        self._clock += timedelta(minutes=1)
        return self._clock

    def add_issue(
        self,
        key: str,
        *,
        summary: str = "An issue",
        status: str = "Ready",
        description: str | dict[str, Any] | None = None,
        labels: Iterable[str] = (),
    ) -> FakeIssue:
        """Add an issue; a Markdown ``description`` is stored as ADF like Jira stores it."""
        if status not in self.statuses:
            raise ValueError(f"unknown status {status!r}")
        adf = markdown_to_adf(description) if isinstance(description, str) else description
        now = self._tick()
        issue = FakeIssue(
            key=key,
            id=str(next(self._ids)),
            summary=summary,
            status=status,
            description=adf,
            labels=list(labels),
            created=now,
            updated=now,
        )
        with self.lock:
            self.issues[key] = issue
            self.projects.setdefault(issue.project, str(next(self._ids)))
        return issue

    def add_project(self, key: str) -> str:
        """Add a project without issues (adding an issue adds its project too); return its id."""
        with self.lock:
            return self.projects.setdefault(key, str(next(self._ids)))

    def link_blocks(self, blocker: str, blocked: str, type_name: str = "Blocks") -> None:
        """Record "``blocker`` blocks ``blocked``"."""
        self.links.append(
            FakeLink(id=str(next(self._ids)), blocked=blocked, blocker=blocker, type_name=type_name)
        )

    def set_status(self, key: str, status: str) -> None:
        """Move an issue as a person would (no workflow check)."""
        self.issues[key].status = status
        self.issues[key].updated = self._tick()

    def set_field_value(self, key: str, field_id: str, value: Any) -> None:
        """Give an issue's field a value as a person would (``None`` empties it)."""
        with self.lock:
            _store_value(self.issues[key], field_id, value)

    def add_screen_field(
        self,
        target: str,
        field_id: str,
        name: str,
        *,
        required: bool = True,
        schema: Mapping[str, Any] | None = None,
        allowed_values: Sequence[Any] | None = None,
        default: Any = None,
    ) -> dict[str, Any]:
        """Put a field on the screen of the transitions to ``target`` and return its metadata (a
        ``FieldMetadata``, as ``expand=transitions.fields`` lists it).

        A transition then refuses (400) a request that leaves out a required field the issue has no
        value for (one it has keeps its value, as in Jira), gives a value that is not among
        ``allowed_values`` (matched by ``id``, ``name`` or ``value``), or sets a field its screen
        does not have.
        """
        if target not in self.statuses:
            raise ValueError(f"unknown status {target!r}")
        meta: dict[str, Any] = {
            "required": required,
            "schema": dict(schema or {"type": "string"}),
            "name": name,
            "key": field_id,
            "hasDefaultValue": default is not None,
            "operations": ["set"],
        }
        if allowed_values is not None:
            meta["allowedValues"] = list(allowed_values)
        if default is not None:
            meta["defaultValue"] = default
        self.screens.setdefault(target, {})[field_id] = meta
        return meta

    def require_resolution(self, target: str = "Done", names: Sequence[str] = DEFAULT_RESOLUTIONS) -> None:
        """The transitions to ``target`` ask for a resolution (required, one of ``names``), as the
        "Resolve issue" screen of Jira's default workflows does."""
        values = [
            {"id": str(10000 + i), "name": name, "description": f"The issue is resolved: {name}."}
            for i, name in enumerate(names)
        ]
        self.add_screen_field(
            target,
            "resolution",
            "Resolution",
            schema={"type": "resolution", "system": "resolution"},
            allowed_values=values,
        )

    def add_select_field(self, field_id: str, name: str, contexts: Mapping[str, Sequence[str]]) -> None:
        """A custom select field with ``contexts``: context name → option values."""
        self.fields.append(
            {
                "id": field_id,
                "key": field_id,
                "name": name,
                "custom": True,
                "orderable": True,
                "navigable": True,
                "searchable": True,
                "clauseNames": [f"cf[{field_id.rsplit('_', 1)[-1]}]", name],
                "schema": {
                    "type": "option",
                    "custom": "com.atlassian.jira.plugin.system.customfieldtypes:select",
                    "customId": int(field_id.rsplit("_", 1)[-1]),
                },
            }
        )
        self.contexts[field_id] = []
        for ctx_name, values in contexts.items():
            ctx_id = str(next(self._ids))
            self.contexts[field_id].append(
                {
                    "id": ctx_id,
                    "name": ctx_name,
                    "description": "",
                    "isGlobalContext": True,
                    "isAnyIssueType": True,
                }
            )
            self.options[(field_id, ctx_id)] = [
                {"id": str(next(self._ids)), "value": v, "disabled": False} for v in values
            ]

    def add_text_field(self, field_id: str, name: str) -> None:
        """A custom text field: it has a context but no options (Jira answers 400 for its options)."""
        self.fields.append(
            {
                "id": field_id,
                "key": field_id,
                "name": name,
                "custom": True,
                "orderable": True,
                "navigable": True,
                "searchable": True,
                "clauseNames": [name],
                "schema": {
                    "type": "string",
                    "custom": "com.atlassian.jira.plugin.system.customfieldtypes:textfield",
                    "customId": int(field_id.rsplit("_", 1)[-1]),
                },
            }
        )
        self.contexts[field_id] = [
            {
                "id": str(next(self._ids)),
                "name": "Default",
                "description": "",
                "isGlobalContext": True,
                "isAnyIssueType": True,
            }
        ]

    def fail_next(
        self,
        method: str,
        path_suffix: str,
        status: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        The body defaults to a Jira ``ErrorCollection``.
        """
        if body is None:
            body = {"errorMessages": [f"Injected failure {status}"], "errors": {}}
        queue = self.failures.setdefault((method.upper(), path_suffix), [])
        queue.extend([(status, body, dict(headers or {}))] * times)

    def lose_next_answer(
        self, method: str, path_suffix: str, status: int | None = 502, times: int = 1
    ) -> None:
        """Carry out the next ``times`` matching requests, then lose their answers: a proxy's
        ``status`` (an HTML error page) replaces each, or with ``status=None`` the connection is
        dropped before any answer, as when the client's timeout ran out first."""
        self.lost_answers.setdefault((method.upper(), path_suffix), []).extend([status] * times)

    def alter_answers(
        self, method: str, path_suffix: str, alter: Callable[[Any, dict[str, Any]], Any] | None
    ) -> None:
        """Have ``alter(answer, asked)`` change the JSON of each successful answer to a matching
        request, from now on (``None``: answer as before). ``asked`` is the request's JSON body, or
        for a ``GET`` its query parameters (as strings); ``alter`` returns the answer to send, or
        ``None`` when it changed the one given in place.

        A test makes the fake answer as a broken or inconsistent Jira would (a page that says more
        follow without a token, a ``total`` no page reaches): the answer is still validated against
        Jira's description, and the request still is.
        """
        with self.lock:
            if alter is None:
                self.answer_changes.pop((method.upper(), path_suffix), None)
            else:
                self.answer_changes[(method.upper(), path_suffix)] = alter

    def add_comment(
        self,
        key: str,
        text: str,
        *,
        author: str = "Ada Lovelace",
        properties: Mapping[str, Any] | None = None,
    ) -> FakeComment:
        """A comment made on the site (a person's, another app's), with optional entity properties."""
        with self.lock:
            issue = self.issues[key]
            comment = FakeComment(
                id=str(next(self._ids)),
                body=markdown_to_adf(text),
                created=self._tick(),
                author=author,
                properties=dict(properties or {}),
            )
            issue.comments.append(comment)
            issue.updated = comment.created
            return comment

    def comment_docs(self, key: str) -> list[dict[str, Any]]:
        return [c.body for c in self.issues[key].comments]

    # -- representation --

    def _status_json(self, name: str) -> dict[str, Any]:
        category = self.statuses[name]
        cat_id, color, cat_name = _CATEGORY[category]
        status_id = str(10000 + sorted(self.statuses).index(name))
        return {
            "self": f"{self.url}/rest/api/3/status/{status_id}",
            "description": "",
            "iconUrl": f"{self.url}/images/icons/statuses/generic.png",
            "name": name,
            "id": status_id,
            "statusCategory": {
                "self": f"{self.url}/rest/api/3/statuscategory/{cat_id}",
                "id": cat_id,
                "key": category,
                "colorName": color,
                "name": cat_name,
            },
        }

    def _project_json(self, key: str) -> dict[str, Any]:
        pid = self.projects.setdefault(key, str(next(self._ids)))
        return {
            "self": f"{self.url}/rest/api/3/project/{pid}",
            "id": pid,
            "key": key,
            "name": f"Project {key}",
            "projectTypeKey": "software",
            "simplified": False,
        }

    def _linked(self, key: str) -> dict[str, Any]:
        other = self.issues.get(key)
        data: dict[str, Any] = {"key": key, "self": f"{self.url}/rest/api/3/issue/{key}"}
        if other is not None:
            data["id"] = other.id
            data["self"] = f"{self.url}/rest/api/3/issue/{other.id}"
            data["fields"] = {"summary": other.summary, "status": self._status_json(other.status)}
        return data

    def _links_json(self, key: str) -> list[dict[str, Any]]:
        out = []
        for link in self.links:
            link_type = {
                "id": "10000",
                "name": link.type_name,
                "inward": "is blocked by",
                "outward": "blocks",
                "self": f"{self.url}/rest/api/3/issueLinkType/10000",
            }
            if link.type_name != "Blocks":
                link_type = {
                    "id": "10001",
                    "name": link.type_name,
                    "inward": "relates to",
                    "outward": "relates to",
                    "self": f"{self.url}/rest/api/3/issueLinkType/10001",
                }
            if link.blocked == key:
                out.append(
                    {
                        "id": link.id,
                        "self": f"{self.url}/rest/api/3/issueLink/{link.id}",
                        "type": link_type,
                        "inwardIssue": self._linked(link.blocker),
                    }
                )
            elif link.blocker == key:
                out.append(
                    {
                        "id": link.id,
                        "self": f"{self.url}/rest/api/3/issueLink/{link.id}",
                        "type": link_type,
                        "outwardIssue": self._linked(link.blocked),
                    }
                )
        return out

    def _comment_json(
        self, issue: FakeIssue, comment: FakeComment, *, properties: bool = False
    ) -> dict[str, Any]:
        author = {
            "accountId": "5b10a2844c20165700ede21g",
            "active": True,
            "displayName": comment.author,
            "self": f"{self.url}/rest/api/3/user?accountId=5b10a2844c20165700ede21g",
        }
        data: dict[str, Any] = {
            "self": f"{self.url}/rest/api/3/issue/{issue.id}/comment/{comment.id}",
            "id": comment.id,
            "author": author,
            "updateAuthor": author,
            "body": comment.body,
            "created": _stamp(comment.created),
            "updated": _stamp(comment.created),
            "jsdPublic": True,
        }
        if properties:  # expand=properties
            data["properties"] = [{"key": k, "value": v} for k, v in comment.properties.items()]
        return data

    def _comments_page(
        self,
        issue: FakeIssue,
        start: int = 0,
        limit: int = 100,
        *,
        newest_first: bool = False,
        properties: bool = False,
    ) -> dict[str, Any]:
        ordered = sorted(issue.comments, key=lambda c: (c.created, int(c.id)), reverse=newest_first)
        chunk = ordered[start : start + limit]
        return {
            "comments": [self._comment_json(issue, c, properties=properties) for c in chunk],
            "maxResults": limit,
            "total": len(issue.comments),
            "startAt": start,
        }

    def _field_values(self, issue: FakeIssue, wanted: Sequence[str]) -> dict[str, Any]:
        everything = "*all" in wanted or "*navigable" in wanted
        values: dict[str, Any] = {
            "summary": issue.summary,
            "description": issue.description,
            "status": self._status_json(issue.status),
            "project": self._project_json(issue.project),
            "labels": list(issue.labels),
            "issuelinks": self._links_json(issue.key),
            "created": _stamp(issue.created),
            "updated": _stamp(issue.updated),
            "comment": self._comments_page(issue, 0, 5),  # Jira embeds a first page only
            "resolution": issue.values.get("resolution"),
        }
        values.update({k: v for k, v in issue.values.items() if k not in values})
        # a field of the site the issue has no value for is listed as null when asked for by id
        known = {str(f["id"]) for f in self.fields} | {f for screen in self.screens.values() for f in screen}
        values.update({k: None for k in wanted if k in known and k not in values})
        return {k: v for k, v in values.items() if everything or k in wanted}

    def _issue_json(self, issue: FakeIssue, wanted: Sequence[str], expand: str = "") -> dict[str, Any]:
        data: dict[str, Any] = {
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue.id,
            "self": f"{self.url}/rest/api/3/issue/{issue.id}",
            "key": issue.key,
            "fields": self._field_values(issue, wanted),
        }
        expanded = expand.split(",")
        # "transitions.fields" expands the transitions and, in each, the fields of its screen
        if "transitions" in expanded or "transitions.fields" in expanded:
            data["transitions"] = self._transitions_json(issue, fields="transitions.fields" in expanded)
        self._check_fields(data["fields"])
        return data

    def _transitions_json(self, issue: FakeIssue, *, fields: bool = False) -> list[dict[str, Any]]:
        if self.workflow is None:
            targets = [s for s in self.statuses if s != issue.status]
        else:
            targets = list(self.workflow.get(issue.status, []))
        out = []
        for target in targets:
            tid = str(11 + sorted(self.statuses).index(target))
            screen = self.screens.get(target)
            transition: dict[str, Any] = {
                "id": tid,
                "name": f"Move to {target}",
                "to": self._status_json(target),
                "hasScreen": bool(screen),
                "isGlobal": self.workflow is None,
                "isInitial": False,
                "isAvailable": True,
                "isConditional": False,
                "isLooped": False,
            }
            if fields:  # expand=transitions.fields: {} for a transition without a screen
                transition["fields"] = json.loads(json.dumps(screen or {}))
                for name, meta in transition["fields"].items():
                    self._validate(meta, "FieldMetadata", f"transition {tid} field {name}")
            out.append(transition)
        return out

    def _screen_input(
        self, target: str, given: Any, issue: FakeIssue
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The field values a transition of ``issue`` to ``target`` stores, and Jira's errors by
        field for what it refuses (a field off the screen, a value not allowed, a required field
        empty after the transition).

        As in Jira, a required field is checked against the issue's value after the transition: a
        field left out of the request keeps the value it has, so only an empty one is refused.
        """
        screen = self.screens.get(target) or {}
        given = given if isinstance(given, dict) else {}
        values: dict[str, Any] = {}
        problems: dict[str, str] = {}
        for field_id, value in given.items():
            meta = screen.get(field_id)
            if meta is None:
                problems[field_id] = (
                    f"Field '{field_id}' cannot be set. It is not on the appropriate screen, or unknown."
                )
                continue
            if "allowedValues" in meta:
                items = value if isinstance(value, list) else [value]
                chosen = [_allowed(meta["allowedValues"], v) for v in items]
                if any(c is None for c in chosen):
                    problems[field_id] = f"Could not find valid 'id' or 'name' in {meta['name']} object."
                    continue
                value = chosen if isinstance(value, list) else chosen[0]
            values[field_id] = value
        for field_id, meta in screen.items():
            after = values[field_id] if field_id in values else _current_value(issue, field_id)
            if meta["required"] and after in (None, "", [], {}) and field_id not in problems:
                problems[field_id] = f"{meta['name']} is required."
        return values, problems

    def _check_fields(self, fields: Mapping[str, Any]) -> None:
        """The description leaves issue fields free-form; check each against its own schema."""
        checks = {
            "status": "StatusDetails",
            "project": "ProjectDetails",
            "comment": "PageOfComments",
            "resolution": "Resolution",
        }
        for name, schema in checks.items():
            if fields.get(name) is not None:
                self._validate(fields[name], schema, f"fields.{name}")
        for i, link in enumerate(fields.get("issuelinks") or []):
            self._validate(link["type"], "IssueLinkType", f"fields.issuelinks[{i}].type")
            for side in ("inwardIssue", "outwardIssue"):
                if side in link:
                    self._validate(link[side], "LinkedIssue", f"fields.issuelinks[{i}].{side}")
        if fields.get("description") is not None:
            for problem in adf_violations(fields["description"]):
                self.violations.append(f"fake answered an invalid ADF description: {problem}")

    def _validate(self, value: Any, schema_name: str, where: str) -> None:
        for problem in _schema_problems(self.spec_path, value, schema_name):
            self.violations.append(f"fake answered {where} that breaks {schema_name}: {problem}")

    # -- the Flask app --

    def _make_app(self) -> Flask:
        app = Flask("fake_jira")
        fake = self
        api = "/rest/api/3"

        def error(status: int, *messages: str, **errors: str) -> Response:
            body = {"errorMessages": list(messages), "errors": errors}
            fake._validate(body, "ErrorCollection", "an error body")
            resp = jsonify(body)
            resp.status_code = status
            return _undocumented_if_needed(resp)

        def for_this_request(entries: dict[tuple[str, str], Any]) -> Any:
            """The first non-empty entry keyed by this request's method and a suffix of its path."""
            return next(
                (
                    entry
                    for (method, suffix), entry in entries.items()
                    if entry and request.method == method and request.path.endswith(suffix)
                ),
                None,
            )

        @app.before_request
        def _auth_and_failures() -> Response | None:
            auth = request.headers.get("Authorization", "")
            basic = "Basic " + base64.b64encode(f"{fake.email}:{fake.api_token}".encode()).decode()
            accepted = {basic} | ({f"Bearer {fake.bearer_token}"} if fake.bearer_token else set())
            if auth not in accepted:
                resp = Response(
                    "Client must be authenticated to access this resource.", 401, content_type="text/plain"
                )
                return _undocumented_if_needed(resp)
            with fake.lock:
                queue = for_this_request(fake.failures)
                if queue:
                    status, body, headers = queue.pop(0)
                    resp = jsonify(body)
                    resp.status_code = status
                    resp.headers.update(headers)
                    return _undocumented_if_needed(resp)
            return None

        @app.after_request
        def _lose_answer(resp: Response) -> Response:
            with fake.lock:
                lost = for_this_request(fake.lost_answers)
                if lost is None:
                    return resp
                status = lost.pop(0)
            if status is None:
                # the request was carried out; the client never hears back
                request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
                return resp
            page = f"<html><body><h1>{status} {HTTPStatus(status).phrase}</h1></body></html>"
            from aiimpl_core.testing.fakeserver import UNDOCUMENTED_HEADER

            # a proxy's page: not Jira's, so not in Jira's description
            return Response(page, status, content_type="text/html", headers={UNDOCUMENTED_HEADER: "1"})

        @app.after_request
        def _alter_answer(resp: Response) -> Response:
            # (registered after _lose_answer, so run before it: a lost answer stays lost)
            with fake.lock:
                alter = for_this_request(fake.answer_changes)
            if alter is None or not resp.is_json or not 200 <= resp.status_code < 300:
                return resp
            answer = resp.get_json()
            body = request.get_json(silent=True) if request.method != "GET" else None
            asked = body if isinstance(body, dict) else request.args.to_dict()
            changed = alter(answer, dict(asked))
            resp.set_data(json.dumps(answer if changed is None else changed))
            return resp

        def get_issue_or_404(key: str) -> FakeIssue | Response:
            issue = fake.issues.get(key) or next((i for i in fake.issues.values() if i.id == key), None)
            if issue is None:
                return error(404, "Issue does not exist or you do not have permission to see it.")
            return issue

        @app.post(f"{api}/search/jql")
        def search() -> Any:
            body = request.get_json(silent=True) or {}
            query_text = str(body.get("jql") or "")
            try:
                query = jql_mod.parse(query_text)
            except jql_mod.JqlError as exc:
                return error(400, str(exc))
            if query.predicate is None:
                return error(
                    400,
                    "Unbounded JQL queries are not allowed here. Please add a search restriction "
                    "to your query.",
                )
            with fake.lock:
                known = {p.casefold() for p in fake.projects}
            unknown = [p for p in dict.fromkeys(query.projects) if p.casefold() not in known]
            if unknown:  # (a project deleted, renamed, or that the account may not browse: Jira's words)
                said = (f"The value '{p}' does not exist for the field 'project'." for p in unknown)
                return error(400, *said)
            limit = int(body.get("maxResults") or 50)
            offset = 0
            token = body.get("nextPageToken")
            if token:
                try:
                    offset = int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
                except (ValueError, IndexError):
                    return error(400, "The provided next page token is invalid or expired.")
            wanted = [f.strip() for f in body.get("fields") or ["id"] for f in f.split(",")]
            with fake.lock:
                matching = [i for i in fake.issues.values() if query.matches(fake._searchable(i))]
                ordered = [fake.issues[d["key"]] for d in query.sort([fake._searchable(i) for i in matching])]
                chunk = ordered[offset : offset + limit]
                result: dict[str, Any] = {
                    "issues": [fake._issue_json(i, wanted) for i in chunk],
                    "isLast": offset + limit >= len(ordered),
                }
            if not result["isLast"]:
                result["nextPageToken"] = base64.urlsafe_b64encode(f"page:{offset + limit}".encode()).decode()
            return jsonify(result)

        @app.get(f"{api}/issue/<key>")
        def get_issue(key: str) -> Any:
            with fake.lock:
                found = get_issue_or_404(key)
                if isinstance(found, Response):
                    return found
                wanted = [f for v in request.args.getlist("fields") for f in v.split(",")] or ["*all"]
                return jsonify(fake._issue_json(found, wanted, request.args.get("expand", "")))

        @app.get(f"{api}/issue/<key>/comment")
        def get_comments(key: str) -> Any:
            with fake.lock:
                found = get_issue_or_404(key)
                if isinstance(found, Response):
                    return found
                order = request.args.get("orderBy", "created")
                if order not in ("created", "+created", "-created"):
                    return error(400, f"The orderBy value '{order}' is not supported.")
                # (this operation expands only renderedBody: a comment's properties come from
                # POST /comment/list)
                page = fake._comments_page(
                    found,
                    int(request.args.get("startAt", 0)),
                    int(request.args.get("maxResults", 100)),
                    newest_first=order == "-created",
                )
                fake._validate(page, "PageOfComments", "comment page")
                return jsonify(page)

        @app.post(f"{api}/comment/list")
        def list_comments() -> Any:
            body = request.get_json(silent=True)
            ids = body.get("ids") if isinstance(body, dict) else None
            numbers = isinstance(ids, list) and all(type(i) is int for i in ids)
            if not numbers:
                return error(400, "The request body must hold a list of comment IDs.")
            if len(ids) > 1000:
                return error(400, "A maximum of 1000 IDs can be specified.")
            expand = request.args.get("expand", "").split(",")
            with fake.lock:
                wanted = {str(i) for i in ids}
                found_comments = [
                    (issue, c) for issue in fake.issues.values() for c in issue.comments if c.id in wanted
                ]
                values = [fake._comment_json(issue, c, properties="properties" in expand)
                          for issue, c in sorted(found_comments, key=lambda pair: int(pair[1].id))]
            page = {"isLast": True, "maxResults": 1000, "startAt": 0, "total": len(values), "values": values}
            fake._validate(page, "PageBeanComment", "comment list")
            return jsonify(page)

        @app.post(f"{api}/issue/<key>/comment")
        def add_comment(key: str) -> Any:
            body = request.get_json(silent=True) or {}
            problems = adf_violations(body.get("body"))
            if problems:
                fake.violations.extend(f"comment on {key} is not valid ADF: {p}" for p in problems)
                return error(400, "INVALID_INPUT", comment="Comment body is not valid!")
            properties: dict[str, Any] = {}
            for prop in body.get("properties") or []:
                problem = _property_problem(prop)
                if problem:
                    fake.violations.append(f"comment property on {key}: {problem}")
                    return error(400, problem)
                properties[prop["key"]] = prop["value"]
            if _text_units(body["body"]) > COMMENT_MAX_CHARS:
                return error(
                    400,
                    comment=f"The entered text is too long. It exceeds the allowed limit of "
                    f"{COMMENT_MAX_CHARS:,} characters.",
                )
            with fake.lock:
                found = get_issue_or_404(key)
                if isinstance(found, Response):
                    return found
                if len(found.comments) >= fake.comment_limit:
                    # (the description: "the per-issue limit has been breached for … comments")
                    return error(
                        413, f"This issue has reached the limit of {fake.comment_limit:,} comments."
                    )
                comment = FakeComment(
                    id=str(next(fake._ids)), body=body["body"], created=fake._tick(), properties=properties
                )
                found.comments.append(comment)
                found.updated = comment.created
                resp = jsonify(fake._comment_json(found, comment))
                resp.status_code = 201
                return resp

        @app.get(f"{api}/issue/<key>/transitions")
        def get_transitions(key: str) -> Any:
            with fake.lock:
                found = get_issue_or_404(key)
                if isinstance(found, Response):
                    return found
                with_fields = "transitions.fields" in request.args.get("expand", "").split(",")
                transitions = fake._transitions_json(found, fields=with_fields)
                only = request.args.get("transitionId")
                if only is not None:  # an unknown or unavailable one: an empty list, as Jira answers
                    transitions = [t for t in transitions if t["id"] == only]
                return jsonify({"expand": "transitions", "transitions": transitions})

        @app.post(f"{api}/issue/<key>/transitions")
        def do_transition(key: str) -> Any:
            body = request.get_json(silent=True) or {}
            wanted = str((body.get("transition") or {}).get("id") or "")
            with fake.lock:
                found = get_issue_or_404(key)
                if isinstance(found, Response):
                    return found
                match = next((t for t in fake._transitions_json(found) if t["id"] == wanted), None)
                if match is None:
                    return error(400, f"Transition id '{wanted}' is not valid for this issue.")
                target = match["to"]["name"]
                values, problems = fake._screen_input(target, body.get("fields"), found)
                if problems:
                    return error(400, **problems)
                found.status = target
                for field_id, value in values.items():
                    _store_value(found, field_id, value)
                found.updated = fake._tick()
            # Jira answers 204 with no body; the description declares a JSON body for it, which no
            # real answer has, so this answer is exempt from response validation.
            from aiimpl_core.testing.fakeserver import UNDOCUMENTED_HEADER

            return Response(status=204, headers={UNDOCUMENTED_HEADER: "1"})

        @app.get(f"{api}/myself")
        def myself() -> Any:
            return jsonify(
                {
                    "accountId": "5b10a2844c20165700ede21g",
                    "accountType": "atlassian",
                    "active": True,
                    "displayName": "AI-Implement bot",
                    "emailAddress": fake.email,
                    "timeZone": "UTC",
                    "self": f"{fake.url}/rest/api/3/user?accountId=5b10a2844c20165700ede21g",
                }
            )

        @app.get(f"{api}/project/<key>/statuses")
        def project_statuses(key: str) -> Any:
            if key not in fake.projects:
                return error(404, f"No project could be found with key '{key}'.")
            statuses = [fake._status_json(name) for name in fake.statuses]
            return jsonify(
                [
                    {
                        "id": "10001",
                        "name": "Task",
                        "subtask": False,
                        "statuses": statuses,
                        "self": f"{fake.url}/rest/api/3/issueType/10001",
                    },
                ]
            )

        @app.post(f"{api}/jql/parse")
        def parse_jql() -> Any:
            body = request.get_json(silent=True) or {}
            out = []
            for query_text in body.get("queries") or []:
                entry: dict[str, Any] = {"query": query_text}
                try:
                    jql_mod.parse(query_text)
                    entry["structure"] = {}
                except jql_mod.JqlError as exc:
                    entry["errors"] = [str(exc)]
                out.append(entry)
            return jsonify({"queries": out})

        @app.get(f"{api}/field")
        def list_fields() -> Any:
            return jsonify(fake.fields)

        @app.get(f"{api}/field/<field_id>/context")
        def list_contexts(field_id: str) -> Any:
            if field_id not in fake.contexts:
                return error(404, "The custom field was not found.")
            values = fake.contexts[field_id]
            return jsonify(_page(values, request.args))

        @app.get(f"{api}/field/<field_id>/context/<context_id>/option")
        def list_options(field_id: str, context_id: str) -> Any:
            if field_id not in fake.contexts:
                return error(404, "The custom field was not found.")
            if not any(c["id"] == context_id for c in fake.contexts[field_id]):
                return error(404, "The context was not found.")
            if (field_id, context_id) not in fake.options:
                return error(400, "The custom field doesn't support options.")
            return jsonify(_page(fake.options[(field_id, context_id)], request.args))

        return app

    def _searchable(self, issue: FakeIssue) -> dict[str, Any]:
        project, _, number = issue.key.rpartition("-")
        return {
            "key": issue.key,
            "status": issue.status,
            "project": issue.project,
            "labels": issue.labels,
            "summary": issue.summary,
            "statuscategory": self.statuses[issue.status],
            "created": _stamp(issue.created),
            "updated": _stamp(issue.updated),
            "_natural_key": (project, int(number) if number.isdigit() else 0),
        }


def _text_units(node: Any) -> int:
    """The length of the text of an ADF node, in UTF-16 code units as Jira (Java) counts it."""
    if isinstance(node, list):
        return sum(_text_units(child) for child in node)
    if not isinstance(node, dict):
        return 0
    own = len(node["text"].encode("utf-16-le")) // 2 if isinstance(node.get("text"), str) else 0
    return own + _text_units(node.get("content"))


def _current_value(issue: FakeIssue, field_id: str) -> Any:
    """An issue's value of a field, as a transition's required-field check reads it."""
    own = {"summary": issue.summary, "description": issue.description, "labels": issue.labels}
    return own[field_id] if field_id in own else issue.values.get(field_id)


def _store_value(issue: FakeIssue, field_id: str, value: Any) -> None:
    if field_id == "summary":
        issue.summary = str(value or "")
    elif field_id == "description":
        issue.description = value
    elif field_id == "labels":
        issue.labels = list(value or [])
    elif value is None:
        issue.values.pop(field_id, None)
    else:
        issue.values[field_id] = value


def _allowed(allowed: Sequence[Any], given: Any) -> Any:
    """The allowed value ``given`` names (by ``id``, ``name`` or ``value``, as Jira matches them),
    or ``None``."""
    for value in allowed:
        if not isinstance(value, dict):
            if given == value or (isinstance(given, dict) and given.get("value") == value):
                return value
            continue
        if isinstance(given, dict) and any(
            k in given and given[k] == value.get(k) for k in ("id", "name", "value")
        ):
            return value
    return None


def _page(values: list[dict[str, Any]], args: Mapping[str, str]) -> dict[str, Any]:
    start = int(args.get("startAt", 0))
    limit = int(args.get("maxResults", 50))
    chunk = values[start : start + limit]
    return {
        "startAt": start,
        "maxResults": limit,
        "total": len(values),
        "isLast": start + limit >= len(values),
        "values": chunk,
    }


#: Jira's limits on an entity property: the key's length and the size of the value's JSON
PROPERTY_KEY_MAX = 255
PROPERTY_VALUE_MAX_BYTES = 32_768


def _property_problem(prop: Any) -> str | None:
    """Why Jira refuses an entity property given on create (the description leaves ``key`` and
    ``value`` optional; Jira requires both), or ``None``."""
    if not isinstance(prop, dict) or not isinstance(prop.get("key"), str) or not prop["key"]:
        return "The property key cannot be empty."
    if len(prop["key"]) > PROPERTY_KEY_MAX:
        return f"The property key can't be longer than {PROPERTY_KEY_MAX} characters."
    if "value" not in prop:
        return "The property value is required."
    if len(json.dumps(prop["value"]).encode()) > PROPERTY_VALUE_MAX_BYTES:
        return f"The property value can't be longer than {PROPERTY_VALUE_MAX_BYTES} bytes."
    return None


def _undocumented_if_needed(resp: Response) -> Response:
    """Jira's description documents many error statuses without a body; real Jira sends one.

    Such answers are marked for the fake server so it does not flag the body, and the fake keeps
    them in Jira's ``ErrorCollection`` shape itself.
    """
    from aiimpl_core.testing.fakeserver import UNDOCUMENTED_HEADER

    if resp.status_code >= 400:
        resp.headers[UNDOCUMENTED_HEADER] = "1"
    return resp


def _default_fields() -> list[dict[str, Any]]:
    def system(fid: str, name: str, kind: str) -> dict[str, Any]:
        return {
            "id": fid,
            "key": fid,
            "name": name,
            "custom": False,
            "orderable": True,
            "navigable": True,
            "searchable": True,
            "clauseNames": [fid],
            "schema": {"type": kind, "system": fid},
        }

    return [
        system("summary", "Summary", "string"),
        system("status", "Status", "status"),
        system("labels", "Labels", "array"),
        system("description", "Description", "string"),
    ]


def _default_spec_path() -> str:
    import os

    from aiimpl_core.testing.pytest_plugin import specs_dir

    return os.path.join(specs_dir(), *SPEC_RELATIVE)


_SCHEMA_CACHE: dict[str, Any] = {}


def _schema_problems(spec_path: str, value: Any, schema_name: str) -> list[str]:
    """Problems of ``value`` against ``#/components/schemas/<schema_name>`` of the description."""
    from openapi_schema_validator import OAS30ReadValidator
    from referencing import Registry, Resource

    cached = _SCHEMA_CACHE.get(spec_path)
    if cached is None:
        with open(spec_path, encoding="utf-8") as fh:
            document = json.load(fh)
        resource = Resource.from_contents(document, default_specification=_draft4())
        cached = (document, Registry().with_resource("urn:jira", resource))
        _SCHEMA_CACHE[spec_path] = cached
    _document, registry = cached
    validator = OAS30ReadValidator({"$ref": f"urn:jira#/components/schemas/{schema_name}"}, registry=registry)
    # readOnly properties are what a server returns: validate as a response would be
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator.iter_errors(value)
    ]


def _draft4() -> Any:
    from referencing.jsonschema import DRAFT4

    return DRAFT4
