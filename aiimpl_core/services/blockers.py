"""Why an eligible issue is not dispatched: the checks, their messages, and the Blockers view rows.

The checks run in the order of the product spec (§4): ``no-mapping``, paused, ``concurrency``,
``dedup``, open blocking issues, then the optional global and per-backend caps. The messages of
the reference's "Blocker reasons" table are reproduced word for word; the other reasons follow
the same shape and say which condition holds the issue.

:func:`evaluate` only reads; the dispatcher calls it inside its claim (under the team and global
locks), so the counts it sees cannot change before the job is created.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select, update

from ..config import SETTINGS_BY_NAME
from ..database import chunks, one_of, rows_by_issue_key, write_seen_rows
from ..extensions import db
from ..orm import Blocker as BlockerRow
from ..orm import Job, TrackedIssue, utcnow
from ..orm import Mapping as MappingRow
from ..types import ACTIVE_STATUSES, MappingView, TrackerIssue

NO_MAPPING = "no-mapping"
PAUSED = "paused"
CONCURRENCY = "concurrency"
DEDUP = "dedup"
BLOCKED_BY = "blocked-by"
GLOBAL_CAP = "global-cap"
BACKEND_CAP = "backend-cap"
BACKEND_UNAVAILABLE = "backend-unavailable"

_ACTIVE = [s.value for s in ACTIVE_STATUSES]


@dataclass(frozen=True)
class Blocked:
    """One reason an issue waits, as the Blockers view shows it."""

    reason: str
    message: str


#: The reasons below that take a few plain values are made once per distinct value and shared
#: (a :class:`Blocked` cannot change): a busy install holds thousands of issues each cycle for the
#: same handful of reasons.
_shared = lru_cache(maxsize=1024)


@_shared
def no_mapping(team_key: str) -> Blocked:
    return Blocked(NO_MAPPING, f"No mapping for team {team_key}. Add one in Projects.")


@_shared
def paused(team_key: str) -> Blocked:
    return Blocked(PAUSED, f"Project {team_key} is paused.")


@_shared
def concurrency(in_progress: int, cap: int) -> Blocked:
    return Blocked(CONCURRENCY, f"at concurrency cap ({in_progress}/{cap}). Waiting for a slot.")


@_shared
def dedup() -> Blocked:
    return Blocked(DEDUP, "Already dispatched recently. Waiting for the in-flight job.")


def blocked_by(keys: Iterable[str]) -> Blocked:
    keys = list(keys)
    noun = "issue" if len(keys) == 1 else "issues"
    return Blocked(BLOCKED_BY, f"Blocked by open {noun} {', '.join(keys)}. Waiting until done.")


@_shared
def global_cap(in_progress: int, cap: int) -> Blocked:
    return Blocked(GLOBAL_CAP, f"at global concurrency cap ({in_progress}/{cap}). Waiting for a slot.")


@_shared
def backend_cap(backend_id: str, in_progress: int, cap: int) -> Blocked:
    return Blocked(
        BACKEND_CAP, f"at runner backend cap for {backend_id} ({in_progress}/{cap}). Waiting for a slot."
    )


def backend_unavailable(backend_id: str, until: datetime) -> Blocked:
    return Blocked(
        BACKEND_UNAVAILABLE,
        f"Runner backend {backend_id} is unavailable. Retrying after {until.strftime('%H:%M:%S')} UTC.",
    )


def no_backend(runner_mode: str, execution_mode: str | None) -> Blocked:
    """No installed plugin runs the project's jobs: they wait, none is failed on its ticket."""
    if runner_mode in ("default", "shadow"):
        return Blocked(
            BACKEND_UNAVAILABLE,
            f"No runner backend {execution_mode} is installed and enabled. Install or enable its "
            "plugin, or change the project's executionMode.",
        )
    return Blocked(
        BACKEND_UNAVAILABLE,
        f"Runner mode {runner_mode} selects no installed and enabled runner backend. Install or "
        "enable its plugin, or change the runner mode.",
    )


