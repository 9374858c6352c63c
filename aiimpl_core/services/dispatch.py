"""The dispatcher: from triggered tracker issues to launched jobs, once per trigger.

A poll cycle (:func:`run_cycle`) reads every tracker connection's triggered issues, page by page;
checks each issue's blockers (:mod:`.blockers`); claims the eligible ones; launches the claimed
jobs; then runs the reconciler and delivers the outbox.

**Once per trigger.** An issue is eligible when the listing shows its trigger, its
``TrackedIssue.trigger_consumed`` is not set, and the listing was read after
``trigger_cleared_at`` (a listing read before our own stage change reached the tracker is stale).
A search may lag behind the tracker's writes even then: an issue whose trigger we cleared before
is read again (``get_issue``) before it is dispatched once more.
The claim re-checks all of this in one serialized transaction (``BEGIN IMMEDIATE`` on SQLite; the
team's and the global advisory locks on PostgreSQL), creates the job, sets ``trigger_consumed``
and the stage, and commits; only then is the backend called. The partial unique index
``uq_jobs_active_issue`` is the last guard: a violation means "already dispatched".
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import cast, exists, false, func, literal, null, select, true, union_all, update
from sqlalchemy.exc import IntegrityError

from .. import logs
from ..database import (
    advisory_locks,
    chunks,
    foreign_key_violation,
    one_of,
    rows_by_issue_key,
    serialized,
    write_seen_rows,
)
from ..errors import (
    AiimplError,
    ConfigError,
    DispatchDeferred,
    DispatchError,
    DispatchUnanswered,
    NotFound,
    PluginContractError,
    ProviderError,
    describe_plugin_error,
)
from ..extensions import db
from ..orm import Blocker as BlockerRow
from ..orm import Job, Setting, TrackedIssue, iso_z, utcnow
from ..orm import Mapping as MappingRow
from ..providers import TicketingProvider
from ..types import (
    ACTIVE_STATUSES,
    JobStatus,
    MappingView,
    Phase,
    Stage,
    TrackerIssue,
    TriggeredPage,
)
from . import blockers, outbox, poller, settings
from .jobs import set_stage
from .launch import BackendChoice, Prepared, choose_backend, create_job, launch, prepare
from .mappings import set_tracker_command, team_of_key

log = logging.getLogger(__name__)

GLOBAL_LOCK = "dispatch:global"
#: a poll cycle refreshes the ``last_seen_at`` of a waiting issue whose rows it does not otherwise
#: change at most this often (the Blockers view's "last seen" is that fresh)
SEEN_REFRESH = timedelta(minutes=1)


@dataclass
class Dispatched:
    issue_key: str
    job_id: int
    phase: str
    backend: str | None
    shadow: bool
    status: str = "unknown"
    error: str | None = None
    #: the backend rate-limited the dispatch: the job waits, ``unknown``, to be tried again then
    deferred_until: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "issueKey": self.issue_key,
            "jobId": self.job_id,
            "phase": self.phase,
            "backend": self.backend,
            "shadow": self.shadow,
            "status": self.status,
            "error": self.error,
            "deferredUntil": iso_z(self.deferred_until),
        }


@dataclass
class CycleReport:
    """What one cycle did; ``aiimpl poll --once --json`` prints :meth:`as_dict`."""

    started_at: datetime
    finished_at: datetime | None = None
    listed: dict[str, int] = field(default_factory=dict)  # provider -> triggered issues read
    dispatched: list[Dispatched] = field(default_factory=list)
    blocked: dict[str, dict[str, str]] = field(default_factory=dict)  # issue -> reason, message
    skipped: dict[str, str] = field(default_factory=dict)  # issue -> why it needs nothing
    providers_skipped: dict[str, str] = field(default_factory=dict)  # provider -> why
    #: the trackers of ``providers_skipped`` whose listing (or the question whether it is
    #: configured) failed this cycle, or that back off after failing, rather than were left out
    #: (not configured, read by another poller this interval, …)
    providers_failed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    reconciled: dict[str, Any] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    #: the poll loop was stopped during the cycle, which left its remaining steps to the next one
    stopped: bool = False
    #: a tracker webhook's check still going on when its answer was due: this report is what it
    #: had done by then (see :func:`aiimpl_core.webhooks.check_issues`)
    running: bool = False

    def hold(self, issue_key: str, blocked: blockers.Blocked) -> None:
        """Report the issue as waiting for this reason."""
        self.blocked[issue_key] = {"reason": blocked.reason, "message": blocked.message}

    def dispatched_of(self, issue_key: str) -> Dispatched | None:
        """This cycle's dispatch of the issue, if it dispatched it (what a tracker webhook answers)."""
        return next((entry for entry in self.dispatched if entry.issue_key == issue_key), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "startedAt": iso_z(self.started_at),
            "finishedAt": iso_z(self.finished_at),
            "listed": dict(self.listed),
            "dispatched": [d.as_dict() for d in self.dispatched],
            "blocked": dict(self.blocked),
            "skipped": dict(self.skipped),
            # (a tracker's or backend's error may quote the failed request's credentials: masked, as
            # in the log, wherever the report is shown, a tracker webhook's answer included)
            "providersSkipped": logs.masked(dict(self.providers_skipped)),
            "errors": logs.masked(list(self.errors)),
            "reconciled": dict(self.reconciled),
            "outbox": dict(self.outbox),
            "stopped": self.stopped,
            "running": self.running,
        }

    @property
    def failed_dispatches(self) -> int:
        """The claimed issues whose dispatch the backend refused (their jobs ended ``failed``)."""
        return sum(1 for d in self.dispatched if d.status == JobStatus.FAILED.value)

    @property
    def deferred_dispatches(self) -> int:
        """The dispatches the backend rate-limited (their jobs wait to be tried again)."""
        return sum(1 for d in self.dispatched if d.deferred_until is not None)

    def summary(self) -> str:
        listed = sum(self.listed.values())
        failed, deferred = self.failed_dispatches, self.deferred_dispatches
        parts = [
            f"{listed} triggered issue(s) read",
            f"{len(self.dispatched) - failed - deferred} dispatched",
            *([f"{failed} failed to dispatch"] if failed else []),
            *([f"{deferred} rate-limited (tried again later)"] if deferred else []),
            f"{len(self.blocked)} blocked",
        ]
        if self.providers_skipped:
            parts.append(f"{len(self.providers_skipped)} connection(s) skipped")
        if self.reconciled.get("ended"):
            parts.append(f"{self.reconciled['ended']} job(s) ended by the reconciler")
        if self.outbox.get("sent") or self.outbox.get("failed"):
            parts.append(f"outbox {self.outbox.get('sent', 0)} sent / {self.outbox.get('failed', 0)} failed")
        if self.stopped:
            parts.append("stopped before its end (the next cycle does the rest)")
        return ", ".join(parts)


# -- mappings and providers -------------------------------------------------------------------


def _teams_by_provider() -> dict[str, list[str]]:
    """Each tracker connection's mapped team keys, read as plain rows: a cycle holds no mapping
    objects, which every one of its many commits would otherwise expire."""
    out: dict[str, list[str]] = {}
    rows = db.session.execute(select(MappingRow.team_key, MappingRow.ticketing).order_by(MappingRow.team_key))
    for team_key, ticketing in rows:
        provider_id = (ticketing or {}).get("provider")
        if provider_id:
            out.setdefault(str(provider_id), []).append(team_key)
    return out


def _mapping_for(provider_id: str, team_key: str, *also: Any) -> Any:
    """The row of the team's mapping that this tracker connection owns: the mapping, then the
    values of ``also`` read in the same query; ``None`` when there is none."""
    for row in db.session.execute(select(MappingRow, *also).where(MappingRow.team_key == team_key)).all():
        if _owns(provider_id, row[0]):
            return row
    return None


def _owns(provider_id: str, mapping: MappingRow | None) -> bool:
    """Whether the mapping belongs to this tracker connection."""
    return mapping is not None and (mapping.ticketing or {}).get("provider") == provider_id


