"""``GET /metrics``: Prometheus metrics of the whole install, read from the database at scrape time.

Gunicorn runs several workers and several hosts share one database, so a counter kept in one
process would show that worker's share only. Every ``aiimpl_*`` figure is read from the database
when Prometheus scrapes instead, in a fixed handful of aggregate queries whatever the number of
rows; labels are bounded (statuses, phases, teams, outbox states, blocker reasons, connections —
never an issue key). The ``process_*`` and ``python_*`` metrics describe the worker that answered.

Off while ``AIIMPL_METRICS_TOKEN`` is unset (501); otherwise ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

from .. import __version__
from ..auth import public_endpoint
from ..auth.admin import shared_secret_refusal
from ..database import schema_behind, schema_revision
from ..extensions import db
from ..orm import Blocker, Job, OutboxItem, Setting, utcnow
from ..orm import Mapping as MappingRow
from ..services import blockers
from ..services.poller import LAST_CYCLE_KEY, backoff_from, last_cycle_from
from ..types import ACTIVE_STATUSES, JobStatus, Phase

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

#: outbox states still to be sent (see services/outbox.py), and every state an item can be in
OUTBOX_WAITING = ("pending", "sending")
OUTBOX_STATES = (*OUTBOX_WAITING, "done", "dead", "shadow")
BLOCKER_REASONS = (
    blockers.NO_MAPPING,
    blockers.PAUSED,
    blockers.CONCURRENCY,
    blockers.DEDUP,
    blockers.BLOCKED_BY,
    blockers.GLOBAL_CAP,
    blockers.BACKEND_CAP,
    blockers.BACKEND_UNAVAILABLE,
)
BACKOFF_PREFIX = "backoff:"
DATABASE_UP_HELP = "1 when the database answered this scrape; 0 when not (no aiimpl_* figure from it then)."
SCHEMA_HELP = ("1 when the database's schema gave this scrape its figures; 0 when it is older than this "
               "version's (run `aiimpl db upgrade`; no aiimpl_* figure from it then).")


@dataclass(frozen=True)
class Snapshot:
    """The aggregates one scrape reads; known label values are listed with 0 so that a series
    drops to 0 instead of vanishing."""

    jobs: dict[tuple[str, str], int]
    active: dict[str, int]
    outbox: dict[str, int]
    oldest_waiting: datetime | None
    blocked: dict[str, int]
    backoffs: dict[tuple[str, str], float]
    #: when the latest poll-loop cycle finished, and its errors (``None``: no loop ran yet)
    last_cycle: tuple[datetime, int] | None = None


def read_snapshot(now: datetime) -> Snapshot:
    """Run the scrape's queries (seven, whatever the number of rows)."""
    session = db.session
    jobs = {(s.value, p.value): 0 for s in JobStatus for p in Phase}
    for status, phase, n in session.execute(
        select(Job.status, Job.phase, func.count()).group_by(Job.status, Job.phase)
    ):
        jobs[(status, phase)] = n
    # every mapped team, so that a team's series reads 0 rather than disappearing
    active = dict.fromkeys(session.scalars(select(MappingRow.team_key)), 0)
    for team, n in session.execute(
        select(Job.team_key, func.count())
        .where(Job.status.in_(sorted(s.value for s in ACTIVE_STATUSES)))
        .group_by(Job.team_key)
    ):
        active[team] = n
    outbox = dict.fromkeys(OUTBOX_STATES, 0)
    for state, n in session.execute(select(OutboxItem.state, func.count()).group_by(OutboxItem.state)):
        outbox[state] = n
    # apart from the counts: only the few waiting rows are read (ix_outbox_pending), not the
    # delivered ones kept for the retention
    oldest = session.scalar(
        # (a write an operator retried waits since the retry)
        select(func.min(func.coalesce(OutboxItem.requeued_at, OutboxItem.created_at)))
        .where(OutboxItem.state.in_(OUTBOX_WAITING))
    )
    blocked = dict.fromkeys(BLOCKER_REASONS, 0)
    for reason, n in session.execute(select(Blocker.reason, func.count()).group_by(Blocker.reason)):
        blocked[reason] = n
    backoffs: dict[tuple[str, str], float] = {}
    last_cycle = None
    for key, value in session.execute(
        select(Setting.key, Setting.value).where(
            Setting.key.like(BACKOFF_PREFIX + "%") | (Setting.key == LAST_CYCLE_KEY)
        )
    ):
        if key == LAST_CYCLE_KEY:
            last_cycle = last_cycle_from(value)
            continue
        kind, _, provider_id = key.removeprefix(BACKOFF_PREFIX).partition(":")
        # (its error text is never exported: it may quote a request; one of a key refused to a
        # process with another key does not hold this one back)
        backoff = backoff_from(value, now, kind=kind, provider_id=provider_id)
        if backoff is not None and kind and provider_id:
            backoffs[(kind, provider_id)] = (backoff.until - now).total_seconds()
    session.rollback()  # read only: end the transaction now, not at the end of the request
    return Snapshot(jobs, active, outbox, oldest, blocked, backoffs, last_cycle)


def _gauge(name: str, help_text: str, labels: list[str], values: Mapping[Any, float]) -> Metric:
    """A gauge with one sample per item of ``values`` (label value, or tuple of them → value)."""
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


