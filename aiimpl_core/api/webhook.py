"""``POST /api/github/webhook``: GitHub tells us a pull request merged.

The delivery is verified first (``X-Hub-Signature-256``, HMAC-SHA256 of the raw body with
``AIIMPL_GITHUB_WEBHOOK_SECRET``); with no secret configured every delivery is refused. Events
other than a merged pull request answer 200 and are ignored. Each ``X-GitHub-Delivery`` acts once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..auth import public_endpoint
from ..auth.signatures import webhook_signature_valid
from ..schemas.common import NOT_JSON, parse_json
from ..services import merge

bp = Blueprint("webhook", __name__)
log = logging.getLogger(__name__)

MISSING_FIELDS = "Missing required PR fields"
MAX_DELIVERY_BYTES = 25 * 1024 * 1024
COMMIT_SHA_RE = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")


def merged_pull_request(payload: dict[str, Any]) -> merge.MergedPullRequest | None:
    """The merged PR of a ``pull_request`` payload, or ``None`` when a required field is missing (or
    is not what it names: a merge-commit SHA that is not one)."""
    pr = payload.get("pull_request")
    repository = payload.get("repository")
    if not isinstance(pr, dict) or not isinstance(repository, dict):
        return None
    number = pr.get("number", payload.get("number"))
    url = pr.get("html_url")
    head = pr.get("head")
    branch = head.get("ref") if isinstance(head, dict) else None
    sha = pr.get("merge_commit_sha")
    full_name = repository.get("full_name")
    if isinstance(number, bool) or not isinstance(number, int) or not 0 < number < 2**31:
        return None
    # (blank is missing; the URL, linked from the comment, one of the web's)
    for value in (url, branch, sha, full_name):
        if not isinstance(value, str) or not value.strip():
            return None
    if not url.startswith(("https://", "http://")):
        return None
    # a merge commit's SHA-1 (or SHA-256) in hex: anything else names no commit (and would not fit
    # the job's merge_sha column)
    if not COMMIT_SHA_RE.fullmatch(sha):
        return None
    assert (
        isinstance(full_name, str)
        and isinstance(url, str)
        and isinstance(branch, str)
        and isinstance(sha, str)
    )
    owner, _, repo = full_name.partition("/")
    if not owner or not repo:
        return None
    head_repo = head.get("repo") if isinstance(head, dict) else None
    head_name = head_repo.get("full_name") if isinstance(head_repo, dict) else None
    return merge.MergedPullRequest(
        owner=owner, repo=repo, number=number, url=url, branch=branch, merge_sha=sha,
        head_repo=head_name if isinstance(head_name, str) and head_name else None,
    )


@bp.post("/api/github/webhook")
@public_endpoint
def github_webhook():  # noqa: ANN201
    """Receive a GitHub webhook delivery.
    ---
    post:
      summary: GitHub pull-request events (a merged PR closes the issue out)
      description: >-
        Verified with `X-Hub-Signature-256`. Only a `pull_request` event with action `closed` and
        `merged: true` acts; every other event answers 200 with `ignored: true`. A delivery id
        (`X-GitHub-Delivery`) seen before answers 200 with `duplicate: true` and does nothing.
        The merge is recorded and the tracker writes queued before the answer; these are sent
        within `AIIMPL_WEBHOOK_ANSWER_SECONDS` (4 s) or, from a slower tracker, after the answer.
      tags: [webhook]
      security:
        - githubSignature: []
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
      responses:
        200:
          description: Handled, ignored or duplicate
          content:
            application/json:
              schema:
                type: object
        400:
          description: >-
            Invalid JSON payload (also a body over 25 MB, GitHub's limit, before its signature is
            checked); Missing required PR fields
          content:
            application/json:
              schema: CallbackErrorSchema
        401:
          description: Invalid signature (also while no webhook secret is configured)
          content:
            application/json:
              schema: CallbackErrorSchema
    """
    secret = current_app.config.get("AIIMPL_GITHUB_WEBHOOK_SECRET")
    # GitHub caps deliveries at 25 MB; a long PR description must not be refused as forged
    request.max_content_length = MAX_DELIVERY_BYTES
    try:
        raw = request.get_data(cache=True)
    except HTTPException:  # larger than GitHub sends: no payload of GitHub's, as on the other webhooks
        return jsonify(error="Invalid JSON payload"), 400
    if not secret:
        log.error("GitHub webhook refused: AIIMPL_GITHUB_WEBHOOK_SECRET is not set")
        return jsonify(error="Invalid signature"), 401
    if not webhook_signature_valid(str(secret), raw, request.headers.get("X-Hub-Signature-256")):
        return jsonify(error="Invalid signature"), 401
    payload = parse_json(raw, replace_unstorable=True)
    if payload is NOT_JSON:
        return jsonify(error="Invalid JSON payload"), 400
    event = request.headers.get("X-GitHub-Event")
    delivery = request.headers.get("X-GitHub-Delivery")
    is_merge = (
        isinstance(payload, dict)
        and event in (None, "pull_request")
        and payload.get("action") == "closed"
        and isinstance(payload.get("pull_request"), dict)
        and payload["pull_request"].get("merged") is True
    )
    if not is_merge:
        fresh = merge.record_ignored(delivery, event)
        return jsonify(ignored=True, duplicate=not fresh), 200
    pr = merged_pull_request(payload)
    if pr is None:
        return jsonify(error=MISSING_FIELDS), 400
    result = merge.handle_merged(pr, delivery_id=delivery, event=event)
    return jsonify(
        ignored=False, duplicate=result.duplicate, matched=result.job_id is not None, jobId=result.job_id
    ), 200
