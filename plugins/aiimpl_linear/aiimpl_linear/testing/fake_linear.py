"""A fake Linear GraphQL server on 127.0.0.1, built on Linear's published schema.

Every request is parsed and validated with :func:`graphql.validate` against
``shared/specs/linear/schema.graphql``; a document that does not validate is answered as Linear
would (HTTP 400 with ``GRAPHQL_VALIDATION_FAILED``) and recorded in
:attr:`FakeLinear.validation_errors`, which test fixtures assert to be empty. Valid documents are
executed by graphql-core against in-memory state through resolvers, so answers have exactly
the schema's shapes (a non-null field the fake cannot fill is an execution error, not a guess).

Also modelled: cursor pagination (``first``/``after``, ``pageInfo``, at most 250 nodes), query
complexity (Linear's rule of thumb: 0.1 point per scalar, 1 per object, connections multiplied
by ``first``, default 50; over 10,000 points is refused), the request budget with Linear's
``X-RateLimit-Requests-*`` headers (429 with ``RATELIMITED`` when exhausted), the request budget
of a single query or mutation (``X-RateLimit-Endpoint-*``, :meth:`FakeLinear.limit_endpoint`),
error injection per operation, answers lost after the request was carried out
(:meth:`FakeLinear.lose_answer`), retired labels (``retiredAt``; :meth:`FakeLinear.retire_label`,
``issueLabelRetire`` and ``issueLabelRestore``: a retired label stays on the issues that carry it
and is applied to no other -- the schema says so, but not in which words Linear refuses it, so the
fake's ``INVALID_INPUT`` error is assumed), and signed webhook deliveries shaped like
``IssueWebhookPayload``::

    with FakeLinear() as fake:
        fake.add_team("ENG")
        fake.add_issue("ENG", "Fix the login", labels=["AI-Implement", "bug"])
        config = {"AIIMPL_LINEAR_API_URL": fake.url, "AIIMPL_LINEAR_API_KEY": fake.api_key}
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import graphql
from aiimpl_core.testing.serving import ServerThread, serve_wsgi
from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLUnionType,
    OperationDefinitionNode,
)
from werkzeug.wrappers import Request, Response

MAX_PAGE = 250
DEFAULT_PAGE = 50
MAX_COMPLEXITY = 10_000


def schema_path() -> str:
    """``linear/schema.graphql`` in the shared API descriptions."""
    from aiimpl_core.testing.pytest_plugin import specs_dir

    return os.path.join(specs_dir(), "linear", "schema.graphql")


@functools.lru_cache(maxsize=4)
def linear_schema(path: str | None = None) -> GraphQLSchema:
    """Linear's schema, built once per process (the file is 1.2 MB; building takes seconds)."""
    with open(path or schema_path(), encoding="utf-8") as fh:
        return graphql.build_schema(fh.read())


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(message: str, code: str = "INVALID_INPUT", **extensions: Any) -> GraphQLError:
    return GraphQLError(
        message,
        extensions={
            "code": code,
            "type": "invalid input",
            "userError": True,
            "userPresentableMessage": message,
            **extensions,
        },
    )


def _not_found(kind: str) -> GraphQLError:
    return GraphQLError(
        f"Entity not found: {kind}",
        extensions={
            "code": "INVALID_INPUT",
            "type": "invalid input",
            "userError": True,
            "userPresentableMessage": f"Could not find referenced {kind}.",
        },
    )


def _unsupported(field_name: str) -> Callable[..., Any]:
    """A resolver for a field the fake does not model: asked for, it is an error, not a guess."""

    def resolve(info: Any, **args: Any) -> Any:
        raise _error(f"fake Linear does not implement {field_name}", "UNSUPPORTED")

    return resolve


# -- filters ----------------------------------------------------------------------------------


def _match_string(value: str | None, comparator: dict[str, Any], where: str) -> bool:
    for op, expected in comparator.items():
        if op == "eq":
            ok = value == expected
        elif op == "neq":
            ok = value != expected
        elif op == "in":
            ok = value in expected
        elif op == "nin":
            ok = value not in expected
        elif op == "eqIgnoreCase":
            ok = value is not None and value.casefold() == str(expected).casefold()
        elif op == "neqIgnoreCase":
            ok = value is None or value.casefold() != str(expected).casefold()
        elif op == "null":
            ok = (value is None) == bool(expected)
        else:
            raise _error(f"fake Linear does not implement comparator {where}.{op}", "UNSUPPORTED")
        if not ok:
            return False
    return True


def _combine(node: Any, f: dict[str, Any], match: Callable[[Any, dict[str, Any]], bool]) -> bool | None:
    """``and``/``or`` of a filter; ``None`` when the filter has neither."""
    if "and" in f and not all(match(node, sub) for sub in f["and"] or []):
        return False
    if "or" in f and f["or"] is not None and not any(match(node, sub) for sub in f["or"]):
        return False
    return None


@dataclass
class Recorded:
    """One request the fake received."""

    operation: str | None
    variables: dict[str, Any]
    authorization: str | None
    status: int
    complexity: float = 0.0


@dataclass
class _Failure:
    message: str
    code: str
    times: int
    status: int = 200


@dataclass
class _Lost:
    status: int
    delay: float | None
    times: int


@dataclass
class _Store:
    teams: dict[str, dict[str, Any]] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, dict[str, Any]] = field(default_factory=dict)
    relations: dict[str, dict[str, Any]] = field(default_factory=dict)


#: The workflow state types Linear's schema documents (``WorkflowState.type``); the fake refuses others.
STATE_TYPES = ("triage", "backlog", "unstarted", "started", "completed", "canceled", "duplicate")

#: A new team's workflow, as Linear creates it (Linear now marks duplicates with a state of their own).
DEFAULT_STATES = (
    ("Backlog", "backlog"),
    ("Todo", "unstarted"),
    ("In Progress", "started"),
    ("In Review", "started"),
    ("Done", "completed"),
    ("Canceled", "canceled"),
    ("Duplicate", "duplicate"),
)


