"""Admin reads: ``GET /api/jobs``, ``GET /api/jobs/<jobId>``, ``GET /api/jobs/<jobId>/steps``,
``GET /api/issues`` and ``GET /api/blockers`` (the dispatch log, issue list and Blockers view)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import select

from ..database import chunks
from ..errors import AiimplError
from ..extensions import db
from ..orm import Blocker, Job, JobStep, TrackedIssue, iso_z
from ..schemas import admin as schemas
from ..schemas.common import ApiError
from ..services import mappings as mapping_service
from ..services.dispatch import checked_page
from ..types import ACTIVE_STATUSES, STAGE_TITLES, Stage, TrackerIssue

bp = Blueprint("admin_jobs", __name__)
log = logging.getLogger(__name__)

JOB_NOT_FOUND = "job not found"
#: a tracker listing is paged; this many pages is far beyond any real backlog and stops a loop
MAX_PAGES = 200




def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "issueKey": job.issue_key,
        "teamKey": job.team_key,
        "phase": job.phase,
        "status": job.status,
        "timeoutReason": job.timeout_reason,
        "backend": job.backend,
        "runnerMode": job.runner_mode,
        "shadow": bool(job.shadow),
        "owner": job.owner,
        "repo": job.repo,
        "baseBranch": job.base_branch,
        "branch": job.branch,
        "runId": job.run_id,
        "runUrl": job.run_url,
        "logUrl": job.log_url,
        "prNumber": job.pr_number,
        "prUrl": job.pr_url,
        "error": job.error,
        "logLabel": job.log_label,
        "costUsd": job.cost_usd,
        "turns": job.turns,
        "durationSeconds": job.duration_seconds,
        "createdAt": iso_z(job.created_at),
        "dispatchedAt": iso_z(job.dispatched_at),
        "runningAt": iso_z(job.running_at),
        "finishedAt": iso_z(job.finished_at),
        "launchAfter": iso_z(job.launch_after),
    }


def _job(job_id: str) -> Job:
    # the id is taken as text so that any path answers the reference's "job not found"
    # ASCII digits only (str.isdigit() accepts '²'), within the INTEGER column's range
    if not (job_id.isascii() and job_id.isdigit()) or len(job_id) > 10 or int(job_id) > 2**31 - 1:
        raise ApiError(404, JOB_NOT_FOUND)
    job = db.session.get(Job, int(job_id))
    if job is None:
        raise ApiError(404, JOB_NOT_FOUND)
    return job


@bp.get("/api/jobs")
def list_jobs():  # noqa: ANN201
    """List jobs, newest first.
    ---
    get:
      summary: The dispatch log (jobs, newest first)
      tags: [admin]
      parameters:
        - in: query
          schema: JobsQuerySchema
      responses:
        200:
          description: The jobs
          content:
            application/json:
              schema:
                type: array
                items: JobSchema
        400:
          description: >-
            A filter is invalid (its message names it), or a filter is given more than once:
            status given more than once (team, issue, limit alike)
          content:
            application/json:
              schema: ErrorSchema
    """
    query = schemas.load_query(schemas.JobsQuerySchema(), schemas.JOBS_QUERY_RULES)
    stmt = select(Job).order_by(Job.id.desc()).limit(query["limit"])
    if query.get("status") == "active":
        stmt = stmt.where(Job.status.in_([s.value for s in ACTIVE_STATUSES]))
    elif "status" in query:
        stmt = stmt.where(Job.status == query["status"])
    if "team" in query:
        stmt = stmt.where(Job.team_key == query["team"])
    if "issue" in query:
        stmt = stmt.where(Job.issue_key == query["issue"])
    return jsonify([job_summary(j) for j in db.session.scalars(stmt)])


@bp.get("/api/jobs/<jobId>")
def get_job(jobId: str):  # noqa: ANN201, N803 - the reference's parameter name
    """One job with its status history.
    ---
    get:
      summary: One job with its transitions
      tags: [admin]
      responses:
        200:
          description: The job
          content:
            application/json:
              schema: JobDetailSchema
        404:
          description: job not found
          content:
            application/json:
              schema: ErrorSchema
    """
    job = _job(jobId)
    body = job_summary(job)
    body["plan"] = job.plan
    body["logExcerpt"] = job.log_excerpt
    body["transitions"] = [
        {"fromStatus": t.from_status, "toStatus": t.to_status, "reason": t.reason, "at": iso_z(t.at)}
        for t in job.transitions
    ]
    return jsonify(body)


@bp.post("/api/jobs/<jobId>/cancel")
def cancel_job(jobId: str):  # noqa: ANN201, N803 - the reference's parameter name
    """Stop a job in flight.
    ---
    post:
      summary: Cancel a job in flight (it ends failed, "cancelled by an operator")
      description: >-
        The job ends `failed` with the reason `cancelled by an operator`: the issue gets the
        failure comment and stage, and a session that reports afterwards finds its job ended.
        Then its run is stopped through its backend (best effort).
      tags: [admin]
      responses:
        200:
          description: The job, ended
          content:
            application/json:
              schema: JobSchema
        404:
          description: job not found
          content:
            application/json:
              schema: ErrorSchema
        409:
          description: job already ended (it had, or a result came first)
          content:
            application/json:
              schema: ErrorSchema
    """
    from ..errors import Conflict
    from ..services.cancel import cancel_job as cancel

    job = _job(jobId)
    try:
        cancel(job.id)
    except Conflict as exc:
        raise ApiError(409, exc.message) from None
    return jsonify(job_summary(db.session.get(Job, job.id)))


@bp.get("/api/jobs/<jobId>/steps")
def job_steps(jobId: str):  # noqa: ANN201, N803
    """A job's step history.
    ---
    get:
      summary: The steps a job's runner reported, in order
      tags: [admin]
      responses:
        200:
          description: The steps
          content:
            application/json:
              schema:
                type: array
                items: JobStepViewSchema
        404:
          description: job not found
          content:
            application/json:
              schema: ErrorSchema
    """
    job = _job(jobId)
    rows = db.session.scalars(select(JobStep).where(JobStep.job_id == job.id).order_by(JobStep.id))
    return jsonify(
        [
            {
                "id": s.step_id,
                "type": s.type,
                "status": s.status,
                "startedAt": s.started_at,
                "finishedAt": s.finished_at,
                "detail": s.detail,
                "source": s.source,
            }
            for s in rows
        ]
    )


def _latest_jobs(keys: list[str]) -> dict[str, Job]:
    latest: dict[str, Job] = {}
    for chunk in chunks(keys):
        for job in db.session.scalars(select(Job).where(Job.issue_key.in_(list(chunk))).order_by(Job.id)):
            latest[job.issue_key] = job  # ascending ids: the last one wins
    return latest


def _job_brief(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    return {
        "id": job.id,
        "phase": job.phase,
        "status": job.status,
        "timeoutReason": job.timeout_reason,
        "prNumber": job.pr_number,
        "prUrl": job.pr_url,
        "createdAt": iso_z(job.created_at),
    }


def _stage(value: str | Stage | None, triggered: bool) -> tuple[str | None, str | None]:
    """The issue's stage and its title; a triggered issue no stage was set on yet is in the
    reference's first one, Triggered (a Jira issue in Ready, a Linear issue with the trigger label)."""
    if value is None and triggered:
        value = Stage.TRIGGERED
    if value is None:
        return None, None
    try:
        stage = Stage(value)
    except ValueError:
        return str(value), str(value)
    return stage.value, STAGE_TITLES[stage]