def mapping_views(provider_id: str) -> dict[str, MappingView]:
    """The provider's mappings by team key, as plain views."""
    mappings = db.session.scalars(select(MappingRow)).all()
    return {m.team_key: m.view() for m in mappings if _owns(provider_id, m)}


def _tracker(provider_id: str) -> TicketingProvider:
    facade = current_app.extensions["aiimpl"]
    return facade.ticketing(provider_id)


def checked_page(provider_id: str, page: Any, report: CycleReport | None = None) -> TriggeredPage:
    """A page ``iter_triggered`` yielded, once it is a :class:`TriggeredPage` of
    :class:`TrackerIssue` s (any other answer is that tracker's failure, not the cycle's), with
    its issues' text storable (:func:`storable_issue`). An issue whose key is longer than the
    database keeps is left out of it, named in ``report``'s errors (or the log).

    :raises PluginContractError: naming what the plugin yielded.
    """
    if not isinstance(page, TriggeredPage):
        raise PluginContractError(
            f"iter_triggered of {provider_id!r} yielded {type(page).__name__}, not a TriggeredPage"
        )
    for issue in page.issues:
        if not isinstance(issue, TrackerIssue):
            raise PluginContractError(
                f"iter_triggered of {provider_id!r} yielded a page holding a {type(issue).__name__}, "
                "not a TrackerIssue"
            )
    kept = []
    for issue in page.issues:
        if (refused := _key_refused(issue)) is None:
            kept.append(storable_issue(issue))
        elif report is not None:
            report.errors.append(refused)
        else:
            log.warning("%s", refused)
    if len(kept) == len(page.issues) and all(a is b for a, b in zip(kept, page.issues, strict=True)):
        return page
    return dataclasses.replace(page, issues=tuple(kept))


#: characters of an issue or team key the database keeps (``String(64)`` columns)
MAX_KEY_CHARS = 64
#: a lone surrogate (bytes that were no UTF-8), which no encoding holds
_SURROGATE = re.compile("[\ud800-\udfff]")


def _key_refused(issue: TrackerIssue) -> str | None:
    for key in (issue.key, issue.team_key):
        if isinstance(key, str) and len(key) > MAX_KEY_CHARS:
            return (f"{key[:MAX_KEY_CHARS]}…: an issue key longer than {MAX_KEY_CHARS} characters "
                    "is not dispatched")
    return None


def _storable(text: Any) -> Any:
    if not isinstance(text, str) or ("\x00" not in text and not _SURROGATE.search(text)):
        return text
    return _SURROGATE.sub("\ufffd", text.replace("\x00", "\ufffd"))


def _storable_link(link: Any) -> Any:
    key, title = _storable(link.key), _storable(link.title)
    if key is link.key and title is link.title:
        return link
    return dataclasses.replace(link, key=key, title=title)


def storable_issue(issue: TrackerIssue) -> TrackerIssue:
    """``issue`` with what the database cannot store in its text replaced by U+FFFD: a NUL, which
    PostgreSQL's text refuses (one issue's title would fail the statement that writes its whole
    page of blockers), and a lone surrogate, which no encoding holds."""
    changes: dict[str, Any] = {
        name: cleaned for name in ("key", "team_key", "title", "description", "url", "state", "remote_id")
        if (cleaned := _storable(value := getattr(issue, name))) is not value
    }
    labels = tuple(_storable(label) for label in issue.labels)
    if any(a is not b for a, b in zip(labels, issue.labels, strict=True)):
        changes["labels"] = labels
    links = tuple(_storable_link(link) for link in issue.blocked_by)
    if any(a is not b for a, b in zip(links, issue.blocked_by, strict=True)):
        changes["blocked_by"] = links
    return dataclasses.replace(issue, **changes) if changes else issue


def read_issue(provider_id: str, key: str, tracker: Any = None) -> TrackerIssue:
    """The tracker's ``get_issue``, checked (:func:`checked_issue`). Anything but a project error
    it raises (a plugin's bug) is logged with its traceback and raised as a
    :class:`PluginContractError` naming it, which every caller reports, never a 500 or a traceback.
    """
    try:
        return checked_issue(provider_id, (tracker or _tracker(provider_id)).get_issue(key))
    except AiimplError:
        raise
    except Exception as exc:  # noqa: BLE001 - raised again as the project's error
        log.exception("get_issue of %s failed for %s", provider_id, key)
        raise PluginContractError(
            f"get_issue of {provider_id!r} failed: {describe_plugin_error(exc)}", plugin=provider_id
        ) from None


def checked_issue(provider_id: str, issue: Any) -> TrackerIssue:
    """What ``get_issue`` answered, once it is a :class:`TrackerIssue`.

    :raises PluginContractError: naming what the plugin answered.
    """
    if not isinstance(issue, TrackerIssue):
        raise PluginContractError(
            f"get_issue of {provider_id!r} answered {type(issue).__name__}, not a TrackerIssue"
        )
    if (refused := _key_refused(issue)) is not None:
        raise AiimplError(refused)
    return storable_issue(issue)


# -- the claim ------------------------------------------------------------------------------


def _phase_for(
    mapping: MappingRow, tracked: TrackedIssue, requested: Phase | None
) -> tuple[Phase, str | None]:
    """§4: an approved plan → implementation with it; else planning when enabled; else implementation."""
    if requested is Phase.PLANNING:
        return Phase.PLANNING, None
    if requested is Phase.IMPLEMENTATION:
        return Phase.IMPLEMENTATION, tracked.plan
    if tracked.plan:
        return Phase.IMPLEMENTATION, tracked.plan
    if mapping.planning_enabled:
        return Phase.PLANNING, None
    return Phase.IMPLEMENTATION, None


_STAGE_OF = {Phase.PLANNING: Stage.PLANNING, Phase.IMPLEMENTATION: Stage.IMPLEMENTING}


@dataclass(frozen=True)
class _Go:
    """Nothing holds the issue: dispatch it under this mapping's settings and backend choice."""

    mapping: MappingRow | MappingView
    choice: BackendChoice


@dataclass(frozen=True)
class _TriggerState:
    consumed: bool
    cleared_at: datetime | None


def _trigger_state(row: Any) -> _TriggerState | None:
    """The trigger's state an issue's tracked row holds (``None``: no row)."""
    return None if row is None else _TriggerState(bool(row.trigger_consumed), row.trigger_cleared_at)


_RUNNER_MODE = select(Setting.value).where(Setting.key == settings.RUNNER_MODE_KEY).scalar_subquery()
#: the back-off of the runner backend a mapping names (:func:`poller.backoff_key`), read with it
_BACKOFF_KEY = func.substr(literal(poller.backoff_key("runner", "")) + MappingRow.execution_mode, 1, 64)
_MAPPING_BACKOFF = select(Setting.value).where(Setting.key == _BACKOFF_KEY).scalar_subquery()


class _Live:
    """What the checks read, straight from the database (used under the claim's locks)."""

    def __init__(self, tracked: TrackedIssue | None = None) -> None:
        """:param tracked: the issue's tracked row, when the caller has just read it under the locks."""
        self.counts: blockers.Counts = blockers.LiveCounts()
        self.tracked = tracked
        self._backoffs: dict[str, Any] = {}  # backend -> its back-off setting, read with the mapping
        self._mode: str | None = None  # the persisted runner mode, read with the mapping
        # (provider, team) -> the mapping row with the mode and back-off, when the caller read it
        self._mappings: dict[tuple[str, str], Any] = {}

    def trigger(self, key: str) -> _TriggerState | None:
        known = self.tracked is not None and self.tracked.issue_key == key
        return _trigger_state(self.tracked if known else _read_tracked(key))

    def mapping_for(self, provider_id: str, team_key: str) -> MappingRow | MappingView | None:
        # the mapping with the runner mode and the back-off of the backend it names, in one query
        # (in the default mode that is the backend the check asks about next)
        if (provider_id, team_key) in self._mappings:
            row = self._mappings[(provider_id, team_key)]
        else:
            row = _mapping_for(provider_id, team_key, _RUNNER_MODE, _MAPPING_BACKOFF)
        if row is None:
            return None
        mapping, mode, backoff = row
        self._mode = mode or "default"
        if mapping.execution_mode:
            self._backoffs[mapping.execution_mode] = backoff
        return mapping

    def knowing_mapping(self, provider_id: str, team_key: str, row: Any) -> None:
        """Answer :meth:`mapping_for` with a row the caller read under the same locks: the
        mapping, the runner mode and the back-off (the values of :func:`_mapping_for`), or
        ``None`` for no mapping."""
        self._mappings[(provider_id, team_key)] = row

    def choice(self, mapping: MappingRow | MappingView) -> BackendChoice:
        if self._mode is None:
            self._mode = settings.get(settings.RUNNER_MODE_KEY, "default") or "default"
        return choose_backend(mapping, settings.effective_runner_mode(self._mode))  # type: ignore[arg-type]

    def backoff(self, backend_id: str, now: datetime) -> poller.Backoff | None:
        if backend_id in self._backoffs:
            return poller.backoff_from(self._backoffs[backend_id], now, kind="runner", provider_id=backend_id)
        return poller.backoff_of("runner", backend_id, now)