class FakeLinear:
    """Linear's GraphQL API in memory, served on 127.0.0.1 in a thread.

    :param api_key: the personal API key it accepts (``Authorization: <key>``).
    :param oauth_token: an OAuth token it accepts (``Authorization: Bearer <token>``).
    :param path: the schema file (default: the shared specs).
    """

    def __init__(
        self,
        *,
        api_key: str = "lin_api_fake0123456789",
        oauth_token: str | None = None,
        webhook_secret: str = "lin_wh_fake_secret",
        path: str | None = None,
        request_limit: int = 5000,
    ) -> None:
        self.api_key = api_key
        self.oauth_token = oauth_token
        self.webhook_secret = webhook_secret
        self.schema = linear_schema(path)
        self.store = _Store()
        self.requests: list[Recorded] = []
        #: every validation failure seen (a test fixture asserts this stays empty)
        self.validation_errors: list[str] = []
        #: labels created through the API (name, team key)
        self.created_labels: list[tuple[str, str | None]] = []
        self.lock = threading.RLock()
        #: the fake's clock for its rate limits (tests that fake sleeping replace it)
        self.clock: Callable[[], float] = time.time
        self.request_limit = request_limit
        self.requests_remaining = request_limit
        self.requests_reset_at = self.clock() + 3600
        self._forced_429: list[float] = []
        self._endpoint_limits: dict[str, list[float]] = {}
        self._failures: dict[str, _Failure] = {}
        self._lost: dict[str, _Lost] = {}
        self._before: dict[str, list[Callable[[], None]]] = {}
        self._numbers: dict[str, itertools.count[int]] = {}
        self._sync = itertools.count(1000)
        self._live: ServerThread | None = None

    # -- server -------------------------------------------------------------------------------

    def start(self) -> FakeLinear:
        if self._live is None:
            self._live = serve_wsgi(self._wsgi, name="fake-linear").start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __enter__(self) -> FakeLinear:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._live is not None, "start() the fake first"
        return f"{self._live.url}/graphql"

    def config(self) -> dict[str, str]:
        """Orchestrator configuration pointing at this fake."""
        return {
            "AIIMPL_LINEAR_API_URL": self.url,
            "AIIMPL_LINEAR_API_KEY": self.api_key,
            "AIIMPL_LINEAR_WEBHOOK_SECRET": self.webhook_secret,
        }

    # -- test controls ------------------------------------------------------------------------

    def rate_limit(self, times: int = 1, retry_in: float = 1.0) -> None:
        """Answer the next ``times`` requests with 429, the budget resetting ``retry_in`` s later."""
        with self.lock:
            self._forced_429.extend([retry_in] * times)

    def limit_endpoint(self, operation: str, times: int = 1, retry_in: float = 1.0) -> None:
        """Refuse the next ``times`` requests of ``operation`` as Linear refuses a query or mutation
        whose own request budget is spent: its ``RATELIMITED`` error with HTTP 400 (the status
        Linear answers it with), and the ``X-RateLimit-Endpoint-Requests-*`` headers saying it
        resets ``retry_in`` s later; the global budget is left as it is."""
        with self.lock:
            self._endpoint_limits.setdefault(operation, []).extend([retry_in] * times)

    def set_budget(self, remaining: int, reset_in: float) -> None:
        """Set the request budget: once it is spent, requests get 429 until it resets."""
        with self.lock:
            self.requests_remaining = remaining
            self.requests_reset_at = self.clock() + reset_in

    def fail(
        self,
        operation: str,
        message: str = "Internal server error",
        *,
        code: str = "INTERNAL_ERROR",
        times: int = 1,
        status: int = 200,
    ) -> None:
        """Answer the next ``times`` requests of ``operation`` with a GraphQL error."""
        with self.lock:
            self._failures[operation] = _Failure(message, code, times, status)

    def lose_answer(
        self, operation: str, *, status: int = 502, delay: float | None = None, times: int = 1
    ) -> None:
        """Carry out the next ``times`` requests of ``operation`` (a comment is stored), then lose
        the answer: a proxy's HTTP ``status`` page in its place, or, with ``delay``, the answer
        held that many seconds -- past the client's timeout, which then gives up."""
        with self.lock:
            self._lost[operation] = _Lost(status, delay, times)

    def before(self, operation: str, action: Callable[[], None]) -> None:
        """Run ``action`` once, just before the next request of ``operation`` is answered (to
        stage a concurrent change, such as another process creating the same label, or a slow
        answer). It runs without the fake's lock: other requests are answered meanwhile."""
        with self.lock:
            self._before.setdefault(operation, []).append(action)

    def operations(self) -> list[str | None]:
        return [r.operation for r in self.requests]

    # -- state --------------------------------------------------------------------------------

    def add_team(
        self, key: str, name: str | None = None, states: Iterable[tuple[str, str]] = DEFAULT_STATES
    ) -> dict[str, Any]:
        with self.lock:
            team = {"id": str(uuid.uuid4()), "key": key, "name": name or f"Team {key}"}
            self.store.teams[team["id"]] = team
            self._numbers[team["id"]] = itertools.count(1)
            for position, (state_name, state_type) in enumerate(states):
                self.add_state(key, state_name, state_type, float(position))
            return team

    def add_state(self, team_key: str, name: str, state_type: str, position: float) -> dict[str, Any]:
        if state_type not in STATE_TYPES:
            raise ValueError(f"Linear has no workflow state type {state_type!r} ({', '.join(STATE_TYPES)})")
        team = self.team(team_key)
        state = {
            "id": str(uuid.uuid4()),
            "name": name,
            "type": state_type,
            "position": position,
            "teamId": team["id"],
            "color": "#bec2c8",
        }
        self.store.states[state["id"]] = state
        return state

    def delete_state(self, team_key: str, name: str) -> None:
        """A person deletes the team's workflow state ``name`` (its id is then unknown)."""
        with self.lock:
            team_id = self.team(team_key)["id"]
            state = next(
                s for s in self.store.states.values() if s["teamId"] == team_id and s["name"] == name
            )
            if any(i["stateId"] == state["id"] for i in self.store.issues.values()):
                # the fake would have no state to show for them: move them first (set_state)
                raise ValueError(f"state {name} still has issues")
            del self.store.states[state["id"]]

    def team(self, key: str) -> dict[str, Any]:
        for team in self.store.teams.values():
            if team["key"] == key:
                return team
        raise KeyError(f"no team {key}")

    def add_label(
        self, name: str, team_key: str | None = None, *, is_group: bool = False, retired: bool = False
    ) -> dict[str, Any]:
        with self.lock:
            label = {
                "id": str(uuid.uuid4()),
                "name": name,
                "color": "#000000",
                "isGroup": is_group,
                "teamId": self.team(team_key)["id"] if team_key else None,
                "retiredAt": _now_iso() if retired else None,
            }
            self.store.labels[label["id"]] = label
            return label

    def retire_label(self, label_id: str) -> dict[str, Any]:
        """A person retires a label: it stays on the issues that carry it, is still listed (with
        its ``retiredAt``), and can no longer be added to an issue until it is restored."""
        with self.lock:
            label = self.store.labels[label_id]
            label["retiredAt"] = label["retiredAt"] or _now_iso()
            return label

    def delete_label(self, label_id: str) -> None:
        """A person deletes a label: it goes from every issue, and its id is then unknown."""
        with self.lock:
            del self.store.labels[label_id]
            for issue in self.store.issues.values():
                if label_id in issue["labelIds"]:
                    issue["labelIds"].remove(label_id)

    def _label_named(self, name: str, team_id: str) -> dict[str, Any] | None:
        """The label ``name`` usable in the team: an active one rather than a retired one."""
        named = [
            label
            for label in self.store.labels.values()
            if label["name"].casefold() == name.casefold() and label["teamId"] in (team_id, None)
        ]
        return min(named, key=lambda label: label["retiredAt"] is not None, default=None)

    def _label_to_add(self, name: str, team_key: str) -> dict[str, Any]:
        """The label a person adds by name (created in the team when missing); a retired one cannot
        be, as Linear's schema says of ``issueLabelRetire`` (it "cannot be applied to new issues")."""
        label = self._label_named(name, self.team(team_key)["id"]) or self.add_label(name, team_key)
        if label["retiredAt"] is not None:
            raise ValueError(f"label {name} is retired: it cannot be added to an issue")
        return label

    def add_issue(
        self,
        team_key: str,
        title: str = "An issue",
        *,
        labels: Iterable[str] = ("AI-Implement",),
        description: str = "",
        state: str = "Todo",
    ) -> dict[str, Any]:
        """Add an issue; labels missing from the team are created as team labels."""
        with self.lock:
            team = self.team(team_key)
            number = next(self._numbers[team["id"]])
            label_ids = [self._label_to_add(name, team_key)["id"] for name in labels]
            state_row = next(
                s for s in self.store.states.values() if s["teamId"] == team["id"] and s["name"] == state
            )
            now = _now_iso()
            issue = {
                "id": str(uuid.uuid4()),
                "identifier": f"{team_key}-{number}",
                "number": number,
                "title": title,
                "description": description,
                "teamId": team["id"],
                "stateId": state_row["id"],
                "labelIds": label_ids,
                "createdAt": now,
                "updatedAt": now,
            }
            self.store.issues[issue["id"]] = issue
            return issue

    def archive(self, ref: str, *, trash: bool = False) -> None:
        """Archive the issue, or move it to the trash (Linear archives a trashed issue too): the
        listing leaves it out; it is still read by its id."""
        with self.lock:
            issue = self.issue(ref)
            issue["archivedAt"] = _now_iso()
            if trash:
                issue["trashed"] = True

    def issue(self, ref: str) -> dict[str, Any]:
        found = self._find_issue(ref)
        if found is None:
            raise KeyError(f"no issue {ref}")
        return found

    def _find_issue(self, ref: str) -> dict[str, Any] | None:
        if ref in self.store.issues:
            return self.store.issues[ref]
        for issue in self.store.issues.values():
            if issue["identifier"] == ref:
                return issue
        return None

    def add_blocker(self, blocker: str, blocked: str) -> None:
        """``blocker`` blocks ``blocked`` (a Linear relation of type ``blocks``)."""
        self.add_relation(blocker, blocked, "blocks")

    def add_relation(self, issue: str, related: str, relation_type: str = "related") -> None:
        """A relation from ``issue`` to ``related`` (``blocks``, ``related``, ``duplicate`` or
        ``similar``); it is one of ``related``'s ``inverseRelations``, listed in creation order."""
        with self.lock:
            rel = {
                "id": str(uuid.uuid4()),
                "type": relation_type,
                "issueId": self.issue(issue)["id"],
                "relatedIssueId": self.issue(related)["id"],
            }
            self.store.relations[rel["id"]] = rel

    def set_state(self, identifier: str, state_name: str) -> None:
        with self.lock:
            issue = self.issue(identifier)
            issue["stateId"] = next(
                s["id"]
                for s in self.store.states.values()
                if s["teamId"] == issue["teamId"] and s["name"] == state_name
            )

    def add_labels(self, identifier: str, *names: str) -> None:
        """A person adds labels (created in the team when missing)."""
        with self.lock:
            issue = self.issue(identifier)
            team_key = self.store.teams[issue["teamId"]]["key"]
            for name in names:
                label = self._label_to_add(name, team_key)
                if label["id"] not in issue["labelIds"]:
                    issue["labelIds"].append(label["id"])

    def labels_of(self, identifier: str) -> list[str]:
        issue = self.issue(identifier)
        return sorted(self.store.labels[i]["name"] for i in issue["labelIds"])

    def state_of(self, identifier: str) -> str:
        return self.store.states[self.issue(identifier)["stateId"]]["name"]

    def add_comment(
        self, identifier: str, body: str, *, created_at: str | None = None, comment_id: str | None = None
    ) -> dict[str, Any]:
        """A person comments on the issue (``created_at``: an ISO time, default now; ``comment_id``:
        the comment's id, default a new UUID)."""
        with self.lock:
            comment = {
                "id": comment_id or str(uuid.uuid4()),
                "issueId": self.issue(identifier)["id"],
                "body": body,
                "createdAt": created_at or _now_iso(),
            }
            self.store.comments[comment["id"]] = comment
            return comment

    def comments_of(self, identifier: str) -> list[str]:
        issue_id = self.issue(identifier)["id"]
        return [c["body"] for c in self.store.comments.values() if c["issueId"] == issue_id]

    # -- webhooks -----------------------------------------------------------------------------

    def issue_webhook_payload(
        self, identifier: str, action: str = "update", timestamp_ms: float | None = None
    ) -> dict[str, Any]:
        """A delivery for an Issue event, shaped like ``EntityWebhookPayload`` with
        ``IssueWebhookPayload`` data."""
        issue = self.issue(identifier)
        team = self.store.teams[issue["teamId"]]
        state = self.store.states[issue["stateId"]]
        labels = [self.store.labels[i] for i in issue["labelIds"]]
        data = {
            "id": issue["id"],
            "identifier": issue["identifier"],
            "number": float(issue["number"]),
            "title": issue["title"],
            "description": issue["description"],
            "url": self._issue_url(issue),
            "createdAt": issue["createdAt"],
            "updatedAt": issue["updatedAt"],
            "archivedAt": issue.get("archivedAt"),
            "trashed": issue.get("trashed"),
            "priority": 0.0,
            "priorityLabel": "No priority",
            "prioritySortOrder": 0.0,
            "sortOrder": 0.0,
            "labelIds": list(issue["labelIds"]),
            "labels": [
                {"id": lb["id"], "name": lb["name"], "color": lb["color"], "parentId": None} for lb in labels
            ],
            "previousIdentifiers": [],
            "reactionData": {},
            "subscriberIds": [],
            "stateId": state["id"],
            "state": {
                "id": state["id"],
                "name": state["name"],
                "type": state["type"],
                "color": state["color"],
            },
            "teamId": team["id"],
            "team": {"id": team["id"], "key": team["key"], "name": team["name"]},
        }
        return {
            "action": action,
            "type": "Issue",
            "createdAt": _now_iso(),
            "data": data,
            "organizationId": "org-fake",
            "webhookId": "webhook-fake",
            "url": self._issue_url(issue),
            "webhookTimestamp": float(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms),
        }

    def sign(self, body: bytes, secret: str | None = None) -> str:
        """The ``Linear-Signature`` header for ``body``."""
        return hmac.new((secret or self.webhook_secret).encode(), body, hashlib.sha256).hexdigest()

    # -- HTTP ---------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _rate_headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Requests-Limit": str(self.request_limit),
            "X-RateLimit-Requests-Remaining": str(max(0, self.requests_remaining)),
            "X-RateLimit-Requests-Reset": str(int(self.requests_reset_at * 1000)),
        }

    def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
        return Response(
            json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
        )

    def _handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != "/graphql":
            return self._json(404, {"errors": [{"message": "Not found"}]})
        auth = request.headers.get("Authorization")
        try:
            body = json.loads(request.get_data())
        except ValueError:
            body = None
        operation = body.get("operationName") if isinstance(body, dict) else None
        variables = body.get("variables") if isinstance(body, dict) else None
        variables = variables if isinstance(variables, dict) else {}
        with self.lock:
            record = Recorded(operation, variables, auth, 200)
            self.requests.append(record)
            response = self._answer(request, body, auth, record)
            record.status = response.status_code
            lost = self._lost.get(record.operation or "")
            if lost is not None:
                lost.times -= 1
                if lost.times <= 0:
                    del self._lost[record.operation or ""]
                if lost.delay is None:
                    record.status = lost.status
                    response = Response(
                        f"<html><body><h1>{lost.status} Bad Gateway</h1></body></html>",
                        status=lost.status,
                        content_type="text/html",
                    )
        if lost is not None and lost.delay is not None:
            time.sleep(lost.delay)  # outside the lock: other requests are answered meanwhile
        return response

    def _answer(self, request: Request, body: Any, auth: str | None, record: Recorded) -> Response:
        if request.mimetype != "application/json":
            return self._json(
                400,
                {
                    "errors": [
                        {
                            "message": "Content-Type must be application/json",
                            "extensions": {"code": "BAD_REQUEST"},
                        }
                    ]
                },
            )
        accepted = {self.api_key} | ({f"Bearer {self.oauth_token}"} if self.oauth_token else set())
        if auth not in accepted:
            return self._json(
                400,
                {
                    "errors": [
                        {
                            "message": "Authentication required, not authenticated",
                            "extensions": {
                                "code": "AUTHENTICATION_ERROR",
                                "type": "authentication error",
                                "userError": True,
                            },
                        }
                    ]
                },
            )
        now = self.clock()
        if now >= self.requests_reset_at:
            self.requests_remaining, self.requests_reset_at = self.request_limit, now + 3600
        if self._forced_429:
            retry_in = self._forced_429.pop(0)
            self.requests_remaining, self.requests_reset_at = 0, now + retry_in
        if self.requests_remaining <= 0:
            return self._json(
                429,
                {
                    "errors": [
                        {
                            "message": "Rate limit exceeded",
                            "extensions": {"code": "RATELIMITED", "type": "ratelimited", "userError": True},
                        }
                    ]
                },
                self._rate_headers(),
            )
        self.requests_remaining -= 1
        headers = self._rate_headers()
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return self._json(
                400,
                {
                    "errors": [
                        {"message": "Must provide query string.", "extensions": {"code": "BAD_REQUEST"}}
                    ]
                },
                headers,
            )
        try:
            document = graphql.parse(body["query"])
        except GraphQLError as exc:
            self.validation_errors.append(f"{record.operation}: {exc.message}")
            return self._json(400, {"errors": [_validation_error(exc)]}, headers)
        problems = graphql.validate(self.schema, document)
        if problems:
            self.validation_errors.extend(f"{record.operation}: {p.message}" for p in problems)
            return self._json(400, {"errors": [_validation_error(p) for p in problems]}, headers)
        operation = record.operation
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation is None and len(ops) == 1 and ops[0].name:
            operation = record.operation = ops[0].name.value
        pending = self._before.get(operation or "")
        if pending:
            action = pending.pop(0)
            # run without the fake's lock: a slow answer (an action that sleeps) must not hold up
            # the requests other clients send meanwhile, as it would not on the real service
            self.lock.release()
            try:
                action()
            finally:
                self.lock.acquire()
        limits = self._endpoint_limits.get(operation or "")
        if limits:
            retry_in = limits.pop(0)
            endpoint = next(
                (sel.name.value for o in ops if o.name and o.name.value == operation
                 for sel in o.selection_set.selections if isinstance(sel, FieldNode)),
                operation or "",
            )
            headers.update(
                {
                    "X-RateLimit-Endpoint-Requests-Limit": "100",
                    "X-RateLimit-Endpoint-Requests-Remaining": "0",
                    "X-RateLimit-Endpoint-Requests-Reset": str(int((now + retry_in) * 1000)),
                    "X-RateLimit-Endpoint-Name": endpoint,
                }
            )
            return self._json(
                400,
                {
                    "errors": [
                        {
                            "message": "Rate limit exceeded",
                            "extensions": {"code": "RATELIMITED", "type": "ratelimited", "userError": True},
                        }
                    ]
                },
                headers,
            )
        failure = self._failures.get(operation or "")
        if failure is not None:
            failure.times -= 1
            if failure.times <= 0:
                del self._failures[operation or ""]
            return self._json(
                failure.status,
                {
                    "data": None,
                    "errors": [{"message": failure.message, "extensions": {"code": failure.code}}],
                },
                headers,
            )
        try:
            record.complexity = complexity(self.schema, document, record.variables, operation)
        except GraphQLError as exc:
            return self._json(400, {"errors": [exc.formatted]}, headers)
        headers["X-Complexity"] = str(math.ceil(record.complexity))
        if record.complexity > MAX_COMPLEXITY:
            points = math.ceil(record.complexity)
            return self._json(
                400,
                {
                    "errors": [
                        {
                            "message": f"Query too complex: {points} points, limit {MAX_COMPLEXITY}",
                            "extensions": {
                                "code": "INVALID_INPUT",
                                "type": "query too complex",
                                "userError": True,
                            },
                        }
                    ]
                },
                headers,
            )
        result = graphql.execute(
            self.schema,
            document,
            root_value=self._root(),
            variable_values=record.variables,
            operation_name=operation,
            field_resolver=_resolve,
        )
        out: dict[str, Any] = {"data": result.data}
        if result.errors:
            out["errors"] = [e.formatted for e in result.errors]
        return self._json(200, out, headers)

    # -- resolvers ----------------------------------------------------------------------------

    def _root(self) -> dict[str, Any]:
        return {
            "issues": self._q_issues,
            "issue": self._q_issue,
            "issueLabels": self._q_issue_labels,
            "team": self._q_team,
            "comment": self._q_comment,
            "teams": lambda info, **a: self._connection(
                [
                    self._team_view(t)
                    for t in self.store.teams.values()
                    if self._team_match(t, a.get("filter"))
                ],
                a,
            ),
            "workflowStates": lambda info, **a: self._connection(
                [self._state_view(s) for s in self._sorted_states() if self._state_match(s, a.get("filter"))],
                a,
            ),
            "viewer": lambda info: {
                "id": "user-fake",
                "name": "Fake User",
                "displayName": "fake",
                "email": "fake@example.test",
                "active": True,
            },
            "issueUpdate": self._m_issue_update,
            "commentCreate": self._m_comment_create,
            "issueLabelCreate": self._m_label_create,
            "issueLabelRestore": self._m_label_restore,
            "issueLabelRetire": self._m_label_retire,
        }

    def _connection(self, nodes: list[Any], args: dict[str, Any]) -> dict[str, Any]:
        if args.get("last") is not None or args.get("before") is not None:
            raise _error("fake Linear does not implement backward pagination", "UNSUPPORTED")
        first = args.get("first")
        first = DEFAULT_PAGE if first is None else first
        if first < 0 or first > MAX_PAGE:
            raise _error(f"first must be between 0 and {MAX_PAGE}")
        start = 0
        after = args.get("after")
        if after:
            try:
                start = int(base64.b64decode(after).decode().split(":", 1)[1]) + 1
            except (ValueError, IndexError):
                raise _error("Invalid cursor") from None
        page = nodes[start : start + first]
        cursors = [base64.b64encode(f"cursor:{start + i}".encode()).decode() for i in range(len(page))]
        return {
            "nodes": page,
            "edges": [{"node": n, "cursor": c} for n, c in zip(page, cursors, strict=True)],
            "pageInfo": {
                "hasNextPage": start + first < len(nodes),
                "hasPreviousPage": start > 0,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }

    def _issue_url(self, issue: dict[str, Any]) -> str:
        return f"https://linear.app/fake/issue/{issue['identifier']}"

    def _issue_view(self, issue: dict[str, Any]) -> dict[str, Any]:
        def relations(key: str) -> Callable[..., Any]:
            """The relations whose ``key`` side is this issue (``issueId``: it relates to others)."""

            def resolve(info: Any, **a: Any) -> dict[str, Any]:
                rows = [r for r in self.store.relations.values() if r[key] == issue["id"]]
                return self._connection([self._relation_view(r) for r in rows], a)

            return resolve

        return {
            "id": issue["id"],
            "identifier": issue["identifier"],
            "number": float(issue["number"]),
            "title": issue["title"],
            "description": issue["description"],
            "url": self._issue_url(issue),
            "createdAt": issue["createdAt"],
            "updatedAt": issue["updatedAt"],
            "archivedAt": issue.get("archivedAt"),
            "trashed": issue.get("trashed"),
            "priority": 0.0,
            "team": lambda info, **a: self._team_view(self.store.teams[issue["teamId"]]),
            "state": lambda info, **a: self._state_view(self.store.states[issue["stateId"]]),
            "labels": lambda info, **a: self._connection(
                [
                    self._label_view(self.store.labels[i])
                    for i in issue["labelIds"]
                    if self._label_match(self.store.labels[i], a.get("filter"))
                ],
                a,
            ),
            "relations": relations("issueId"),
            "inverseRelations": relations("relatedIssueId"),
            # in creation order, Linear's default (``orderBy: createdAt``); the fake keeps no
            # separate update time, so ``orderBy: updatedAt`` gives the same order
            "comments": lambda info, **a: self._connection(
                [
                    self._comment_view(c)
                    for c in sorted(self.store.comments.values(), key=lambda c: c["createdAt"])
                    if c["issueId"] == issue["id"]
                ],
                a,
            ),
        }

    def _relation_view(self, rel: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": rel["id"],
            "type": rel["type"],
            "issue": lambda info, **a: self._issue_view(self.store.issues[rel["issueId"]]),
            "relatedIssue": lambda info, **a: self._issue_view(self.store.issues[rel["relatedIssueId"]]),
        }

    def _team_view(self, team: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": team["id"],
            "key": team["key"],
            "name": team["name"],
            "states": lambda info, **a: self._connection(
                [
                    self._state_view(s)
                    for s in self._sorted_states()
                    if s["teamId"] == team["id"] and self._state_match(s, a.get("filter"))
                ],
                a,
            ),
            "labels": lambda info, **a: self._connection(
                [
                    self._label_view(lb)
                    for lb in self.store.labels.values()
                    if lb["teamId"] == team["id"] and self._label_match(lb, a.get("filter"))
                ],
                a,
            ),
        }

    def _sorted_states(self) -> list[dict[str, Any]]:
        # Linear returns states in no particular order; the fake lists the highest position first
        # so a client that forgets to sort by position picks the wrong "done" state.
        return sorted(self.store.states.values(), key=lambda s: -s["position"])

    def _state_view(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": state["id"],
            "name": state["name"],
            "type": state["type"],
            "position": state["position"],
            "color": state["color"],
            "team": lambda info, **a: self._team_view(self.store.teams[state["teamId"]]),
        }

    def _label_view(self, label: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": label["id"],
            "name": label["name"],
            "color": label["color"],
            "isGroup": label["isGroup"],
            "retiredAt": label["retiredAt"],
            "retiredBy": _unsupported("IssueLabel.retiredBy"),
            "team": (lambda info, **a: self._team_view(self.store.teams[label["teamId"]]))
            if label["teamId"]
            else None,
        }

    def _comment_view(self, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": comment["id"],
            "body": comment["body"],
            "createdAt": comment["createdAt"],
            "updatedAt": comment["createdAt"],
            "issueId": comment["issueId"],
            "user": {"id": "user-fake", "name": "AI-Implement bot", "displayName": "ai-implement"},
            "issue": lambda info, **a: self._issue_view(self.store.issues[comment["issueId"]]),
        }

    # filters

    def _team_match(self, team: dict[str, Any], f: dict[str, Any] | None) -> bool:
        if not f:
            return True
        combined = _combine(team, f, self._team_match)
        if combined is False:
            return False
        for key, comparator in f.items():
            if key in ("and", "or"):
                continue
            if key in ("key", "id", "name"):
                if not _match_string(team[key], comparator, f"TeamFilter.{key}"):
                    return False
            elif key == "null":
                if comparator:
                    return False
            else:
                raise _error(f"fake Linear does not implement filter TeamFilter.{key}", "UNSUPPORTED")
        return True

    def _state_match(self, state: dict[str, Any], f: dict[str, Any] | None) -> bool:
        if not f:
            return True
        if _combine(state, f, self._state_match) is False:
            return False
        for key, comparator in f.items():
            if key in ("and", "or"):
                continue
            if key in ("type", "name", "id"):
                if not _match_string(state[key], comparator, f"WorkflowStateFilter.{key}"):
                    return False
            elif key == "team":
                if not self._team_match(self.store.teams[state["teamId"]], comparator):
                    return False
            else:
                raise _error(
                    f"fake Linear does not implement filter WorkflowStateFilter.{key}", "UNSUPPORTED"
                )
        return True

    def _label_match(self, label: dict[str, Any], f: dict[str, Any] | None) -> bool:
        if not f:
            return True
        if _combine(label, f, self._label_match) is False:
            return False
        for key, comparator in f.items():
            if key in ("and", "or"):
                continue
            if key in ("name", "id"):
                if not _match_string(label[key], comparator, f"IssueLabelFilter.{key}"):
                    return False
            elif key == "team":
                team = self.store.teams.get(label["teamId"]) if label["teamId"] else None
                if team is None:
                    if comparator.get("null") is not True and set(comparator) - {"null"}:
                        return False
                    if comparator.get("null") is False:
                        return False
                elif not self._team_match(team, comparator):
                    return False
            else:
                raise _error(f"fake Linear does not implement filter IssueLabelFilter.{key}", "UNSUPPORTED")
        return True

    def _issue_match(self, issue: dict[str, Any], f: dict[str, Any] | None) -> bool:
        if not f:
            return True
        if _combine(issue, f, self._issue_match) is False:
            return False
        for key, comparator in f.items():
            if key in ("and", "or"):
                continue
            if key == "labels":
                labels = [self.store.labels[i] for i in issue["labelIds"]]
                for op, sub in comparator.items():
                    if op == "some":
                        ok = any(self._label_match(lb, sub) for lb in labels)
                    elif op == "every":
                        ok = all(self._label_match(lb, sub) for lb in labels)
                    elif op == "null":
                        ok = (not labels) == bool(sub)
                    else:
                        raise _error(
                            f"fake Linear does not implement filter IssueLabelCollectionFilter.{op}",
                            "UNSUPPORTED",
                        )
                    if not ok:
                        return False
            elif key == "state":
                if not self._state_match(self.store.states[issue["stateId"]], comparator):
                    return False
            elif key == "team":
                if not self._team_match(self.store.teams[issue["teamId"]], comparator):
                    return False
            elif key in ("id", "title"):
                if not _match_string(issue[key], comparator, f"IssueFilter.{key}"):
                    return False
            else:
                raise _error(f"fake Linear does not implement filter IssueFilter.{key}", "UNSUPPORTED")
        return True

    # queries

    def _q_issues(self, info: Any, **a: Any) -> dict[str, Any]:
        order = a.get("orderBy") or "createdAt"
        rows = sorted(self.store.issues.values(), key=lambda i: (i[order], i["number"]))
        if not a.get("includeArchived"):  # Linear's default: archived (and trashed) issues left out
            rows = [i for i in rows if not i.get("archivedAt")]
        return self._connection(
            [self._issue_view(i) for i in rows if self._issue_match(i, a.get("filter"))], a
        )

    def _q_issue(self, info: Any, id: str) -> dict[str, Any]:  # noqa: A002 - the schema's name
        issue = self._find_issue(id)
        if issue is None:
            raise _not_found("Issue")
        return self._issue_view(issue)

    def _q_issue_labels(self, info: Any, **a: Any) -> dict[str, Any]:
        return self._connection(
            [
                self._label_view(lb)
                for lb in self.store.labels.values()
                if self._label_match(lb, a.get("filter"))
            ],
            a,
        )

    def _q_comment(
        self,
        info: Any,
        id: str | None = None,  # noqa: A002 - the schema's names
        hash: str | None = None,  # noqa: A002
    ) -> dict[str, Any]:
        if hash is not None:
            raise _error("fake Linear does not implement comment(hash:)", "UNSUPPORTED")
        comment = self.store.comments.get(id or "")
        if comment is None:
            raise _not_found("Comment")
        return self._comment_view(comment)

    def _q_team(self, info: Any, id: str) -> dict[str, Any]:  # noqa: A002
        for team in self.store.teams.values():
            if id in (team["id"], team["key"]):
                return self._team_view(team)
        raise _not_found("Team")

    # mutations

    def _m_issue_update(self, info: Any, id: str, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        issue = self._find_issue(id)
        if issue is None:
            raise _not_found("Issue")
        supported = {"addedLabelIds", "removedLabelIds", "labelIds", "stateId", "title", "description"}
        unknown = set(input) - supported
        if unknown:
            raise _error(
                f"fake Linear does not implement IssueUpdateInput.{sorted(unknown)[0]}", "UNSUPPORTED"
            )
        labels = list(issue["labelIds"])
        if input.get("labelIds") is not None:
            labels = list(dict.fromkeys(input["labelIds"]))
        for label_id in input.get("addedLabelIds") or []:
            if label_id not in labels:
                labels.append(label_id)
        removed = set(input.get("removedLabelIds") or [])
        labels = [i for i in labels if i not in removed]
        label_change = any(input.get(k) is not None for k in ("labelIds", "addedLabelIds", "removedLabelIds"))
        for label_id in labels if label_change else []:
            label = self.store.labels.get(label_id)
            if label is None:
                raise _not_found("IssueLabel")
            if label["teamId"] not in (None, issue["teamId"]):
                raise _error("Label does not belong to the issue's team")
            if label["isGroup"]:
                raise _error("A label group cannot be applied to an issue")
            if label["retiredAt"] is not None and label_id not in issue["labelIds"]:
                # a retired label stays on the issues that carry it but is applied to no other
                raise _error("A retired label cannot be applied to an issue")
        if input.get("stateId") is not None:
            state = self.store.states.get(input["stateId"])
            if state is None:
                raise _not_found("WorkflowState")
            if state["teamId"] != issue["teamId"]:
                raise _error("Workflow state does not belong to the issue's team")
            issue["stateId"] = state["id"]
        for key in ("title", "description"):
            if input.get(key) is not None:
                issue[key] = input[key]
        issue["labelIds"] = labels
        issue["updatedAt"] = _now_iso()
        return {"success": True, "lastSyncId": float(next(self._sync)), "issue": self._issue_view(issue)}

    def _m_comment_create(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:  # noqa: A002
        """``commentCreate``; an ``id`` given is kept as the comment's id. Linear documents that it
        takes a UUID v4 there but not how it refuses a malformed one or one already in use: the
        fake's answers to those (an ``INVALID_INPUT`` error, ``Argument Validation Error`` and
        ``Entity with this id already exists``) are assumed, not Linear's known wording."""
        unknown = set(input) - {"issueId", "body", "id"}
        if unknown:
            raise _error(
                f"fake Linear does not implement CommentCreateInput.{sorted(unknown)[0]}", "UNSUPPORTED"
            )
        comment_id = input.get("id")
        if comment_id is not None:
            try:
                valid = uuid.UUID(comment_id).version == 4
            except ValueError:
                valid = False
            if not valid:
                raise _error("Argument Validation Error", userPresentableMessage="id must be a UUID v4.")
            if comment_id in self.store.comments:
                raise _error(
                    "Entity with this id already exists",
                    userPresentableMessage="A comment with this id already exists.",
                )
        issue = self._find_issue(input.get("issueId") or "")
        if issue is None:
            raise _not_found("Issue")
        if not input.get("body"):
            raise _error("Comment body is required")
        comment = self.add_comment(issue["identifier"], input["body"], comment_id=comment_id)
        return {
            "success": True,
            "lastSyncId": float(next(self._sync)),
            "comment": self._comment_view(comment),
        }

    def _m_label_create(
        self,
        info: Any,
        input: dict[str, Any],
        replaceTeamLabels: bool | None = None,  # noqa: A002,N803
    ) -> dict[str, Any]:
        """``issueLabelCreate``. A name already used by a label the team can use (its own or the
        workspace's) is refused, a retired one's too: the schema does not say whether Linear takes
        a second label named like a retired one, so the fake assumes it does not."""
        unknown = set(input) - {"name", "teamId", "color", "description"}
        if unknown:
            raise _error(
                f"fake Linear does not implement IssueLabelCreateInput.{sorted(unknown)[0]}", "UNSUPPORTED"
            )
        team_id = input.get("teamId")
        team = None
        if team_id is not None:
            team = next((t for t in self.store.teams.values() if team_id in (t["id"], t["key"])), None)
            if team is None:
                raise _not_found("Team")
        for label in self.store.labels.values():
            if label["name"].casefold() == input["name"].casefold() and label["teamId"] in (
                team["id"] if team else None,
                None,
            ):
                raise _error("A label with this name already exists", "INVALID_INPUT")
        label = {
            "id": str(uuid.uuid4()),
            "name": input["name"],
            "color": input.get("color") or "#000000",
            "isGroup": False,
            "teamId": team["id"] if team else None,
            "retiredAt": None,
        }
        self.store.labels[label["id"]] = label
        self.created_labels.append((label["name"], team["key"] if team else None))
        return {"success": True, "lastSyncId": float(next(self._sync)), "issueLabel": self._label_view(label)}

    def _m_label_restore(self, info: Any, id: str) -> dict[str, Any]:  # noqa: A002 - the schema's name
        """``issueLabelRestore``: the label can be applied again (``retiredAt`` null)."""
        label = self.store.labels.get(id)
        if label is None:
            raise _not_found("IssueLabel")
        label["retiredAt"] = None
        return {"success": True, "lastSyncId": float(next(self._sync)), "issueLabel": self._label_view(label)}

    def _m_label_retire(self, info: Any, id: str) -> dict[str, Any]:  # noqa: A002 - the schema's name
        if id not in self.store.labels:
            raise _not_found("IssueLabel")
        label = self.retire_label(id)
        return {"success": True, "lastSyncId": float(next(self._sync)), "issueLabel": self._label_view(label)}


def _validation_error(error: GraphQLError) -> dict[str, Any]:
    formatted = dict(error.formatted)
    formatted["extensions"] = {
        "code": "GRAPHQL_VALIDATION_FAILED",
        "type": "graphql error",
        "userError": True,
    }
    return formatted


def _resolve(source: Any, info: Any, **args: Any) -> Any:
    """Dict sources; a callable value is a resolver taking ``(info, **args)``."""
    value = (
        source.get(info.field_name) if isinstance(source, dict) else getattr(source, info.field_name, None)
    )
    if callable(value):
        return value(info, **args)
    return value


# -- complexity -------------------------------------------------------------------------------


def complexity(
    schema: GraphQLSchema,
    document: graphql.DocumentNode,
    variables: dict[str, Any],
    operation: str | None = None,
) -> float:
    """Linear's published rule of thumb for a query's cost: 0.1 point per scalar field, 1 per
    object, a connection's selection multiplied by its ``first`` (default 50)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, graphql.FragmentDefinitionNode)
    }
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    op = next((o for o in ops if o.name and o.name.value == operation), ops[0] if ops else None)
    if op is None:
        return 0.0
    root = schema.mutation_type if op.operation == graphql.OperationType.MUTATION else schema.query_type
    assert root is not None

    def value_of(node: Any) -> Any:
        if isinstance(node, graphql.VariableNode):
            return variables.get(node.name.value)
        if isinstance(node, graphql.IntValueNode):
            return int(node.value)
        return None

    def fields_of(selection_set: Any) -> Iterable[FieldNode]:
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                yield sel
            elif isinstance(sel, graphql.FragmentSpreadNode):
                yield from fields_of(fragments[sel.name.value].selection_set)
            elif isinstance(sel, graphql.InlineFragmentNode):
                yield from fields_of(sel.selection_set)

    def cost(parent: GraphQLObjectType, selection_set: Any, page: int = 1) -> float:
        total = 0.0
        for node in fields_of(selection_set):
            fdef = parent.fields.get(node.name.value)
            if fdef is None or node.selection_set is None:
                total += 0.1
                continue
            ftype = graphql.get_named_type(fdef.type)
            if not isinstance(ftype, GraphQLObjectType):
                total += 1.0  # unions and interfaces: counted as one object
                continue
            if ftype.name.endswith("Connection"):
                args = {a.name.value: value_of(a.value) for a in node.arguments or []}
                first = args.get("first")
                inner = 1.0 + cost(ftype, node.selection_set, DEFAULT_PAGE if first is None else first)
            else:
                inner = 1.0 + cost(ftype, node.selection_set)
            # a connection's nodes (or edges) are counted once per node of the page
            total += inner * page if node.name.value in ("nodes", "edges") else inner
        return total

    return cost(root, op.selection_set)


def _is_list(t: Any) -> bool:
    while isinstance(t, GraphQLNonNull):
        t = t.of_type
    return isinstance(t, GraphQLList)


# -- payload shapes ---------------------------------------------------------------------------

_SCALARS: dict[str, tuple[type, ...]] = {
    "String": (str,),
    "ID": (str,),
    "Boolean": (bool,),
    "Int": (int,),
    "Float": (int, float),
    "DateTime": (str,),
    "JSONObject": (dict,),
    "JSON": (dict, list, str, int, float, bool),
    "TimelessDate": (str,),
}


def shape_problems(value: Any, type_name: str, schema: GraphQLSchema | None = None) -> list[str]:
    """Where ``value`` (a JSON object) departs from the schema's object type ``type_name``:
    missing non-null fields, unknown fields and wrong scalar types. Empty when it fits."""
    schema = schema or linear_schema()
    problems: list[str] = []

    def check(val: Any, gtype: Any, where: str) -> None:
        if isinstance(gtype, GraphQLNonNull):
            if val is None:
                problems.append(f"{where}: null for a non-null field")
                return
            gtype = gtype.of_type
        if val is None:
            return
        if isinstance(gtype, GraphQLList):
            if not isinstance(val, list):
                problems.append(f"{where}: expected a list")
                return
            for i, item in enumerate(val):
                check(item, gtype.of_type, f"{where}[{i}]")
            return
        if isinstance(gtype, GraphQLUnionType):
            return  # which member applies depends on the envelope; callers check data explicitly
        if isinstance(gtype, GraphQLObjectType):
            if not isinstance(val, dict):
                problems.append(f"{where}: expected an object")
                return
            for key in val:
                if key not in gtype.fields:
                    problems.append(f"{where}.{key}: not a field of {gtype.name}")
            for name, fdef in gtype.fields.items():
                if name not in val:
                    if isinstance(fdef.type, GraphQLNonNull):
                        problems.append(f"{where}.{name}: missing non-null field of {gtype.name}")
                    continue
                check(val[name], fdef.type, f"{where}.{name}")
            return
        named = graphql.get_named_type(gtype)
        if isinstance(named, graphql.GraphQLEnumType):
            if val not in named.values:
                problems.append(f"{where}: {val!r} is not a {named.name}")
            return
        allowed = _SCALARS.get(named.name, (str,))
        if isinstance(val, bool) and bool not in allowed:
            problems.append(f"{where}: boolean for {named.name}")
        elif not isinstance(val, allowed):
            problems.append(f"{where}: {type(val).__name__} for {named.name}")

    gtype = schema.get_type(type_name)
    if not isinstance(gtype, GraphQLObjectType):
        return [f"{type_name} is not an object type of the schema"]
    check(value, GraphQLNonNull(gtype), type_name)
    return problems