def _tracked(row: TrackedIssue, job: Job | None) -> dict[str, Any]:
    stage, title = _stage(row.stage, bool(row.triggered))
    return {
        "issueKey": row.issue_key,
        "teamKey": row.team_key,
        "provider": row.provider,
        "title": row.title,
        "url": row.url,
        "stage": stage,
        "stageTitle": title,
        "triggered": bool(row.triggered),
        "lastSeenAt": iso_z(row.last_seen_at),
        "latestJob": _job_brief(job),
    }


def _live(issue: TrackerIssue, job: Job | None) -> dict[str, Any]:
    stage, title = _stage(issue.stage, issue.triggered)
    return {
        "issueKey": issue.key,
        "teamKey": issue.team_key,
        "provider": issue.provider,
        "title": issue.title,
        "url": issue.url,
        "stage": stage,
        "stageTitle": title,
        "triggered": issue.triggered,
        "lastSeenAt": None,
        "latestJob": _job_brief(job),
    }


def _live_triggered() -> list[TrackerIssue]:
    """Every triggered issue, read now from every configured ticketing provider.

    :raises ApiError: 502 with the provider's message when one fails.
    """
    facade = current_app.extensions["aiimpl"]
    teams = mapping_service.views_by_tracker()
    issues: list[TrackerIssue] = []
    for tracker in facade.trackers():
        if not tracker.is_configured():
            continue
        try:
            for n, answer in enumerate(tracker.iter_triggered(teams.get(tracker.id, []))):
                page = checked_page(tracker.id, answer)
                issues.extend(page.issues)
                if page.complete or n + 1 >= MAX_PAGES:
                    break
        except AiimplError as exc:
            raise ApiError(502, exc.message) from None
        except Exception as exc:  # noqa: BLE001 - a plugin bug is still the tracker failing
            log.exception("listing triggered issues of %s failed", tracker.id)
            raise ApiError(502, f"{tracker.display_name}: {type(exc).__name__}") from None
    return issues