class AiimplCollector(Collector):
    """The ``aiimpl_*`` metrics: the install's state from the database, and this process's
    plugins and version."""

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        info = GaugeMetricFamily("aiimpl_info", "The AI-Implement core's version (always 1).",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily(
            "aiimpl_plugin_load_failures",
            "Plugins this process failed to load (GET /healthz and `aiimpl plugins list` name them).",
            value=len(current_app.extensions["aiimpl"].failures()),
        )
        try:
            snapshot = read_snapshot(now)
        except SQLAlchemyError as exc:
            db.session.rollback()
            if _schema_behind(exc):  # it answered, with an older schema: not an outage
                yield GaugeMetricFamily("aiimpl_database_up", DATABASE_UP_HELP, value=1)
                yield GaugeMetricFamily("aiimpl_database_schema_current", SCHEMA_HELP, value=0)
                return
            # the class only: a driver's message may carry the database's host and user
            log.warning("metrics: the database did not answer (%s)", type(exc).__name__)
            yield GaugeMetricFamily("aiimpl_database_up", DATABASE_UP_HELP, value=0)
            return
        yield GaugeMetricFamily("aiimpl_database_up", DATABASE_UP_HELP, value=1)
        yield GaugeMetricFamily("aiimpl_database_schema_current", SCHEMA_HELP, value=1)
        yield from _families(snapshot, now)


def _schema_behind(exc: SQLAlchemyError) -> bool:
    """Whether a read that failed met a schema older than this version's: asked only when the
    database answered that a table or column is not there (a scrape that reads its figures costs no
    more statements, and one whose database does not answer waits for no second connection, past
    Prometheus's scrape timeout)."""
    said = str(getattr(exc, "orig", "") or "")
    if not (isinstance(exc, ProgrammingError) or "no such table" in said or "no such column" in said):
        return False
    try:
        return schema_behind(schema_revision())
    except SQLAlchemyError:
        db.session.rollback()
        return False


def _families(snap: Snapshot, now: datetime) -> Iterator[Metric]:
    finished, errors = snap.last_cycle or (None, 0)
    yield GaugeMetricFamily(
        "aiimpl_poller_last_cycle_timestamp_seconds",
        "When a poll loop (aiimpl poll, the in-app scheduler) last finished a cycle, as a Unix time; "
        "0 when none has. Alert when it falls behind by a few intervals: nothing is dispatched.",
        value=finished.timestamp() if finished else 0.0,
    )
    yield GaugeMetricFamily(
        "aiimpl_poller_last_cycle_errors",
        "Errors the latest poll-loop cycle reported (a tracker listing that failed, or one backing "
        "off after failing; an issue's dispatch, …).",
        value=errors,
    )
    yield _gauge(
        "aiimpl_jobs",
        "Jobs by status and phase, all time (jobs are kept, so the terminal statuses only grow).",
        ["status", "phase"],
        snap.jobs,
    )
    yield _gauge(
        "aiimpl_jobs_active",
        f"Non-terminal jobs ({', '.join(sorted(s.value for s in ACTIVE_STATUSES))}) per team.",
        ["team"],
        snap.active,
    )
    yield _gauge(
        "aiimpl_outbox_items",
        "Tracker writes (comments, stage changes, done) in the outbox by state.",
        ["state"],
        snap.outbox,
    )
    age = max(0.0, (now - snap.oldest_waiting).total_seconds()) if snap.oldest_waiting else 0.0
    yield GaugeMetricFamily(
        "aiimpl_outbox_oldest_pending_age_seconds",
        "Seconds since the oldest tracker write still to be sent (pending or sending) was queued "
        "(or retried by an operator); 0 when none waits.",
        value=age,
    )
    yield _gauge(
        "aiimpl_blocked_issues",
        "Eligible issues the latest poll cycle did not dispatch, by reason (the Blockers view).",
        ["reason"],
        snap.blocked,
    )
    yield _gauge(
        "aiimpl_backoff_remaining_seconds",
        "Seconds until a tracker or runner backend connection that failed is tried again "
        "(only connections backing off now).",
        ["kind", "id"],
        snap.backoffs,
    )


def scrape_registry() -> CollectorRegistry:
    """A registry for one scrape: the ``aiimpl_*`` collector and this process's own metrics."""
    registry = CollectorRegistry()
    registry.register(AiimplCollector())
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@bp.get("/metrics")
@public_endpoint
def metrics():  # noqa: ANN201
    """Prometheus metrics.
    ---
    get:
      summary: Prometheus metrics (text exposition format)
      description: >-
        Authenticated by `Authorization: Bearer <AIIMPL_METRICS_TOKEN>`; while the token is unset
        the endpoint answers 501. The `aiimpl_*` metrics describe the whole install (read from the
        database at each scrape, so any worker of any host answers the same); `process_*` and
        `python_*` describe the worker that answered. When the database does not answer, the
        answer is still 200, with `aiimpl_database_up 0` and no database figures; when its
        schema is older than this version's, with `aiimpl_database_schema_current 0` and none.
      tags: [meta]
      security:
        - metricsToken: []
      responses:
        200:
          description: The metrics
          content:
            text/plain:
              schema:
                type: string
        401:
          description: unauthorized (no or a wrong bearer token)
          content:
            application/json:
              schema: ErrorSchema
        501:
          description: Metrics not configured (AIIMPL_METRICS_TOKEN unset)
          content:
            application/json:
              schema: ErrorSchema
    """
    refused = shared_secret_refusal("AIIMPL_METRICS_TOKEN", "Metrics not configured")
    if refused is not None:
        return refused
    body = generate_latest(scrape_registry())
    return Response(body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
