"""Replaying a signed GitHub delivery.

GitHub signs the body only: ``X-GitHub-Delivery`` is not covered by ``X-Hub-Signature-256``. A
merged-PR delivery seen on the wire (or in a proxy's log) can be sent again under another delivery
id, or none, and still verifies. It must act once all the same: a replay weeks later, after the
issue was triggered again, would close out the issue a new run is working on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from aiimpl_core.auth.signatures import github_signature
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, TrackedIssue
from aiimpl_core.types import Stage

from .conftest import SECRETS

URL = "/api/github/webhook"
SHA = "c4295bd74fb0f4fda03689c3df3f2803b658fd85"


def _merged() -> bytes:
    """A merged-PR delivery of PR #7 of acme/api (the fields the handler reads)."""
    payload = {
        "action": "closed",
        "number": 7,
        "pull_request": {
            "number": 7,
            "html_url": "https://github.com/acme/api/pull/7",
            "merged": True,
            "merge_commit_sha": SHA,
            "head": {"ref": "ai/ENG-1", "repo": {"full_name": "acme/api"}},
        },
        "repository": {"full_name": "acme/api"},
    }
    return json.dumps(payload).encode()


def _send(client: Any, body: bytes, delivery: str | None) -> Any:
    headers = {"X-GitHub-Event": "pull_request",
               "X-Hub-Signature-256": github_signature(SECRETS["AIIMPL_GITHUB_WEBHOOK_SECRET"], body)}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return client.post(URL, data=body, headers=headers, content_type="application/json")


@pytest.fixture
def merged_job(app: Any, sec_mapping: Any) -> int:
    """A completed job of ENG-1 that opened PR #7 of acme/api."""
    mapping = sec_mapping()
    job = Job(issue_key="ENG-1", team_key="ENG", mapping_id=mapping.id, provider="fake-tracker",
              phase="implementation", status="completed", backend="github-actions", owner="acme",
              repo="api", base_branch="main", branch="ai/ENG-1", pr_number=7,
              pr_url="https://github.com/acme/api/pull/7")
    db.session.add(job)
    db.session.commit()
    return job.id


def _triggered_again() -> None:
    """The issue after its merge: triggered again, and a new run implementing it."""
    db.session.commit()
    tracked = db.session.scalar(select(TrackedIssue).where(TrackedIssue.issue_key == "ENG-1"))
    assert tracked is not None and tracked.stage == Stage.DONE.value
    tracked.stage, tracked.done_at = Stage.IMPLEMENTING.value, None
    db.session.commit()


def _stage() -> str | None:
    db.session.commit()
    return db.session.scalar(select(TrackedIssue.stage).where(TrackedIssue.issue_key == "ENG-1"))


@pytest.mark.parametrize("replayed_as", ["another-delivery-id", None], ids=["new id", "no id"])
def test_a_signed_merge_replayed_under_another_delivery_id_acts_once(client, merged_job, sec_tracker,
                                                                     replayed_as):
    body = _merged()
    first = _send(client, body, "d-1")
    assert first.status_code == 200 and first.get_json()["duplicate"] is False
    _triggered_again()
    again = _send(client, body, replayed_as)
    assert again.status_code == 200
    assert again.get_json() == {"ignored": False, "duplicate": True, "matched": False, "jobId": None}
    assert _stage() == Stage.IMPLEMENTING.value
    assert sec_tracker.comments["ENG-1"] == ["🎉 PR #7 merged (c4295bd). Closing this issue out."]


def test_a_merge_sent_without_a_delivery_id_acts_once(client, merged_job, sec_tracker):
    body = _merged()
    assert _send(client, body, None).get_json()["duplicate"] is False
    _triggered_again()
    assert _send(client, body, None).get_json()["duplicate"] is True
    assert _stage() == Stage.IMPLEMENTING.value


def test_another_merge_of_the_same_pull_request_still_acts(client, merged_job, sec_tracker):
    """Only the same signed bytes are a replay: another delivery (another body) is handled."""
    body = _merged()
    assert _send(client, body, "d-1").get_json()["duplicate"] is False
    other = json.loads(body)
    other["pull_request"]["merged_at"] = "2026-01-02T00:00:00Z"
    answer = _send(client, json.dumps(other).encode(), "d-2").get_json()
    assert answer == {"ignored": False, "duplicate": False, "matched": True, "jobId": merged_job}