# -- counts ---------------------------------------------------------------------------------


def _recent_query(issue_key: str, since: datetime) -> Any:
    return select(Job.id).where(Job.issue_key == issue_key, Job.status.in_(_ACTIVE), Job.created_at > since)


def _team_count_query(team_key: str, excluding: str | None = None) -> Any:
    """Issues of the team with a non-terminal job, leaving ``excluding`` out."""
    query = select(func.count(func.distinct(Job.issue_key))).where(
        Job.team_key == team_key, Job.status.in_(_ACTIVE)
    )
    return query if excluding is None else query.where(Job.issue_key != excluding)


def _dedup_window() -> timedelta:
    """``AIIMPL_DEDUP_WINDOW_SECONDS`` as set, ``0`` included (no window: a job still in flight is
    then caught by the unique index of active jobs alone); 24 hours where the app was built
    without it."""
    seconds = current_app.config.get("AIIMPL_DEDUP_WINDOW_SECONDS")
    if seconds is None:
        seconds = SETTINGS_BY_NAME["AIIMPL_DEDUP_WINDOW_SECONDS"].default
    return timedelta(seconds=int(seconds))


class LiveCounts:
    """The counts the checks need, read from the database at each call (used under the locks).

    The team's count and whether the issue it leaves out has a recent job are read in one
    statement (the checks ask both of a team with a cap, one after the other).
    """

    def __init__(self) -> None:
        self._recent: tuple[str, datetime, bool] | None = None  # issue, since, answer
        self._team: tuple[str, str, int] | None = None  # team, the issue left out, count

    @staticmethod
    def queries(team_key: str, issue_key: str, now: datetime) -> tuple[Any, Any]:
        """What :meth:`team` (leaving ``issue_key`` out) and :meth:`recent_active` read, as a scalar
        subquery and an ``EXISTS`` for a caller to read with its own query (see :meth:`knowing`)."""
        count = _team_count_query(team_key, issue_key).scalar_subquery()
        return count, _recent_query(issue_key, now - _dedup_window()).exists()

    @classmethod
    def knowing(cls, team_key: str, issue_key: str, now: datetime, count: int, recent: bool) -> LiveCounts:
        """Counts that answer :meth:`team` and :meth:`recent_active` for this issue with what the
        caller read under the same locks (the values of :meth:`queries`)."""
        counts = cls()
        counts._team = (team_key, issue_key, int(count or 0))
        counts._recent = (issue_key, now - _dedup_window(), bool(recent))
        return counts

    def team(self, team_key: str, *, excluding: str | None = None, now: datetime | None = None) -> int:
        """Issues of the team with a non-terminal job (the ``N`` of the concurrency message).

        :param now: with ``excluding``, also learn whether that issue has a recent job, for
            :meth:`recent_active` to answer without a query.
        """
        if excluding is not None and self._team is not None and self._team[:2] == (team_key, excluding):
            return self._team[2]
        if excluding is None or now is None:
            return int(db.session.scalar(_team_count_query(team_key, excluding)) or 0)
        count, recent = db.session.execute(select(*self.queries(team_key, excluding, now))).one()
        self._recent = (excluding, now - _dedup_window(), bool(recent))
        return int(count or 0)

    def recent_active(self, issue_key: str, now: datetime) -> bool:
        """Whether a non-terminal job of the issue was created inside the dedup window."""
        since = now - _dedup_window()
        if self._recent is not None and self._recent[:2] == (issue_key, since):
            return self._recent[2]
        return db.session.scalar(_recent_query(issue_key, since).limit(1)) is not None

    def total(self) -> int:
        return int(db.session.scalar(select(func.count(Job.id)).where(Job.status.in_(_ACTIVE))) or 0)

    def backend(self, backend_id: str) -> int:
        return int(
            db.session.scalar(
                select(func.count(Job.id)).where(Job.status.in_(_ACTIVE), Job.backend == backend_id)
            )
            or 0
        )