@dataclass
class _ListingReads:
    """What every page of one listing is checked against first, read once per listing: the
    provider's mappings, the runner mode and the non-terminal jobs (kept up to date with the jobs
    this poller creates). Staleness within a listing only delays an issue to the next cycle: each
    dispatch is checked again live under the locks."""

    mappings: dict[str, MappingView]
    mode: str
    counts: blockers.SnapshotCounts
    #: each team's backend choice under ``mode``, made when a check first asks for it
    choices: dict[str, BackendChoice] = field(default_factory=dict)

    @classmethod
    def read(cls, provider_id: str, now: datetime) -> _ListingReads:
        return cls(mapping_views(provider_id), settings.effective_runner_mode(), blockers.SnapshotCounts(now))


class _Snapshot(_Live):
    """The same reads for a whole listing page at once, in a handful of queries.

    The first check of each issue runs on it (read under the page's team locks, which are released
    before any claim: see :func:`_settle_waiting_page`); only issues it lets through are checked
    again live under the claim's locks. Jobs this poller creates are added as it goes.
    """

    def __init__(
        self,
        provider_id: str,
        keys: Sequence[str],
        now: datetime,
        listing: _ListingReads | None = None,
        *,
        commit: bool = True,
        with_blockers: bool = False,
    ) -> None:
        """:param listing: the reads shared by the pages of a listing, when the caller made them
        (once per listing rather than once per page).
        :param commit: end the read's transaction (false: the caller's transaction goes on).
        :param with_blockers: read the issues' blocker rows too, in the same statement (for a
            caller that records the page under the locks it read them under)."""
        super().__init__()
        listing = listing if listing is not None else _ListingReads.read(provider_id, now)
        self.counts = listing.counts
        self.mappings = listing.mappings
        self.mode = listing.mode
        self.choices = listing.choices
        # the rows recording the page's waiting issues compares with (hold_all), read here whole;
        # the checks read the triggers from them too
        self.tracked_rows: dict[str, Any] = {}
        self.blocker_rows: dict[str, Any] | None = {} if with_blockers else None
        for chunk in chunks(keys):
            if self.blocker_rows is None:
                self.tracked_rows.update(rows_by_issue_key(TrackedIssue, chunk, *_TRACKED_COLUMNS))
                continue
            for row in db.session.execute(_tracked_and_blocker_rows(chunk)):
                (self.blocker_rows if row.blocker else self.tracked_rows)[row.issue_key] = row
        self.backoffs: dict[str, poller.Backoff | None] = {}
        if commit:
            db.session.commit()

    def trigger(self, key: str) -> _TriggerState | None:
        return _trigger_state(self.tracked_rows.get(key))

    def mapping_for(self, provider_id: str, team_key: str) -> MappingView | None:
        return self.mappings.get(team_key)

    def choice(self, mapping: MappingRow | MappingView) -> BackendChoice:
        # the mapping is the listing's view of the team's (mapping_for) and the mode the listing's:
        # one choice per team serves every issue of the listing
        choice = self.choices.get(mapping.team_key)
        if choice is None:
            choice = choose_backend(mapping, self.mode)  # type: ignore[arg-type]
            self.choices[mapping.team_key] = choice
        return choice

    def backoff(self, backend_id: str, now: datetime) -> poller.Backoff | None:
        if backend_id not in self.backoffs:
            self.backoffs[backend_id] = poller.backoff_of("runner", backend_id, now)
        return self.backoffs[backend_id]


def _verdict(
    issue: TrackerIssue, reads: _Live, *, fetched_at: datetime, now: datetime, force: bool
) -> str | blockers.Blocked | _Go:
    """Whether the issue is dispatched: a reason it needs nothing (str), a blocker, or go."""
    if not force:
        if not issue.triggered:
            return "not triggered"
        state = reads.trigger(issue.key)
        if state is not None and state.consumed:
            return "trigger already dispatched"
        if state is not None and state.cleared_at is not None and fetched_at <= state.cleared_at:
            return "listing older than our last stage change"
    mapping = reads.mapping_for(issue.provider, issue.team_key)
    choice = reads.choice(mapping) if mapping is not None else None
    backend_id = choice.backend_id if choice is not None else None
    held = blockers.evaluate(issue, mapping, backend_id=backend_id, now=now, counts=reads.counts)
    missing = choice is not None and not choice.shadow and not backend_id
    if held is None and choice is not None and not choice.shadow and backend_id:
        backoff = reads.backoff(backend_id, now)
        if backoff is not None:
            held = blockers.backend_unavailable(backend_id, backoff.until)
    if held is None and missing:
        assert mapping is not None and choice is not None
        held = blockers.no_backend(choice.runner_mode, mapping.execution_mode)
    if held is not None and force and held.reason != blockers.PAUSED and mapping is not None and not missing:
        # --force passes every check but a paused project, a backend no plugin provides (its job
        # could only fail) and the in-flight rule below
        held = None
    if held is not None:
        return held
    assert mapping is not None and choice is not None
    return _Go(mapping, choice)


def _read_tracked(key: str) -> TrackedIssue | None:
    return db.session.scalar(
        select(TrackedIssue).where(TrackedIssue.issue_key == key).execution_options(populate_existing=True)
    )


def _read_for_claim(issue: TrackerIssue, now: datetime) -> tuple[TrackedIssue | None, bool, _Live]:
    """Everything the check under the locks reads, in one query: the issue's tracked row (or
    ``None``), whether it has a blocker row, the team's mapping with the runner mode and the
    back-off of the mapping's backend, the team's count of issues in flight but this one and
    whether this one has a recent job. Returns the row, the blocker's presence, and the reads for
    :func:`_verdict` (the optional global and backend caps are read there, when configured).

    Read under the team's lock, which every writer of the issue's blocker row but a deletion
    holds, so "no blocker row" stays true until the claim commits.
    """
    key, team_key = issue.key, issue.team_key
    one = select(literal(1).label("one")).subquery()
    has_blocker = exists().where(BlockerRow.issue_key == key).label("has_blocker")
    in_flight, recent = blockers.LiveCounts.queries(team_key, key, now)
    rows = db.session.execute(
        select(TrackedIssue, has_blocker, in_flight, recent, MappingRow, _RUNNER_MODE, _MAPPING_BACKOFF)
        .select_from(one)
        .outerjoin(TrackedIssue, TrackedIssue.issue_key == key)
        .outerjoin(MappingRow, MappingRow.team_key == team_key)
        .execution_options(populate_existing=True)
    ).all()
    first = rows[0]  # one row per mapping of the team, or one with no mapping
    reads = _Live(first[0])
    reads.counts = blockers.LiveCounts.knowing(team_key, key, now, first[2], first[3])
    owned = next((row[4:] for row in rows if _owns(issue.provider, row[4])), None)
    reads.knowing_mapping(issue.provider, team_key, owned)
    return first[0], bool(first[1]), reads


def _touch(issue: TrackerIssue, now: datetime, tracked: TrackedIssue) -> None:
    """Refresh the issue's tracked row (read, or new and added by the caller) from the tracker's view."""
    tracked.team_key = issue.team_key
    tracked.provider = issue.provider
    tracked.title = issue.title or tracked.title or ""
    tracked.url = issue.url or tracked.url
    tracked.triggered = bool(issue.triggered)
    tracked.last_seen_at = now


