"""Gap-fill: a gap-analysis run on an existing pull request, triggered by external automation.

``POST /trigger/gap-fill`` authenticates and parses; :func:`trigger_gap_fill` finds the mapping
that owns the issue, picks a backend that can dispatch gap-fill runs, creates the job on the PR's
branch and launches it.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from ..database import foreign_key_violation, serialized
from ..errors import DispatchError, NotFound
from ..extensions import db
from ..orm import Job
from ..orm import Mapping as MappingRow
from ..types import ACTIVE_STATUSES, Phase
from .callbacks import CallbackError
from .launch import BackendChoice, choose_backend, create_job, launch
from .mappings import lock_mapping, team_of_key

log = logging.getLogger(__name__)

NO_GAP_FILL_BACKEND = "no installed runner backend supports gap-fill dispatch"


def owning_mapping(issue_key: str) -> MappingRow | None:
    """The mapping whose team owns ``issue_key``, asking each mapping's tracker how its keys
    name their team (``ENG-12`` → ``ENG`` unless the tracker says otherwise)."""
    facade = current_app.extensions["aiimpl"]
    installed = set(facade.ids("ticketing"))
    for mapping in db.session.scalars(select(MappingRow).order_by(MappingRow.id)):
        provider_id = mapping.view().ticketing_provider
        if provider_id in installed:
            team = team_of_key(provider_id, issue_key)
        else:
            team = issue_key.rsplit("-", 1)[0]
        if team == mapping.team_key:
            return mapping
    return None


def gap_fill_backend(mapping: MappingRow) -> BackendChoice:
    """The mapping's chosen backend when it supports gap-fill, else the first configured one
    that does. Shadow mode keeps its choice (nothing is started)."""
    facade = current_app.extensions["aiimpl"]
    choice = choose_backend(mapping)
    if choice.shadow:
        return choice
    if choice.backend_id in facade.ids("runner") and _gap_fill_ready(facade, choice.backend_id):
        return choice
    set_up = facade.runners()
    for backend in set_up:
        if backend.supports_gap_fill and backend.is_configured():
            return BackendChoice(backend.id, choice.runner_mode, False)
    raise CallbackError(502, "dispatch_failed", {"detail": _none_for_gap_fill(facade, set_up),
                                                 "dispatchStatus": None})


def _none_for_gap_fill(facade: Any, set_up: list[Any]) -> str:
    """Why no backend takes the gap fill: none installed supports it, or each that does is named
    with what keeps it out (an operator with GitHub Actions installed was told none was)."""
    ready = {backend.id for backend in set_up}
    kept_out = [
        f"{backend_id}: {'not configured' if backend_id in ready else 'could not be set up'}"
        for backend_id, cls in sorted(facade.classes["runner"].items())
        if getattr(cls, "supports_gap_fill", False)
    ]
    if not kept_out:
        return NO_GAP_FILL_BACKEND
    return f"no configured runner backend supports gap-fill dispatch ({'; '.join(kept_out)})"


def _gap_fill_ready(facade: Any, backend_id: str) -> bool:
    """Whether the backend supports gap-fill and can be set up (one that cannot is passed over
    for a configured one that can)."""
    try:
        return bool(facade.runner(backend_id).supports_gap_fill)
    except Exception:  # noqa: BLE001 - the plugin facade logged why
        return False


def pr_branch(mapping: MappingRow, issue_key: str, pr_number: int) -> str:
    """The PR's branch: the one the job that opened it pushed, else ``{branchPrefix}{issueKey}``."""
    branch = db.session.scalar(
        select(Job.branch)
        .where(
            func.lower(Job.owner) == mapping.owner.lower(),
            func.lower(Job.repo) == mapping.repo.lower(),
            Job.pr_number == pr_number,
            Job.branch.is_not(None),
        )
        .order_by(Job.id.desc())
        .limit(1)
    )
    return branch or f"{mapping.branch_prefix or ''}{issue_key}"


def _dispatch_detail(exc: DispatchError) -> str:
    detail = exc.detail
    if isinstance(detail, dict):
        for key in ("message", "detail", "error"):
            if isinstance(detail.get(key), str) and detail[key]:
                return detail[key]
    if isinstance(detail, str) and detail:
        return detail
    return exc.message


def _require_issue(provider_id: str, issue_key: str) -> None:
    """An issue its tracker says it does not have is refused (``issue_not_found``, 404): its run
    would cost a runner's minutes and post comments no tracker takes. A tracker that cannot say
    (down, not installed) does not hold the trigger up: the run reads the issue itself."""
    facade = current_app.extensions["aiimpl"]
    db.session.commit()  # no transaction held across the tracker's call
    if provider_id not in facade.ids("ticketing"):
        return
    try:
        facade.ticketing(provider_id).get_issue(issue_key)
    except NotFound:
        raise CallbackError(404, "issue_not_found") from None
    except Exception as exc:  # noqa: BLE001 - the tracker's failure is not the trigger's
        log.info("gap-fill of %s: the tracker could not say whether the issue exists (%s); going on",
                 issue_key, type(exc).__name__)


def trigger_gap_fill(issue_key: str, pr_number: int) -> dict[str, Any]:
    """Create and launch a gap-analysis job on PR ``pr_number``.

    :raises CallbackError: ``mapping_not_found`` (404), ``project_paused`` (423, with
        ``teamKey``), ``issue_not_found`` (404), ``already_running`` (409), ``dispatch_failed``
        (502, with ``detail`` and ``dispatchStatus``).
    """
    mapping = owning_mapping(issue_key)
    if mapping is None:
        raise CallbackError(404, "mapping_not_found")
    if mapping.paused:
        raise CallbackError(423, "project_paused", {"teamKey": mapping.team_key})
    choice = gap_fill_backend(mapping)
    base_branch = pr_branch(mapping, issue_key, pr_number)
    provider = mapping.view().ticketing_provider or ""
    mapping_id, team_key = mapping.id, mapping.team_key
    _require_issue(provider, issue_key)
    try:
        with serialized():
            # the mapping as it is now, held: a pause (or deletion) committed while the tracker
            # was asked is seen, and none lands before the job is made
            lock_mapping(team_key)
            mapping = db.session.get(MappingRow, mapping_id, populate_existing=True)
            if mapping is None:
                raise CallbackError(404, "mapping_not_found")
            if mapping.paused:
                raise CallbackError(423, "project_paused", {"teamKey": mapping.team_key})
            active = db.session.scalar(
                select(Job.id).where(
                    Job.issue_key == issue_key, Job.status.in_([s.value for s in ACTIVE_STATUSES])
                )
            )
            if active is not None:
                raise CallbackError(409, "already_running", {"jobId": active})
            job = create_job(
                mapping,
                issue_key,
                phase=Phase.GAP_ANALYSIS,
                provider=provider,
                choice=choice,
                pr_number=pr_number,
                base_branch=base_branch,
            )
    except IntegrityError as exc:
        db.session.rollback()
        if foreign_key_violation(exc):  # (PostgreSQL) the mapping was deleted as the job was made
            raise CallbackError(404, "mapping_not_found") from None
        # another process created an active job for this issue at the same moment
        raise CallbackError(409, "already_running") from None
    try:
        launch(job, gap_fill=True)
    except DispatchError as exc:
        log.warning("gap-fill dispatch of %s failed: %s", issue_key, exc.message)
        raise CallbackError(
            502, "dispatch_failed", {"detail": _dispatch_detail(exc), "dispatchStatus": exc.status}
        ) from None
    db.session.refresh(job)
    return {"jobId": job.id, "status": job.status}