def _newest_first(issues: list[TrackerIssue]) -> list[TrackerIssue]:
    """Live issues by the tracker's update time, newest first; those without one last, in the
    trackers' order."""
    return sorted(issues, key=lambda i: i.updated_at.timestamp() if i.updated_at else float("-inf"),
                  reverse=True)


@bp.get("/api/issues")
def list_issues():  # noqa: ANN201
    """Tracked issues with their stage and latest job, updated most recently first.
    ---
    get:
      summary: Tracked issues (stage and latest job); `refresh=1` reads triggered issues live
      description: >-
        At most `limit` issues (default 100, at most 500): tracked issues are never deleted, so
        the list is cut to those the orchestrator saw or changed most recently. With `refresh=1`
        the triggered issues are read live from the trackers and cut to the `limit` the trackers
        updated most recently.
      tags: [admin]
      parameters:
        - in: query
          schema: IssuesQuerySchema
      responses:
        200:
          description: The issues
          content:
            application/json:
              schema:
                type: array
                items: IssueSchema
        400:
          description: >-
            limit must be an integer between 1 and 500; limit given more than once, refresh given
            more than once
          content:
            application/json:
              schema: ErrorSchema
        502:
          description: (underlying error message) Fetching issues from the ticketing provider failed
          content:
            application/json:
              schema: ErrorSchema
    """
    query = schemas.load_query(schemas.IssuesQuerySchema(), schemas.ISSUES_QUERY_RULES)
    if query.get("refresh", "").lower() in ("1", "true", "yes"):
        live = _newest_first(_live_triggered())[: query["limit"]]
        latest = _latest_jobs([i.key for i in live])
        return jsonify([_live(i, latest.get(i.key)) for i in live])
    # updated_at moves whenever the orchestrator writes the row: a listing that saw the issue, a
    # stage change, a trigger consumed or cleared; so the issues in play come first, and the ones
    # done long ago (never deleted) are the ones left out
    rows = list(
        db.session.scalars(
            select(TrackedIssue)
            .order_by(TrackedIssue.updated_at.desc(), TrackedIssue.id.desc())
            .limit(query["limit"])
        )
    )
    latest = _latest_jobs([r.issue_key for r in rows])
    return jsonify([_tracked(r, latest.get(r.issue_key)) for r in rows])


@bp.get("/api/blockers")
def list_blockers():  # noqa: ANN201
    """Issues the latest poll cycle did not dispatch, and why, blocked longest first.
    ---
    get:
      summary: Issues currently blocked from dispatch (the Blockers view)
      description: >-
        At most `limit` issues (default 100, at most 500), those blocked longest first.
      tags: [admin]
      parameters:
        - in: query
          schema: BlockersQuerySchema
      responses:
        200:
          description: The blocked issues
          content:
            application/json:
              schema:
                type: array
                items: BlockerSchema
        400:
          description: >-
            limit must be an integer between 1 and 500; limit given more than once
          content:
            application/json:
              schema: ErrorSchema
    """
    query = schemas.load_query(schemas.BlockersQuerySchema(), schemas.BLOCKERS_QUERY_RULES)
    rows = db.session.scalars(
        select(Blocker).order_by(Blocker.first_seen_at, Blocker.issue_key).limit(query["limit"])
    )
    return jsonify(
        [
            {
                "issueKey": b.issue_key,
                "teamKey": b.team_key,
                "provider": b.provider,
                "reason": b.reason,
                "message": b.message,
                "title": b.title,
                "since": iso_z(b.first_seen_at),
                "lastSeenAt": iso_z(b.last_seen_at),
            }
            for b in rows
        ]
    )