_TRACKED_COLUMNS = (
    TrackedIssue.id,
    TrackedIssue.team_key,
    TrackedIssue.provider,
    TrackedIssue.title,
    TrackedIssue.url,
    TrackedIssue.triggered,
    TrackedIssue.trigger_consumed,
    TrackedIssue.trigger_cleared_at,
    TrackedIssue.last_seen_at,
)


def _tracked_and_blocker_rows(keys: Sequence[str]) -> Any:
    """One query for the issues' tracked rows (:data:`_TRACKED_COLUMNS`) and their blocker rows
    (:data:`blockers.ROW_COLUMNS`), each with ``issue_key`` and ``blocker``, false for a tracked
    row and true for a blocker row; a column the row's table lacks is null. (A blocker row may exist
    without a tracked row, so the two tables are not joined.)"""
    types = {c.key: c.type for c in (*_TRACKED_COLUMNS, *blockers.ROW_COLUMNS)}

    def rows_of(model: Any, is_blocker: Any, columns: Sequence[Any]) -> Any:
        own = {c.key: c for c in columns}
        picked = [own.get(name, cast(null(), type_).label(name)) for name, type_ in types.items()]
        return select(is_blocker.label("blocker"), model.issue_key, *picked).where(
            one_of(model.issue_key, keys)
        )

    return union_all(
        rows_of(TrackedIssue, false(), _TRACKED_COLUMNS), rows_of(BlockerRow, true(), blockers.ROW_COLUMNS)
    )


def _touch_many(
    issues: Sequence[TrackerIssue],
    now: datetime,
    *,
    force: bool,
    fresh_for: timedelta = timedelta(0),
    known: dict[str, Any] | None = None,
    known_locked: bool = False,
    fetched_at: datetime | None = None,
) -> set[str]:
    """:func:`_touch` for many issues in a few statements, skipping those whose trigger is consumed
    (unless ``force``). Rows that only need ``last_seen_at`` moved — most of them, cycle after
    cycle — are moved in one ``UPDATE``, and only when it is older than ``fresh_for``.

    :param known: the issues' rows as read before the caller's locks (a page's snapshot): only
        which triggers are consumed is read again; the rest is compared with these. (A row another
        poller inserted meanwhile makes the insert fail, and the caller tries again without them.)
    :param known_locked: ``known`` was read under the caller's locks, in this transaction: nothing
        is read again.
    :param fetched_at: when the reads the checks were made on began. An issue whose trigger we
        cleared since then is skipped too: a job consumed the trigger and its stage change reached
        the tracker meanwhile (which sets ``trigger_consumed`` back), so what the checks saw is
        older than that change, as :func:`_verdict` finds a listing that began before it.
    :returns: the keys of the issues whose trigger a job consumed meanwhile.
    """
    latest = {issue.key: issue for issue in issues}
    consumed: set[str] = set()
    taken_now = TrackedIssue.trigger_consumed.is_(True)
    if fetched_at is not None:
        taken_now = taken_now | (TrackedIssue.trigger_cleared_at >= fetched_at)
    for chunk in chunks(list(latest)):
        if known is None:
            current = rows_by_issue_key(TrackedIssue, chunk, *_TRACKED_COLUMNS)
        else:
            current = {key: known[key] for key in chunk if key in known}
        if known is None or known_locked:
            taken = {
                key
                for key, row in current.items()
                if row.trigger_consumed
                or (fetched_at is not None and row.trigger_cleared_at is not None
                    and row.trigger_cleared_at >= fetched_at)
            }
        else:
            taken = set(
                db.session.scalars(
                    select(TrackedIssue.issue_key).where(one_of(TrackedIssue.issue_key, chunk), taken_now)
                )
            )
        wanted: dict[str, dict[str, Any]] = {}
        for key in chunk:
            issue, row = latest[key], current.get(key)
            if key in taken and not force:
                consumed.add(key)
                continue
            wanted[key] = {
                "team_key": issue.team_key,
                "provider": issue.provider,
                "title": issue.title or (row.title if row is not None else "") or "",
                "url": issue.url or (row.url if row is not None else None),
                "triggered": bool(issue.triggered),
            }
        write_seen_rows(TrackedIssue, wanted, current, now, fresh_for=fresh_for)
    return consumed


def hold_all(
    held: Sequence[tuple[TrackerIssue, blockers.Blocked]],
    now: datetime,
    report: CycleReport,
    *,
    force: bool = False,
    fresh_for: timedelta = timedelta(0),
    snapshot: _Snapshot | None = None,
    fetched_at: datetime | None = None,
    listed: bool = False,
) -> list[TrackerIssue]:
    """Record blockers found without locks, in one transaction, except for issues another poller
    (or a webhook) dispatched meanwhile.

    :param fresh_for: rows where nothing changed keep a ``last_seen_at`` younger than this (a poll
        cycle passes :data:`SEEN_REFRESH`, sparing the database a write per waiting issue per cycle).
    :param snapshot: the page's snapshot, whose tracked rows are compared with instead of reading
        them again under the locks (only which triggers are consumed is read there; the blocker
        rows are read there, as other pollers write them too).
    :param fetched_at: when the listing (or the single read) the checks saw began: an issue whose
        trigger was cleared since was dispatched meanwhile too (see :func:`_touch_many`).
    :param listed: the issues come from a listing, which may lag behind the tracker (see
        :func:`_record_held`).
    :returns: the issues left to be read again before they are recorded (:func:`_record_held`).

    The teams' locks (one of which each claim holds, taken here in a fixed order) make "dispatched
    meanwhile" visible. Two pollers may insert the same rows at once: the loser retries, reading
    every row afresh.
    """
    if not held:
        return []
    for attempt in range(3):
        known = snapshot if attempt == 0 else None
        try:
            with serialized():
                advisory_locks(f"team:{team}" for team in sorted({issue.team_key for issue, _ in held}))
                tracked_rows = known.tracked_rows if known is not None else None
                dispatched, recorded, unread = _record_held(
                    held, now, force=force, fresh_for=fresh_for, known=tracked_rows, fetched_at=fetched_at,
                    listed=listed,
                )
            break
        except IntegrityError:
            if attempt == 2:
                raise
    _report_held(report, dispatched, recorded)
    return unread


def _record_held(
    held: Sequence[tuple[TrackerIssue, blockers.Blocked]],
    now: datetime,
    *,
    force: bool,
    fresh_for: timedelta,
    known: dict[str, Any] | None,
    known_locked: bool = False,
    known_blockers: dict[str, Any] | None = None,
    fetched_at: datetime | None = None,
    listed: bool = False,
) -> tuple[set[str], list[tuple[TrackerIssue, blockers.Blocked]], list[TrackerIssue]]:
    """The writes of waiting issues, under the caller's locks: their tracked rows (see
    :func:`_touch_many`) and the blockers of those whose trigger no job consumed meanwhile.

    :param known_blockers: the issues' blocker rows, read under the caller's locks in this
        transaction (else they are read here, see :func:`blockers.record_many`).
    :param listed: the issues come from a listing, which may lag behind the tracker: a ``dedup``
        wait that would count as the trigger applied again (:func:`blockers.unconfirmed`) is left
        out, for the caller to read the issue again first (:func:`_check_read_again`), and no wait
        begins again at the listing (that is a fresh read's to say).
    :returns: the keys of the issues dispatched meanwhile, the issues recorded as waiting, and the
        issues left to be read again.
    """
    unread: list[TrackerIssue] = []
    waits = [issue.key for issue, blocked in held if blocked.reason == blockers.DEDUP]
    if listed and not force and waits:
        both = known_locked and known is not None and known_blockers is not None
        to_read = blockers.unconfirmed(waits, tracked=known if both else None,
                                       rows=known_blockers if both else None)
        unread = [issue for issue, _ in held if issue.key in to_read]
        held = [(issue, blocked) for issue, blocked in held if issue.key not in to_read]
    issues = [issue for issue, _ in held]
    dispatched = _touch_many(issues, now, force=force, fresh_for=fresh_for, known=known,
                             known_locked=known_locked, fetched_at=fetched_at)
    recorded = [(issue, blocked) for issue, blocked in held if issue.key not in dispatched]
    blockers.record_many(recorded, now, fresh_for=fresh_for, known=known_blockers,
                         fetched_at=None if listed else fetched_at)
    return dispatched, recorded, unread