class SnapshotCounts:
    """The same counts from one read of the non-terminal jobs, kept up to date with the jobs this
    poller creates. Used for the first, lock-free check of a listing page; every dispatch is
    checked again with :class:`LiveCounts` under the locks."""

    def __init__(self, now: datetime) -> None:
        self.team_issues: dict[str, set[str]] = {}
        self.recent: set[str] = set()
        self.by_backend: dict[str | None, int] = {}
        self.count = 0
        since = now - _dedup_window()
        rows = db.session.execute(
            select(Job.issue_key, Job.team_key, Job.backend, Job.created_at).where(Job.status.in_(_ACTIVE))
        ).all()
        for issue_key, team_key, backend_id, created_at in rows:
            self.add(issue_key, team_key, backend_id, recent=created_at > since)

    def add(self, issue_key: str, team_key: str, backend_id: str | None, *, recent: bool = True) -> None:
        self.team_issues.setdefault(team_key, set()).add(issue_key)
        if recent:
            self.recent.add(issue_key)
        self.by_backend[backend_id] = self.by_backend.get(backend_id, 0) + 1
        self.count += 1

    def remove(self, issue_key: str, team_key: str, backend_id: str | None) -> None:
        """A job counted by :meth:`add` ended (its launch failed)."""
        issues = self.team_issues.get(team_key, set())
        if issue_key not in issues:
            return
        issues.discard(issue_key)
        self.recent.discard(issue_key)
        self.by_backend[backend_id] -= 1  # add() counted it
        self.count -= 1

    def team(self, team_key: str, *, excluding: str | None = None, now: datetime | None = None) -> int:
        issues = self.team_issues.get(team_key, set())
        return len(issues) - (1 if excluding in issues else 0)

    def recent_active(self, issue_key: str, now: datetime) -> bool:
        return issue_key in self.recent

    def total(self) -> int:
        return self.count

    def backend(self, backend_id: str) -> int:
        return self.by_backend.get(backend_id, 0)


Counts = LiveCounts | SnapshotCounts


# -- the checks -----------------------------------------------------------------------------


def evaluate(
    issue: TrackerIssue,
    mapping: MappingRow | MappingView | None,
    *,
    backend_id: str | None,
    now: datetime,
    counts: Counts | None = None,
) -> Blocked | None:
    """The first blocker that holds ``issue``, in the product spec's order, or ``None``."""
    counts = counts if counts is not None else LiveCounts()
    if mapping is None:
        return no_mapping(issue.team_key)
    if mapping.paused:
        return paused(mapping.team_key)
    cap = mapping.max_in_progress
    if cap is not None and cap > 0:
        # An issue that already has a job in flight takes no new slot, so it is not counted against
        # itself: the dedup check below is what holds it.
        if counts.team(mapping.team_key, excluding=issue.key, now=now) >= cap:
            return concurrency(counts.team(mapping.team_key), cap)
    if counts.recent_active(issue.key, now):
        return dedup()
    if issue.open_blockers:
        return blocked_by(b.key for b in issue.open_blockers)
    global_limit = current_app.config.get("AIIMPL_GLOBAL_CAP")
    if global_limit:
        count = counts.total()
        if count >= int(global_limit):
            return global_cap(count, int(global_limit))
    backend_caps = current_app.config.get("AIIMPL_BACKEND_CAPS") or {}
    if backend_id and backend_id in backend_caps:
        count = counts.backend(backend_id)
        if count >= int(backend_caps[backend_id]):
            return backend_cap(backend_id, count, int(backend_caps[backend_id]))
    return None


# -- the Blockers view rows -----------------------------------------------------------------


#: What :func:`record_many` compares an issue's blocker row with (and ``issue_key``).
ROW_COLUMNS = (
    BlockerRow.id,
    BlockerRow.team_key,
    BlockerRow.provider,
    BlockerRow.title,
    BlockerRow.reason,
    BlockerRow.message,
    BlockerRow.first_seen_at,
    BlockerRow.last_seen_at,
)


