"""A pull request merged on GitHub: close the issue out.

Called by ``POST /api/github/webhook`` for a verified, merged ``pull_request`` delivery. The job
is found by repository and PR number, else by branch; the merge commit is recorded, the issue's
stage becomes ``done``, and the tracker gets a comment and its "done" change (through the outbox,
so a tracker outage delays them but never loses them).

A job still running when its PR is merged (auto-merge, or a person merging during verification or
the post-push review) ends later without moving the issue out of "done": see :mod:`.outcomes`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from .. import webhooks
from ..database import serialized
from ..extensions import db
from ..orm import Job, WebhookDelivery, utcnow
from ..types import Stage
from . import comments
from .callbacks import deliver_quietly
from .jobs import enqueue_comment, enqueue_done, stage_changed
from .outcomes import locked_issue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MergedPullRequest:
    """What the webhook tells us about a merged pull request."""

    owner: str
    repo: str
    number: int
    url: str
    branch: str
    merge_sha: str
    #: the repository the PR's branch is in (``head.repo.full_name``), when the payload says
    head_repo: str | None = None

    @property
    def from_a_fork(self) -> bool:
        """Whether the PR's branch is in another repository than the one it was merged into."""
        return self.head_repo is not None and self.head_repo.lower() != f"{self.owner}/{self.repo}".lower()


@dataclass(frozen=True)
class MergeResult:
    duplicate: bool = False
    job_id: int | None = None
    issue_key: str | None = None


def find_job(pr: MergedPullRequest) -> Job | None:
    """The latest job of this repository that opened (or analysed) PR ``number``, else the latest
    one that pushed ``branch``. Owner and repository compare case-insensitively, as GitHub does.

    A PR from a fork never matches by its branch: sessions push to the repository itself, and a
    fork holds copies of its branches (``ai/ENG-1`` too), so a stranger's merged PR would close
    the issue and take the job's PR number."""
    same_repo = (func.lower(Job.owner) == pr.owner.lower(), func.lower(Job.repo) == pr.repo.lower())
    job = db.session.scalar(
        select(Job).where(*same_repo, Job.pr_number == pr.number).order_by(Job.id.desc()).limit(1)
    )
    if job is None and not pr.from_a_fork:
        job = db.session.scalar(
            select(Job).where(*same_repo, Job.branch == pr.branch).order_by(Job.id.desc()).limit(1)
        )
    return job


def record_delivery(delivery_id: str | None, event: str | None) -> bool:
    """Insert the delivery id in the current transaction; false when it was handled already."""
    if not delivery_id:
        return True
    try:
        # (added inside the savepoint: begin_nested flushes what is pending before it opens, and a
        # duplicate flushed there would fail the whole transaction, not just the savepoint)
        with db.session.begin_nested():
            db.session.add(WebhookDelivery(delivery_id=delivery_id[:128], source="github",
                                           event=(event or "")[:64]))
            db.session.flush()
    except IntegrityError:
        return False
    return True


class _Duplicate(Exception):
    pass


def handle_merged(pr: MergedPullRequest, *, delivery_id: str | None, event: str | None) -> MergeResult:
    """Act once per delivery: record the merge and queue the tracker writes, then send them (for at
    most ``AIIMPL_WEBHOOK_ANSWER_SECONDS`` before the answer; they go on after it)."""
    try:
        with serialized():
            if not record_delivery(delivery_id, event):
                raise _Duplicate()
            job = find_job(pr)
            if job is None:
                log.info("merged PR %s/%s#%s matches no job", pr.owner, pr.repo, pr.number)
                return MergeResult()
            job.merge_sha = pr.merge_sha
            if job.pr_number is None:
                job.pr_number = pr.number
            if job.pr_url is None:
                job.pr_url = pr.url
            provider = job.provider or ""
            # the job's row first, then the issue's, as an ending locks them (no circular wait);
            # an ending that commits after this sees "done" and leaves it (outcomes.locked_issue)
            db.session.flush()
            tracked = locked_issue(job.issue_key, team_key=job.team_key, provider=provider)
            now = utcnow()
            old = Stage(tracked.stage) if tracked.stage else None
            if old != Stage.DONE:  # another delivery of the merge (another hook's id) changes nothing
                tracked.stage = Stage.DONE.value
                tracked.stage_changed_at = now
                tracked.done_at = now
                # the merged PR closes the plan out too: a reopened issue plans afresh, never
                # implementing again a plan whose work was merged (or that nobody approved)
                tracked.plan = None
                stage_changed(job.issue_key, old, Stage.DONE)  # plugins hear it after the commit
            enqueue_comment(
                job.issue_key,
                comments.merged(pr.number, pr.merge_sha),
                provider=provider,
                kind="merged",
                job=job,
                # keyed by the merge, not by the job found: a second hook's delivery of it finds a
                # job created on the PR since (a gap-fill) and must not post the comment again
                dedupe_key=f"merged:{job.issue_key}:{pr.merge_sha}",
            )
            enqueue_done(job.issue_key, provider=provider, job=job)
            result = MergeResult(job_id=job.id, issue_key=job.issue_key)
    except _Duplicate:
        return MergeResult(duplicate=True)
    except IntegrityError:
        # a concurrent copy of this delivery committed first (PostgreSQL)
        db.session.rollback()
        return MergeResult(duplicate=True)
    if result.issue_key:
        _deliver_within_answer(result.issue_key)
    return result


def _deliver_within_answer(issue_key: str) -> None:
    """Send the issue's queued tracker writes, waiting at most ``AIIMPL_WEBHOOK_ANSWER_SECONDS``:
    a slower tracker's writes go on after the answer (GitHub counts a delivery not answered within
    10 s as failed). They are queued and committed already: a process that stops before they are
    sent leaves them to the poller, as a failure does."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    seconds = app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"]
    ended = threading.Event()

    def work() -> None:
        try:
            with app.app_context():
                deliver_quietly(issue_key)
        finally:
            ended.set()

    if not webhooks._in_background(work, "merge-delivery"):
        deliver_quietly(issue_key)  # no thread to be had (the process is at its limit): here
    elif not ended.wait(seconds):
        log.info("tracker writes of %s still being sent after %s s: the webhook answers, they go on",
                 issue_key, seconds)


def record_ignored(delivery_id: str | None, event: str | None) -> bool:
    """Remember a delivery we ignored (so its redelivery is recognised); false if seen before."""
    try:
        with serialized():
            fresh = record_delivery(delivery_id, event)
    except IntegrityError:
        db.session.rollback()
        return False
    return fresh