def _report_held(
    report: CycleReport, dispatched: set[str], recorded: Sequence[tuple[TrackerIssue, blockers.Blocked]]
) -> None:
    for key in dispatched:
        report.skipped[key] = "trigger already dispatched"
    for issue, blocked in recorded:
        report.hold(issue.key, blocked)


class _InFlight(Exception):
    """The claim's new job broke the unique index of active jobs: one of the issue's is in flight."""


class _MappingGone(Exception):
    """The claim's new job referred to a mapping deleted since the claim read it (PostgreSQL: the
    job's INSERT waited for the deletion's row lock, then broke the foreign key)."""


def consider(
    issue: TrackerIssue,
    *,
    fetched_at: datetime,
    report: CycleReport,
    now: datetime | None = None,
    force: bool = False,
    phase: Phase | None = None,
    launch_now: bool = True,
    snapshot: _Snapshot | None = None,
    held: list[tuple[TrackerIssue, blockers.Blocked]] | None = None,
    listed: bool = False,
    to_read: list[TrackerIssue] | None = None,
) -> Job | None:
    """Check one triggered issue and, when nothing holds it, claim and launch its job.

    A first check runs without locks (on ``snapshot`` when given), so issues that wait — most of
    them on a busy install — cost no lock; an issue it lets through is checked again under the
    locks before its job is created.

    :param fetched_at: when the listing (or the single read) that shows the trigger began.
    :param force: manual dispatch past the blockers and the trigger check (``aiimpl dispatch
        --force``); a paused project and the one-job-in-flight rule still hold.
    :param launch_now: false leaves the claimed job in ``unknown`` (used by tests that simulate a
        crash between the claim and the backend call).
    :param held: when given, blockers of the first check are appended here for the caller to
        record in one go (:func:`hold_all`); else they are recorded at once.
    :param listed: the issue comes from a listing (a search), which may lag behind the tracker:
        an issue whose trigger we cleared before is read again (``get_issue``) before its claim.
    :param to_read: with ``listed``, where an issue whose ``dedup`` wait would count as the trigger
        applied again is appended unrecorded, for the caller to read it again
        (:func:`_check_read_again`); the waits in ``held`` are sorted out when they are recorded.
    :returns: the created job, or ``None`` when the issue was not dispatched.
    """
    now = now or utcnow()
    key = issue.key
    reads = snapshot or _Live()
    first = _verdict(issue, reads, fetched_at=fetched_at, now=now, force=force)
    if snapshot is None:
        # end the live read. (A snapshot check reads nothing: committing after each of a page's
        # issues would only expire every row the session holds, a large cost on a busy install.)
        db.session.commit()
    if listed and to_read is None:
        raise TypeError("consider: a listed issue's check needs to_read")
    # (a listed issue not read again may show a trigger the tracker no longer has)
    unread = listed and not force
    later = to_read if to_read is not None else []  # (to_read itself whenever unread)
    if listed and isinstance(first, _Go) and _ran_before(reads.trigger(key)):
        fetched_at = utcnow()
        issue = _read_again(issue)
        if issue is None:
            report.skipped[key] = TRIGGER_GONE_ON_READ
            return None
        unread = False
        first = _verdict(issue, reads, fetched_at=fetched_at, now=now, force=force)
        if snapshot is None:
            db.session.commit()
    if isinstance(first, str):
        report.skipped[key] = first
        return None
    if isinstance(first, blockers.Blocked):
        if held is not None:
            held.append((issue, first))
        else:
            left = hold_all([(issue, first)], now, report, force=force, fetched_at=fetched_at, listed=unread)
            later.extend(left)
        return None

    job: Job | None = None
    claimed: list[Job] = []  # the claimed job stays loaded after the commit, for its launch
    try:
        with serialized(keep=claimed):
            # the team's lock keeps its cap exact; the global lock keeps the global and backend caps
            advisory_locks([f"team:{issue.team_key}", GLOBAL_LOCK])
            known, has_blocker, reads = _read_for_claim(issue, now)
            tracked = known or TrackedIssue(issue_key=key, team_key=issue.team_key, provider=issue.provider)
            reads.tracked = tracked
            verdict = _verdict(issue, reads, fetched_at=fetched_at, now=now, force=force)
            if not isinstance(verdict, _Go):
                _touch(issue, now, tracked)
                if known is None:
                    db.session.add(tracked)
            if isinstance(verdict, str):
                report.skipped[key] = verdict
                return None
            if isinstance(verdict, blockers.Blocked):
                if unread and verdict.reason == blockers.DEDUP and blockers.unconfirmed([key]):
                    later.append(issue)
                    return None
                blockers.record(issue, verdict, now, fetched_at=None if unread else fetched_at)
                report.hold(key, verdict)
                return None
            mapping = verdict.mapping
            assert isinstance(mapping, MappingRow)
            chosen_phase, plan = _phase_for(mapping, tracked, phase)
            # the job's INSERT goes out alone (a conflict is a job in flight): the issue's row is
            # unchanged so far, or new and not in the session yet. It is brought up to date once,
            # below: a known row in one UPDATE, a new one in one INSERT with every value
            try:
                job = create_job(
                    mapping,
                    key,
                    phase=chosen_phase,
                    provider=issue.provider,
                    choice=verdict.choice,
                    plan=plan,
                    forced=force,
                )
            except IntegrityError as exc:  # rolls the claim back
                if foreign_key_violation(exc):
                    raise _MappingGone from exc
                raise _InFlight from exc
            # the session's credentials and request, committed with the claim: the launch goes
            # straight to the backend instead of reading the job and its mapping again first (with
            # the nonce whose hash the job's INSERT carried)
            prepared = _prepare(job, mapping) if launch_now else None
            _touch(issue, now, tracked)
            if issue.triggered:
                tracked.trigger_consumed = True
            set_stage(
                key,
                _STAGE_OF.get(chosen_phase, Stage.IMPLEMENTING),
                provider=issue.provider,
                job=job,
                now=now,
                tracked=tracked,
                new_job=True,
            )
            if has_blocker:
                blockers.clear(key)
            if known is None:
                db.session.add(tracked)
            entry = Dispatched(key, job.id, job.phase, job.backend, job.shadow)
            claimed.append(job)
    except _InFlight:
        # a job of this issue is still in flight (the partial unique index): already dispatched.
        # The claim is rolled back whole (no savepoint costs two statements on every claim for
        # this rare case); the blocker is recorded in a transaction of its own.
        with serialized():
            advisory_locks([f"team:{issue.team_key}"])
            dedup = blockers.dedup()
            left = unread and bool(blockers.unconfirmed([key]))
            if not left:
                # (--force passes the trigger's checks: its dispatch is no sighting of a trigger)
                blockers.record(issue, dedup, now, fetched_at=None if force or unread else fetched_at)
        if left:
            later.append(issue)
            return None
        report.hold(key, dedup)
        return None
    except _MappingGone:
        # said as the next cycle says it: not "already dispatched", which no job of it is
        with serialized():
            advisory_locks([f"team:{issue.team_key}"])
            gone = blockers.no_mapping(issue.team_key)
            blockers.record(issue, gone, now)
        report.hold(key, gone)
        return None
    report.dispatched.append(entry)
    if snapshot is not None:
        snapshot.counts.add(key, issue.team_key, entry.backend)
    if launch_now:
        _launch(job, entry, report, now, prepared)
        if snapshot is not None and JobStatus(entry.status) not in ACTIVE_STATUSES:
            snapshot.counts.remove(key, issue.team_key, entry.backend)  # its launch ended it
    return job


#: skip reason of a listed issue that, read again, no longer shows its trigger
TRIGGER_GONE_ON_READ = "trigger gone when read again (the listing lagged behind the tracker)"


