"""The ``/api/jira/*`` blueprint: Jira configuration helpers for the admin UI, and the webhook.

The configuration views are admin routes (the core's guard requires the admin session for
``/api/*``); their errors are the reference's "Jira configuration" table. The webhook
authenticates itself with the shared secret and is marked public.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import TYPE_CHECKING, Any

from aiimpl_core.auth import public_endpoint
from aiimpl_core.errors import AiimplError, ProviderError
from aiimpl_core.http import path_segment_problem
from aiimpl_core.webhooks import CHECK_FAILED, NOT_JSON, check_issues, parse_json, read_json
from flask import Blueprint, Response, current_app, jsonify, request

from . import admin
from .config import TRIGGER_STATUS
from .provider import JiraProvider

if TYPE_CHECKING:
    from aiimpl_core.webhooks import CycleReport

log = logging.getLogger(__name__)

bp = Blueprint("jira", __name__)

NOT_CONFIGURED = "Jira not configured"
WEBHOOK_SECRET_HEADER = "X-Aiimpl-Webhook-Secret"
#: Webhook events that can show an issue arriving in ``Ready``.
ISSUE_EVENTS = frozenset({"jira:issue_created", "jira:issue_updated"})


def _error(message: str, status: int) -> tuple[Response, int]:
    return jsonify(error=message), status


def _provider() -> JiraProvider:
    provider = current_app.extensions["aiimpl"].ticketing(JiraProvider.id)
    assert isinstance(provider, JiraProvider)
    return provider


def _configured_provider() -> JiraProvider | None:
    provider = _provider()
    return provider if provider.is_configured() else None


@bp.post("/validate-jql")
def validate_jql() -> Any:
    """Validate a JQL clause with Jira's JQL parser.
    ---
    post:
      summary: Validate a JQL clause
      description: Parses the clause with Jira (strict validation). A mapping's `ticketing.jql` is
        ANDed to the trigger query, so check it here before saving.
      tags: [Jira]
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [jql]
              properties:
                jql: {type: string, example: 'labels = backend'}
      responses:
        200:
          description: The clause is valid.
          content:
            application/json:
              schema:
                type: object
                properties:
                  valid: {type: boolean}
                  jql: {type: string}
                  warnings: {type: array, items: {type: string}}
        400:
          description: "`Invalid JSON body`, `jql field required`, `jql must be a string`, or Jira's
            validation message."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        401:
          description: "`Unauthorized`: no valid admin session."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        500:
          description: The Jira request failed (the underlying error message).
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        501:
          description: "`Jira not configured`."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
    """
    provider = _configured_provider()
    if provider is None:
        return _error(NOT_CONFIGURED, 501)
    body = read_json()
    if body is NOT_JSON or not isinstance(body, dict):
        return _error("Invalid JSON body", 400)
    jql = body.get("jql")
    if jql is not None and not isinstance(jql, str):
        # given, but not a clause: the reference's row is for a body that omits it
        return _error("jql must be a string", 400)
    if jql is None or not jql.strip():
        return _error("jql field required", 400)
    try:
        result = admin.check_jql(provider, jql.strip())
    except admin.JqlInvalid as exc:
        return _error(exc.message, 400)
    except ProviderError as exc:
        return _error(exc.message, 500)
    return jsonify(result.as_dict())


@bp.get("/fields")
def list_fields() -> Any:
    """List the Jira fields (system and custom).
    ---
    get:
      summary: List Jira fields
      tags: [Jira]
      responses:
        200:
          description: Every field, sorted by name.
          content:
            application/json:
              schema:
                type: array
                items:
                  type: object
                  properties:
                    id: {type: string}
                    key: {type: string}
                    name: {type: string}
                    custom: {type: boolean}
                    clauseNames: {type: array, items: {type: string}}
                    type: {type: string, nullable: true}
        401:
          description: "`Unauthorized`: no valid admin session."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        500:
          description: The Jira request failed (the underlying error message).
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        501:
          description: "`Jira not configured`."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
    """
    provider = _configured_provider()
    if provider is None:
        return _error(NOT_CONFIGURED, 501)
    try:
        return jsonify(admin.list_fields(provider))
    except ProviderError as exc:
        return _error(exc.message, 500)


@bp.get("/field-options")
def field_options() -> Any:
    """List the selectable options of a Jira field, over all its contexts.
    ---
    get:
      summary: List a Jira field's options
      description: An empty list (not an error) when the field has no selectable options.
      tags: [Jira]
      parameters:
        - in: query
          name: fieldId
          required: true
          description: the field's id (`customfield_10010`)
          schema: {type: string, example: customfield_10010}
      responses:
        200:
          description: The options, in Jira's order, each with the context it belongs to.
          content:
            application/json:
              schema:
                type: array
                items:
                  type: object
                  properties:
                    id: {type: string}
                    value: {type: string}
                    disabled: {type: boolean}
                    contextId: {type: string}
                    contextName: {type: string}
                    parentId: {type: string, nullable: true}
        400:
          description: >-
            `fieldId query param required`; `fieldId given more than once`; `fieldId must be an id
            that fits one segment of a URL path (…)`: empty, '.' or '..', or holding '/', '\\', '?',
            '#' or '%' (it is put in the path of Jira's API, where it would name another resource).
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        401:
          description: "`Unauthorized`: no valid admin session."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        500:
          description: The Jira request failed (the underlying error message).
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        501:
          description: "`Jira not configured`."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
    """
    provider = _configured_provider()
    if provider is None:
        return _error(NOT_CONFIGURED, 501)
    if len(request.args.getlist("fieldId")) > 1:
        # (one of them taken would answer a question not asked: as the core's admin lists answer)
        return _error("fieldId given more than once", 400)
    field_id = (request.args.get("fieldId") or "").strip()
    if not field_id:
        return _error("fieldId query param required", 400)
    if problem := path_segment_problem(field_id):
        return _error(f"fieldId {problem}", 400)
    try:
        options = admin.field_options(provider, field_id)
    except ProviderError as exc:
        return _error(exc.message, 500)
    return jsonify(options)


# -- webhook -----------------------------------------------------------------------------------


def _secret_matches(secret: str, raw_body: bytes) -> bool:
    """The shared secret as a query parameter or header, or an HMAC-SHA256 ``X-Hub-Signature``."""
    expected = secret.encode()
    given = request.args.get("secret") or request.headers.get(WEBHOOK_SECRET_HEADER)
    if given is not None and hmac.compare_digest(given.encode(), expected):
        return True
    # ``<method>=<hex digest>`` (WebSub): the same digest whatever the case of its hex digits,
    # compared as bytes (a header may carry any character; compare_digest refuses non-ASCII str)
    method, _, given_digest = request.headers.get("X-Hub-Signature", "").strip().partition("=")
    if method.lower() != "sha256":
        return False
    digest = hmac.new(expected, raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(given_digest.strip().lower().encode("utf-8", "replace"), digest.encode())


def _run_cycle(issue_key: str) -> CycleReport:
    """An immediate dispatch check of one issue (the same checks and claim as a poll cycle)."""
    return check_issues(JiraProvider.id, [issue_key])


@bp.post("/webhook")
@public_endpoint
def webhook() -> Any:
    """Jira issue events: an issue moved to Ready is picked up at once instead of at the next poll.
    ---
    post:
      summary: Jira webhook
      description: Authenticated with `AIIMPL_JIRA_WEBHOOK_SECRET`, given as the `secret` query
        parameter, the `X-Aiimpl-Webhook-Secret` header, or an `X-Hub-Signature` HMAC-SHA256 of the body.
        Events about issues not in `Ready` are acknowledged and ignored, as are issues outside the
        trigger's scope (a project not mapped or not in `AIIMPL_JIRA_PROJECTS`, or not matched by
        the mapping's `ticketing.jql`), so the webhook dispatches what the poll would.
      tags: [Jira]
      security: []
      parameters:
        - in: query
          name: secret
          required: false
          description: "`AIIMPL_JIRA_WEBHOOK_SECRET`, unless the header or the signature carries it"
          schema: {type: string}
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                webhookEvent: {type: string, example: 'jira:issue_updated'}
                issue:
                  type: object
                  properties:
                    key: {type: string}
      responses:
        200:
          description: Handled (an immediate dispatch check ran for the issue) or ignored.
            `dispatched` is true when this delivery's check dispatched the issue; `result` is
            the check's report (the job, or the blocker that holds the issue, or why it needed
            nothing; its `errors` when reading the issue from Jira failed). A check that could not
            run answers `dispatched` false and `reason`; either way the next poll cycle picks the
            issue up, so a failure is acknowledged rather than bounced back. The answer comes
            within `AIIMPL_WEBHOOK_ANSWER_SECONDS` (4 s); a check still running then goes on in the
            background, and the answer has `running` true (in `result` too), with what the check
            had done by then (a job it claimed has the status `unknown` while its launch goes on).
          content: {application/json: {schema: {type: object}}}
        400:
          description: "`Invalid JSON payload` (also JSON that is no object)."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        401:
          description: "`Invalid signature`: the shared secret did not match."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
        501:
          description: "`Jira webhook not configured`."
          content: {application/json: {schema: {type: object, properties: {error: {type: string}}}}}
    """
    provider = _provider()
    secret = provider.settings.webhook_secret
    if not secret:
        return _error("Jira webhook not configured", 501)
    raw = request.get_data(cache=True)
    if not _secret_matches(secret, raw):
        return _error("Invalid signature", 401)
    payload = parse_json(raw, replace_unstorable=True)
    if payload is NOT_JSON or not isinstance(payload, dict):
        # (a JSON value that is no object is no event of Jira's either: answered as the Linear
        # webhook answers it)
        return _error("Invalid JSON payload", 400)
    event = payload.get("webhookEvent")
    if isinstance(event, str) and event not in ISSUE_EVENTS:
        # comment, worklog … events: a move to Ready always comes as an issue event too
        return jsonify(ignored=True, reason=f"event {event} needs nothing")
    issue = payload.get("issue")
    key = issue.get("key") if isinstance(issue, dict) else None
    if not isinstance(key, str) or not key:
        return jsonify(ignored=True, reason="no issue in the event")
    fields = issue.get("fields") if isinstance(issue.get("fields"), dict) else {}
    status = (fields.get("status") or {}).get("name") if isinstance(fields.get("status"), dict) else None
    # An event that shows another status needs nothing (the poller clears stale blockers). One
    # without fields goes to the dispatcher, which reads the issue from Jira itself.
    if status is not None and str(status).casefold() != TRIGGER_STATUS.casefold():
        return jsonify(ignored=True, issueKey=key, reason=f"not in {TRIGGER_STATUS}")
    try:
        result = _run_cycle(key)
    except AiimplError as exc:
        log.warning("jira webhook for %s failed: %s", key, exc)
        return jsonify(accepted=True, issueKey=key, dispatched=False, reason=CHECK_FAILED)
    dispatched = result.dispatched_of(key) is not None
    running = {"running": True} if result.running else {}
    return jsonify(accepted=True, issueKey=key, dispatched=dispatched, result=result.as_dict(), **running)