def record_many(
    held: Sequence[tuple[TrackerIssue, Blocked]],
    now: datetime,
    *,
    fresh_for: timedelta = timedelta(0),
    known: dict[str, Any] | None = None,
    fetched_at: datetime | None = None,
) -> None:
    """:func:`record` for many issues at once, in a few statements whatever their number (the caller
    commits). A poll cycle over a busy install finds most issues held for the same reason as in the
    cycle before: those rows only have ``last_seen_at`` moved, in one ``UPDATE``, and only when it
    is older than ``fresh_for``.

    :param known: the issues' blocker rows (each with ``issue_key`` and :data:`ROW_COLUMNS`), read
        under the caller's locks in this transaction; an issue missing from it has none. Without
        it they are read here.
    :param fetched_at: when the read of the tracker that shows the issues triggered began (see
        :func:`_dedup_seen_again`); ``None`` for a listing, which may lag behind the tracker
        (:func:`unconfirmed`).
    """
    latest = {issue.key: (issue, blocked) for issue, blocked in held}

    def new_wait(row: Any) -> dict[str, Any]:
        # a new reason is a new wait
        return {"first_seen_at": now} if row.reason != latest[row.issue_key][1].reason else {}

    for chunk in chunks(list(latest)):
        if known is None:
            current = rows_by_issue_key(BlockerRow, chunk, *ROW_COLUMNS)
        else:
            current = {key: known[key] for key in chunk if key in known}
        wanted = {
            key: {
                "team_key": latest[key][0].team_key,
                "provider": latest[key][0].provider,
                "title": latest[key][0].title,
                "reason": latest[key][1].reason,
                "message": latest[key][1].message,
            }
            for key in chunk
        }
        write_seen_rows(
            BlockerRow,
            wanted,
            current,
            now,
            fresh_for=fresh_for,
            on_insert={"first_seen_at": now},
            on_change=new_wait,
        )
    if fetched_at is not None:
        _dedup_seen_again([key for key, (_, held) in latest.items() if held.reason == DEDUP], fetched_at)


_UNREAD = object()


def record(
    issue: TrackerIssue,
    blocked: Blocked,
    now: datetime | None = None,
    *,
    row: object = _UNREAD,
    fetched_at: datetime | None = None,
) -> None:
    """Create or refresh the issue's blocker row (the caller commits).

    :param row: the issue's current row (or ``None``) when the caller read it already.
    :param fetched_at: when the read of the tracker that shows the issue triggered began (see
        :func:`_dedup_seen_again`); ``None`` for a listing, which may lag behind the tracker
        (:func:`unconfirmed`).
    """
    now = now or utcnow()
    if row is _UNREAD:
        row = db.session.scalar(select(BlockerRow).where(BlockerRow.issue_key == issue.key))
    assert row is None or isinstance(row, BlockerRow)
    if row is None:
        db.session.add(
            BlockerRow(
                issue_key=issue.key,
                team_key=issue.team_key,
                provider=issue.provider,
                title=issue.title,
                reason=blocked.reason,
                message=blocked.message,
                first_seen_at=now,
                last_seen_at=now,
            )
        )
    else:
        if row.reason != blocked.reason:
            row.first_seen_at = now  # a new reason is a new wait
        row.reason = blocked.reason
        row.message = blocked.message
        row.title = issue.title
        row.team_key = issue.team_key
        row.provider = issue.provider
        row.last_seen_at = now
    if fetched_at is not None and blocked.reason == DEDUP:
        _dedup_seen_again([issue.key], fetched_at)