def _ran_before(state: _TriggerState | None) -> bool:
    """Whether we cleared this issue's trigger before (a job of it ended, or ran and moved it on).

    A tracker's search may lag behind its writes (Jira's index does, for seconds or longer): a
    listing read after our last stage change can still show the trigger that change removed. Such
    an issue is read again before it is dispatched once more; a first dispatch needs no read.
    """
    return state is not None and state.cleared_at is not None


def _read_again(issue: TrackerIssue) -> TrackerIssue | None:
    """The issue as the tracker has it now (``get_issue``), when it still shows the trigger."""
    try:
        fresh = read_issue(issue.provider, issue.key)
    except NotFound:
        return None
    if not fresh.triggered:
        log.info("%s: the listing showed a trigger the issue no longer has (the search lagged)", issue.key)
        return None
    return fresh


def _prepare(job: Job, mapping: MappingRow) -> Prepared | None:
    """:func:`~aiimpl_core.services.launch.prepare` within the claim; if building the request fails
    (a team secret that cannot be read, a model plugin's error), the claim still commits and the
    launch's own first step builds it again and reports the failure as it always has."""
    try:
        return prepare(job, mapping)
    except AiimplError:
        return None
    except Exception:  # noqa: BLE001 - launch builds the request again and reports what fails
        log.warning("building the session request of %s in its claim failed", job.issue_key, exc_info=True)
        return None


def _launch(
    job: Job, entry: Dispatched, report: CycleReport, now: datetime, prepared: Prepared | None = None
) -> None:
    try:
        launch(job, prepared=prepared)
    except DispatchDeferred as exc:
        # the backend rate-limited it: the job waits, unknown, for a later cycle to try it again;
        # the backend is backed off as after any failure, so the next issues wait for it too
        entry.error = exc.message
        entry.deferred_until = exc.until
        report.errors.append(f"{job.issue_key}: {exc.message} (tried again from {iso_z(exc.until)})")
        if job.backend:
            poller.record_failure("runner", job.backend, exc, now)
    except DispatchError as exc:
        # launch ended the job failed and queued its comments (or, the dispatch's answer lost, left
        # it dispatched for its run to be found); a backend that is down is left alone for a while
        # so the next issues wait instead of failing one by one
        entry.error = exc.message
        report.errors.append(f"{job.issue_key}: {exc.message}")
        # a server's cycle or a webhook's check prints no report: its log (at INFO, as gunicorn's
        # is by default) says it; `aiimpl poll` and `aiimpl dispatch` print it in their report
        if isinstance(exc, DispatchUnanswered):
            log.info("dispatch of %s (job %s) got no answer: %s; its run is looked for by its name",
                     job.issue_key, job.id, exc.message)
        else:
            log.info("dispatch of %s (job %s) failed: %s", job.issue_key, job.id, exc.message)
        if job.backend and poller.is_transient(exc):
            poller.record_failure("runner", job.backend, exc, now)
    except AiimplError as exc:  # pragma: no cover - launch converts backend errors already
        entry.error = exc.message
        report.errors.append(f"{job.issue_key}: {exc.message}")
    entry.status = job.status  # launch's last transaction keeps it loaded


def launch_deferred(report: CycleReport, now: datetime) -> None:
    """Try again the dispatches a backend rate-limited whose wait has passed (``launch_after``).

    Each job is taken by clearing its ``launch_after`` in a compare-and-set (still ``unknown``,
    still due): of several pollers, one launches it. A backend still backing off is not tried
    (its jobs stay due for a later cycle, or end ``run_not_found`` after the window). The launch
    is the claim's (fresh credentials, the backend called outside any transaction); rate-limited
    again, the job is deferred again.
    """
    due = db.session.execute(
        select(Job.id, Job.backend)
        .where(Job.status == JobStatus.UNKNOWN.value, Job.launch_after.is_not(None), Job.launch_after <= now)
        .order_by(Job.launch_after, Job.id)
    ).all()
    db.session.commit()
    held: dict[str, bool] = {}
    for job_id, backend_id in due:
        if _stopping(report):
            return
        if backend_id:
            if backend_id not in held:
                held[backend_id] = poller.backoff_of("runner", backend_id, now) is not None
            if held[backend_id]:
                continue
        with serialized():
            taken = db.session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.UNKNOWN.value,
                       Job.launch_after.is_not(None), Job.launch_after <= now)
                .values(launch_after=None),
                execution_options={"synchronize_session": False},
            ).rowcount
        if not taken:
            continue  # another poller took it, or it ended meanwhile
        job = db.session.get_one(Job, job_id, populate_existing=True)
        entry = Dispatched(job.issue_key, job.id, job.phase, job.backend, job.shadow)
        report.dispatched.append(entry)
        _launch(job, entry, report, now)
        if entry.deferred_until is not None and backend_id:
            held[backend_id] = True  # rate-limited again: the backend is backed off now


# -- listings -------------------------------------------------------------------------------


def _after_complete_listing(provider_id: str, seen: set[str], listed_since: datetime, now: datetime) -> None:
    """A complete listing is the truth about which issues carry the trigger right now."""
    with serialized():
        blockers.prune(provider_id, seen, listed_since)
        rows = db.session.execute(
            select(
                TrackedIssue.id, TrackedIssue.issue_key, TrackedIssue.triggered, TrackedIssue.trigger_consumed
            ).where(
                TrackedIssue.provider == provider_id,
                (TrackedIssue.triggered.is_(True)) | (TrackedIssue.trigger_consumed.is_(True)),
            )
        )
        # filtered as they are read, not held all at once: the listing showed most of them again,
        # and thousands of rows held together outlive the garbage collector's young generations
        gone = [row for row in rows if row.issue_key not in seen]
        for chunk in chunks(gone):
            untriggered = [r.id for r in chunk if r.triggered]
            if untriggered:
                db.session.execute(
                    update(TrackedIssue).where(one_of(TrackedIssue.id, untriggered)).values(triggered=False),
                    execution_options={"synchronize_session": False},
                )
            # Only a listing that began after the trigger was consumed can say it is gone; an older
            # one may simply predate the trigger (a webhook dispatched it meanwhile).
            consumed = [r for r in chunk if r.trigger_consumed]
            if not consumed:
                continue
            last_job = dict(
                db.session.execute(
                    select(Job.issue_key, func.max(Job.created_at))
                    .where(one_of(Job.issue_key, [r.issue_key for r in consumed]))
                    .group_by(Job.issue_key)
                ).all()
            )
            cleared = [
                r.id
                for r in consumed
                if last_job.get(r.issue_key) is None or last_job[r.issue_key] < listed_since
            ]
            if cleared:
                db.session.execute(
                    update(TrackedIssue)
                    .where(one_of(TrackedIssue.id, cleared))
                    .values(trigger_consumed=False, trigger_cleared_at=listed_since),
                    execution_options={"synchronize_session": False},
                )


def _handle_page(
    provider_id: str,
    issues: Sequence[TrackerIssue],
    report: CycleReport,
    *,
    now: datetime,
    fetched_at: datetime,
    issue_keys: set[str] | None,
    seen: set[str],
    listing: _ListingReads | None = None,
) -> None:
    """Check and claim one listing page's issues; one issue's trouble does not stop the others."""
    wanted = [i for i in issues if i.triggered]
    seen.update(i.key for i in wanted)
    report.listed[provider_id] = report.listed.get(provider_id, 0) + len(wanted)
    if issue_keys is not None:
        wanted = [i for i in wanted if i.key in issue_keys]
    snapshot, to_read = _settle_waiting_page(provider_id, wanted, report, now=now, fetched_at=fetched_at,
                                             listing=listing)
    if snapshot is not None:
        held: list[tuple[TrackerIssue, blockers.Blocked]] = []
        for issue in wanted:
            if _stopping(report):  # the issues not checked yet are checked by the next cycle
                break
            try:
                consider(issue, fetched_at=fetched_at, report=report, now=now, snapshot=snapshot, held=held,
                         listed=True, to_read=to_read)
            except Exception as exc:  # noqa: BLE001 - reported; the next cycle tries again
                _check_failed(issue.key, exc, report)
        try:
            to_read += hold_all(held, now, report, fresh_for=SEEN_REFRESH, snapshot=snapshot,
                                fetched_at=fetched_at, listed=True)
        except Exception as exc:  # noqa: BLE001 - the blockers are recorded again next cycle
            db.session.rollback()
            log.exception("recording blockers failed")
            report.errors.append(f"blockers: {type(exc).__name__}")
    for issue in to_read:
        if _stopping(report):  # (not recorded: the next cycle's listing shows them again)
            break
        fetched = utcnow()
        try:
            fresh = _read_again(issue)
        except Exception as exc:  # noqa: BLE001 - reported; the next cycle tries again
            _check_failed(issue.key, exc, report)
            if isinstance(exc, ProviderError) and poller.is_transient(exc):
                # the tracker fails: backed off as a failed listing, the rest read by a later cycle
                poller.record_failure("ticketing", provider_id, exc, now)
                break
            continue
        try:
            _check_read_again(issue, fresh, fetched, report, now)
        except Exception as exc:  # noqa: BLE001 - reported; the next cycle tries again
            _check_failed(issue.key, exc, report)


def _check_failed(key: str, exc: Exception, report: CycleReport) -> None:
    db.session.rollback()
    if not isinstance(exc, AiimplError):
        log.exception("dispatching %s failed", key)
    report.errors.append(f"{key}: {exc.message if isinstance(exc, AiimplError) else type(exc).__name__}")


def _check_read_again(
    issue: TrackerIssue, fresh: TrackerIssue | None, fetched_at: datetime, report: CycleReport, now: datetime
) -> None:
    """Check a listed issue once more with what the tracker says now (``fresh``, read with
    ``get_issue`` from ``fetched_at`` by :func:`_read_again`, outside any lock): the listing showed
    it triggered while its job runs, after the trigger was taken off, and its ``dedup`` wait would
    count as a person's new trigger (:func:`blockers.unconfirmed`), which the job's end keeps by
    leaving its own stage change out. A search lagging behind the tracker (Jira's index) shows the
    trigger that change took off: taken for a new one, the issue was left in the job's stage with
    no job once it ended. Skipped when the read no longer shows the trigger; else checked as a
    webhook's read is (its wait then counts, or the job ended meanwhile and it is dispatched)."""
    if fresh is None:
        report.skipped[issue.key] = TRIGGER_GONE_ON_READ
        return
    consider(fresh, fetched_at=fetched_at, report=report, now=now)


def _settle_waiting_page(
    provider_id: str,
    wanted: Sequence[TrackerIssue],
    report: CycleReport,
    *,
    now: datetime,
    fetched_at: datetime,
    listing: _ListingReads | None,
) -> tuple[_Snapshot | None, list[TrackerIssue]]:
    """Read the page's snapshot under the locks of its teams and, when it lets no issue through —
    most pages, cycle after cycle: the waiting issues of a busy install — record the page in the
    same transaction (:func:`hold_all`'s writes, :func:`_record_held`, on rows read under the
    same locks, so nothing is read again). ``None`` when the page is done; else its snapshot, for
    the checks one issue at a time and their claims (the locks are released first: a claim takes
    its own). With it, the waiting issues left to be read again (:func:`_check_read_again`)."""
    if not wanted:
        return None, []
    held: list[tuple[TrackerIssue, blockers.Blocked]] = []
    skipped: dict[str, str] = {}
    try:
        with serialized():
            advisory_locks(f"team:{team}" for team in sorted({issue.team_key for issue in wanted}))
            snapshot = _Snapshot(provider_id, [i.key for i in wanted], now, listing, commit=False,
                                 with_blockers=True)
            for issue in wanted:
                first = _verdict(issue, snapshot, fetched_at=fetched_at, now=now, force=False)
                if isinstance(first, str):
                    skipped[issue.key] = first
                elif isinstance(first, blockers.Blocked):
                    held.append((issue, first))
                else:
                    return snapshot, []  # some issue goes on to its claim: commit, releasing the locks
            dispatched, recorded, unread = _record_held(
                held, now, force=False, fresh_for=SEEN_REFRESH, known=snapshot.tracked_rows,
                known_locked=True, known_blockers=snapshot.blocker_rows, fetched_at=fetched_at, listed=True,
            )
    except Exception as exc:  # noqa: BLE001 - a check's own error is reported issue by issue below
        # Another poller inserting one of these rows meanwhile (an issue seen under another team)
        # is expected: the one-at-a-time path records the page again, reading every row afresh.
        # (serialized rolled its transaction back; this covers a failure before it began)
        db.session.rollback()
        if not isinstance(exc, IntegrityError):
            log.debug("checking the page at once failed; checking its issues one by one", exc_info=True)
        return _Snapshot(provider_id, [i.key for i in wanted], now, listing), []
    report.skipped.update(skipped)
    _report_held(report, dispatched, recorded)
    return None, unread


def _listing_failed(provider_id: str, exc: Exception, report: CycleReport, now: datetime) -> None:
    """Only the tracker's own call counts against the connection (never our database)."""
    db.session.rollback()
    if not isinstance(exc, AiimplError):
        log.exception("listing %s failed", provider_id)
    poller.record_failure("ticketing", provider_id, exc, now)
    shown = exc.message if isinstance(exc, AiimplError) else type(exc).__name__
    report.providers_skipped[provider_id] = f"listing failed: {shown}"
    report.providers_failed.add(provider_id)


def _poll_provider(
    provider_id: str,
    teams: Sequence[str],
    report: CycleReport,
    *,
    now: datetime,
    issue_keys: set[str] | None,
    lease_seconds: float | None,
    holder: str | None,
) -> None:
    backoff = poller.backoff_of("ticketing", provider_id, now)
    if backoff is not None:
        report.providers_skipped[provider_id] = (
            f"backing off until {backoff.until.isoformat()}: {backoff.error}"
        )
        report.providers_failed.add(provider_id)  # (its issues are not read while it is down)
        return
    if lease_seconds is not None and not poller.acquire_lease(
        f"poll:{provider_id}", max(1.0, lease_seconds * 0.9), holder=holder, now=now
    ):
        report.providers_skipped[provider_id] = "another poller read it this interval"
        return
    tracker = _tracker(provider_id)
    teams = sorted(set(teams))
    listing: _ListingReads | None = None  # read with the first page
    seen: set[str] = set()
    listed_since = utcnow()
    complete = False
    try:
        pages = iter(tracker.iter_triggered(teams))
    except Exception as exc:  # noqa: BLE001 - one connection's failure must not stop the cycle
        _listing_failed(provider_id, exc, report, now)
        return
    try:
        while True:
            fetched_at = utcnow()  # the time this page's remote call began
            try:
                page = checked_page(provider_id, next(pages), report)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - one connection's failure must not stop the cycle
                _listing_failed(provider_id, exc, report, now)
                return
            if listing is None and page.issues:
                # (an empty listing — a tracker with nothing triggered, or one that searches only
                # mapped teams and has none — reads nothing more)
                listing = _ListingReads.read(provider_id, now)
            _handle_page(
                provider_id,
                page.issues,
                report,
                now=now,
                fetched_at=fetched_at,
                issue_keys=issue_keys,
                seen=seen,
                listing=listing,
            )
            if page.complete:
                complete = True
                break
            if _stopping(report):  # the next cycle reads the listing again
                break
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()
    # (a failure another host recorded while this listing was read stands)
    poller.record_success("ticketing", provider_id, since=listed_since)
    report.listed.setdefault(provider_id, 0)
    if complete and issue_keys is None:
        _after_complete_listing(provider_id, seen, listed_since, now)