def _dedup_seen_again(keys: Sequence[str], fetched_at: datetime) -> None:
    """The ``dedup`` waits of these issues that began no later than their trigger was last taken off
    (``trigger_cleared_at``: the job's stage change reached the tracker, or a complete listing no
    longer showed the trigger) begin again at ``fetched_at`` when the read that shows them triggered
    began after that: the trigger it shows is one a person applied again, not the one the in-flight
    job took (a read with ``get_issue``, not a listing: a search lagging behind the tracker still
    shows the trigger taken off, see :func:`unconfirmed`), and the job's end tells the two apart by
    when the wait began (:func:`.outcomes._triggered_again`). Without this, a wait seen before the
    job's stage change was sent (or stamped by a cycle that began before it) kept its first
    sighting, the newer trigger was taken for the old one, and the job's end took it off.

    One statement, run once the caller wrote the rows, under its team locks, comparing with the
    issues' tracked rows as committed when it runs (a stage change sent meanwhile included).
    """
    cleared = (
        select(TrackedIssue.trigger_cleared_at)
        .where(TrackedIssue.issue_key == BlockerRow.issue_key)
        .scalar_subquery()
    )
    for chunk in chunks(keys):
        db.session.execute(
            update(BlockerRow)
            .where(
                one_of(BlockerRow.issue_key, chunk),
                BlockerRow.reason == DEDUP,
                BlockerRow.first_seen_at <= cleared,
                cleared < fetched_at,
            )
            .values(first_seen_at=fetched_at, last_seen_at=fetched_at),
            execution_options={"synchronize_session": False},
        )


def unconfirmed(
    keys: Sequence[str], *, tracked: dict[str, Any] | None = None, rows: dict[str, Any] | None = None
) -> set[str]:
    """The issues among ``keys``, held by ``dedup``, whose wait recorded from a listing would count
    as the trigger applied again (:func:`.outcomes._triggered_again`): their trigger was taken off
    (``trigger_cleared_at``), and their wait is none that began after that. A tracker's search may
    lag behind its writes and still show the trigger taken off: such a sighting counts only once a
    read of the issue (``get_issue``) shows the trigger; until then it is not recorded.

    :param tracked: the issues' tracked rows and ``rows`` their blocker rows (with
        :data:`ROW_COLUMNS`), read under the caller's locks in this transaction; without them,
        one query reads what is compared.
    """
    if tracked is not None and rows is not None:
        return {key for key in keys if _counts_as_new(tracked.get(key), rows.get(key))}
    counted = (
        select(BlockerRow.id)
        .where(
            BlockerRow.issue_key == TrackedIssue.issue_key,
            BlockerRow.reason == DEDUP,
            BlockerRow.first_seen_at > TrackedIssue.trigger_cleared_at,
        )
        .exists()
    )
    found: set[str] = set()
    for chunk in chunks(keys):
        found.update(
            db.session.scalars(
                select(TrackedIssue.issue_key).where(
                    one_of(TrackedIssue.issue_key, chunk),
                    TrackedIssue.trigger_cleared_at.is_not(None),
                    ~counted,
                )
            )
        )
    return found


def _counts_as_new(tracked: Any, row: Any) -> bool:
    cleared = tracked.trigger_cleared_at if tracked is not None else None
    if cleared is None:
        return False
    return row is None or row.reason != DEDUP or row.first_seen_at <= cleared


def clear(issue_key: str) -> None:
    """Remove the issue's blocker row (dispatched, or no longer triggered). The caller commits."""
    db.session.execute(delete(BlockerRow).where(BlockerRow.issue_key == issue_key))


def prune(provider_id: str, seen: set[str], listed_since: datetime) -> int:
    """After a complete listing: drop the provider's blockers the listing did not show again.

    Rows refreshed after the listing began (a webhook's check running meanwhile) are kept, also
    when the refresh commits while the delete waits for the row: the delete checks it again.
    """
    still_stale = (BlockerRow.provider == provider_id, BlockerRow.last_seen_at < listed_since)
    stale = db.session.scalars(select(BlockerRow.issue_key).where(*still_stale)).all()
    gone = [key for key in stale if key not in seen]
    removed = 0
    for chunk in chunks(gone):
        removed += db.session.execute(
            delete(BlockerRow).where(BlockerRow.issue_key.in_(chunk), *still_stale)
        ).rowcount
    return removed