def run_cycle(
    now: datetime | None = None,
    issue_keys: Iterable[str] | None = None,
    *,
    lease_seconds: float | None = None,
    holder: str | None = None,
    reconcile: bool = True,
    deliver: bool = True,
) -> CycleReport:
    """One poll cycle: list, check, claim and launch; then reconcile and deliver the outbox.

    :param now: the cycle's clock (tests move it forward); defaults to the current time.
    :param issue_keys: only consider these issues of the listings (and skip the clean-up a complete
        listing allows).
    :param lease_seconds: hold each tracker's listing lease this long (the poll loop passes its
        interval); ``None`` reads every tracker whatever other pollers do.

    Run by a poll loop that is asked to stop, it ends after the step it is in (a listing page, a
    dispatch, a backend's reconcile, a tracker write the outbox sends): :func:`.poller.stoppable`.
    """
    from . import reconcile as reconcile_mod

    started = utcnow()
    given = now
    now = now or started
    report = CycleReport(started_at=started)
    wanted = set(issue_keys) if issue_keys is not None else None
    facade = current_app.extensions["aiimpl"]
    installed = set(facade.ids("ticketing"))
    mapped = _teams_by_provider()
    if wanted is None:
        # first: a rate-limited job already holds its team's slot, and waited longer than any issue
        launch_deferred(report, now)
    # Every configured tracker is read, whether or not a mapping names it: on a fresh install, or
    # once its last mapping is deleted, its triggered issues are still shown (``no-mapping``), and
    # the blockers of a deleted mapping's team are checked again instead of keeping their reason.
    for provider_id in sorted(installed | set(mapped)):
        if _stopping(report):
            break
        teams = mapped.get(provider_id)
        if provider_id not in installed:
            report.providers_skipped[provider_id] = "tracker plugin not installed"
            continue
        try:
            configured = _tracker(provider_id).is_configured()
        except Exception as exc:  # noqa: BLE001 - one connection's failure must not stop the cycle
            if not isinstance(exc, AiimplError):
                log.exception("asking whether %s is configured failed", provider_id)
            report.providers_skipped[provider_id] = (
                exc.message if isinstance(exc, AiimplError) else type(exc).__name__
            )
            report.providers_failed.add(provider_id)
            continue
        if not configured:
            if teams is not None:  # an installed tracker nobody uses is not worth a line
                report.providers_skipped[provider_id] = "not configured"
            continue
        _poll_provider(
            provider_id,
            teams or [],
            report,
            now=now,
            issue_keys=wanted,
            lease_seconds=lease_seconds,
            holder=holder,
        )
    db.session.commit()
    if reconcile and not _stopping(report):
        try:
            # the clock as the reconcile starts (unless the caller set one): a run it links now was not
            # running before the dispatch this cycle stamped with the real time
            report.reconciled = reconcile_mod.reconcile(
                now=given or utcnow(), lease_seconds=lease_seconds, holder=holder
            ).as_dict()
        except Exception as exc:  # noqa: BLE001 - the outbox still goes out
            db.session.rollback()
            log.exception("reconcile failed")
            report.errors.append(f"reconcile: {type(exc).__name__}: {exc}")
    if deliver and not _stopping(report):
        report.outbox = outbox.deliver(now=max(now, utcnow()))
        # a stop during the delivery ends it after the write under way; one after its last write
        # left nothing to the next cycle
        report.stopped = bool(report.outbox.get("left"))
    report.finished_at = utcnow()
    return report


def _stopping(report: CycleReport) -> bool:
    """Whether the poll loop running the cycle was asked to stop (:func:`.poller.stoppable`): the
    cycle then starts no further step, and its report says so."""
    if poller.stop_asked():
        report.stopped = True
    return report.stopped


def run_cycle_for_issues(
    provider_id: str, issue_keys: list[str], report: CycleReport | None = None
) -> CycleReport:
    """Check and dispatch these issues at once (tracker webhooks call this).

    Each issue is read with ``get_issue`` and goes through the same blockers and claim as in a
    poll cycle; an issue without its trigger only has its blocker row cleared.

    :param report: the report to fill in (a webhook's answer may read it before the check ends).
    """
    now = utcnow()
    report = CycleReport(started_at=now) if report is None else report
    tracker = _tracker(provider_id)
    backoff = poller.backoff_of("ticketing", provider_id, now)
    if backoff is not None:
        report.providers_skipped[provider_id] = (
            f"backing off until {backoff.until.isoformat()}: {backoff.error}"
        )
        report.finished_at = utcnow()
        return report
    for key in dict.fromkeys(issue_keys):
        fetched_at = utcnow()
        try:
            issue = read_issue(provider_id, key, tracker)
        except NotFound:
            report.skipped[key] = "not found in the tracker"
            continue
        except (ProviderError, PluginContractError) as exc:
            if poller.is_transient(exc):
                poller.record_failure("ticketing", provider_id, exc, now)
            elif isinstance(exc, PluginContractError):
                log.error("%s", exc.message)
            report.errors.append(f"{key}: {exc.message}")
            break
        if not issue.triggered:
            with serialized():
                blockers.clear(key)
                db.session.execute(
                    update(TrackedIssue).where(TrackedIssue.issue_key == key).values(triggered=False),
                    execution_options={"synchronize_session": False},
                )
            report.skipped[key] = "not triggered"
            continue
        report.listed[provider_id] = report.listed.get(provider_id, 0) + 1
        try:
            consider(issue, fetched_at=fetched_at, report=report, now=now)
        except AiimplError as exc:
            report.errors.append(f"{key}: {exc.message}")
    db.session.commit()
    report.outbox = outbox.deliver(issue_keys=list(dict.fromkeys(issue_keys)))
    report.finished_at = utcnow()
    return report


# -- manual dispatch --------------------------------------------------------------------------


def resolve_provider(issue_key: str) -> tuple[str, MappingRow | None]:
    """The tracker connection and mapping that own an issue key.

    :raises ConfigError: no mapping owns the key (the reference's ``no-mapping`` message, after the
        key), or the team's mapping names a tracker that is not installed or is disabled.
    """
    facade = current_app.extensions["aiimpl"]
    installed = set(facade.ids("ticketing"))
    by_provider = _teams_by_provider()
    for provider_id, teams in by_provider.items():
        if provider_id not in installed:
            continue
        team = team_of_key(provider_id, issue_key)
        if team in teams:
            row = _mapping_for(provider_id, team)
            return provider_id, row[0] if row is not None else None
    team = issue_key.rsplit("-", 1)[0]
    for provider_id, teams in sorted(by_provider.items()):
        if provider_id not in installed and team in teams:
            raise ConfigError(f"the mapping of team {team} uses the tracker '{provider_id}', which is not "
                              "installed or is disabled (`aiimpl plugins list` shows the plugins)")
    stored = db.session.execute(select(MappingRow.ticketing).where(MappingRow.team_key == team)).first()
    if stored is not None and not (stored[0] or {}).get("provider"):
        # (saved before a tracker plugin was installed)
        raise ConfigError(f"the mapping of team {team} names no tracker: set one with "
                          f"{set_tracker_command(team)}")
    raise ConfigError(f"{issue_key}: {blockers.no_mapping(team).message}")


def dispatch_issue(issue_key: str, *, phase: Phase | None = None, force: bool = False) -> CycleReport:
    """Manual dispatch of one issue (``aiimpl dispatch``): the same checks unless ``force``."""
    provider_id, _mapping = resolve_provider(issue_key)
    now = utcnow()
    report = CycleReport(started_at=now)
    fetched_at = utcnow()
    issue = read_issue(provider_id, issue_key)
    if not issue.triggered and not force:
        # its trigger is taken off as its job starts: --force would only be refused as a duplicate
        active = [s.value for s in ACTIVE_STATUSES]
        in_flight = db.session.execute(
            select(Job.id, Job.status)
            .where(Job.issue_key == issue_key, Job.provider == provider_id, Job.status.in_(active))
            .order_by(Job.id.desc()).limit(1)
        ).first()
        untriggered = "the issue does not carry the trigger"
        report.skipped[issue_key] = (
            f"its job {in_flight.id} is in flight ({in_flight.status}); {untriggered}"
            if in_flight is not None else f"{untriggered} (use --force to dispatch anyway)"
        )
    else:
        consider(issue, fetched_at=fetched_at, report=report, now=now, force=force, phase=phase)
    db.session.commit()
    report.outbox = outbox.deliver(issue_keys=[issue_key])
    report.finished_at = utcnow()
    return report
