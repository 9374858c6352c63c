"""The poll loop, and what lets several pollers share the remote connections politely.

Several pollers may run at once (threads, gunicorn workers, hosts). Two things are shared through
the database:

- **Leases** (:class:`~aiimpl_core.orm.Lease`): the poller holding ``poll:<tracker>`` reads that
  tracker's listing for one interval, so two pollers do not both read it in the same interval.
  This only saves remote calls; correctness never depends on it (the dispatcher's claim is what
  prevents double dispatch).
- **Back-offs** (:class:`~aiimpl_core.orm.Setting` rows ``backoff:<kind>:<id>``): a tracker or
  runner backend that failed (timeout, 5xx, 429) is left alone until its "not before" time, by
  every poller; the others carry on. A failure that is no outage (a refused key, a setting the
  plugin refuses) holds back only the processes with the same settings of that connection
  (:func:`settings_fingerprints`): an operator's ``aiimpl poll --once`` with a wrong key in their
  shell does not stop the server's poller, whose key is fine.

A poll loop that is asked to stop ends its cycle after the step it is in (:func:`stoppable`), so
that a deploy's grace period is not outlasted by a long cycle and the cycle is not cut mid-way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .. import logs
from ..config import secret_keys
from ..database import CLOCK_TOLERANCE, advisory_lock, clock_skew, failure_message, serialized, upsert
from ..errors import ProviderConfigError, ProviderError, ProviderNotConfigured, describe_plugin_error
from ..extensions import db
from ..http import is_transient
from ..orm import Lease, Setting, utcnow

log = logging.getLogger(__name__)

MIN_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(minutes=15)
#: the longest wait after a failure that is no outage (a refused key, a setting the plugin refuses,
#: a plugin's bug): the operator who fixes it sees it taken up that soon
MAX_BACKOFF_NOT_TRANSIENT = timedelta(minutes=2)
#: the longest ``Retry-After`` honoured (a remote's rate-limit windows are an hour at most)
MAX_RETRY_AFTER = timedelta(hours=1)


def retry_after_wait(retry_after: float, limit: timedelta) -> timedelta:
    """A remote's ``Retry-After`` as a wait: at least a second, and at most ``limit``. A longer one
    (an epoch sent as seconds, ``inf``) would hold what waits on it for as long, or not fit a date
    at all and fail the caller."""
    seconds = float(retry_after)
    seconds = seconds if math.isfinite(seconds) else limit.total_seconds()
    return timedelta(seconds=min(max(1.0, seconds), limit.total_seconds()))


def holder_id() -> str:
    """This poller's name in lease rows: host, process and thread."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:128]


# -- leases -----------------------------------------------------------------------------------


def acquire_lease(
    name: str, seconds: float, *, holder: str | None = None, now: datetime | None = None, renew: bool = True
) -> bool:
    """Take or renew the lease ``name`` for ``seconds``; false when another holder has it.

    :param renew: false takes only an expired lease, ours included: something done at most once
        per ``seconds`` by all holders together.
    """
    holder = holder or holder_id()
    now = now or utcnow()
    expires = now + timedelta(seconds=max(0.0, seconds))
    try:
        with serialized():
            row = db.session.get(Lease, name, populate_existing=True)
            if row is None:
                db.session.add(Lease(name=name, holder=holder, expires_at=expires))
                return True
            # compare-and-set: only an expired lease, or our own, changes hands
            free = (Lease.expires_at <= now) | (Lease.holder == holder) if renew else Lease.expires_at <= now
            result = db.session.execute(
                update(Lease)
                .where(Lease.name == name, free)
                .values(holder=holder, expires_at=expires),
                execution_options={"synchronize_session": False},
            )
            return result.rowcount == 1
    except IntegrityError:  # another poller inserted the row first
        db.session.rollback()
        return False


def clock_problem(now: Callable[[], datetime] | None = None) -> str | None:
    """What is wrong with this host's clock, measured against the database server's (PostgreSQL;
    on SQLite they are one clock): ``None`` while they agree within :data:`CLOCK_TOLERANCE`
    seconds. Leases, back-offs and the reconciler's windows compare times that every host writes
    with its own clock, so a host ahead takes a lease another still holds, and a host behind
    waits out leases and back-offs longer than it should."""
    measured = clock_skew(now or utcnow)
    if measured is None:
        return None
    skew, error = measured
    if abs(skew) - error <= CLOCK_TOLERANCE:
        return None
    return (f"this host's clock is {abs(skew):.1f}s {'ahead of' if skew > 0 else 'behind'} the "
            f"database server's (more than {CLOCK_TOLERANCE:.0f}s): leases, back-offs and timeouts "
            f"compare times written by every host; keep the clocks in sync (NTP)")


def release_lease(name: str, *, holder: str | None = None) -> None:
    holder = holder or holder_id()
    with serialized():
        row = db.session.get(Lease, name, populate_existing=True)
        if row is not None and row.holder == holder:
            db.session.delete(row)


# -- back-offs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """A connection left alone until ``until`` after ``failures`` failures in a row."""

    until: datetime
    failures: int
    error: str


def backoff_key(kind: str, provider_id: str) -> str:
    """The setting that holds a connection's back-off."""
    return f"backoff:{kind}:{provider_id}"[:64]


def settings_fingerprints(kind: str, provider_id: str) -> tuple[str, ...]:
    """What a back-off records of the settings this process has for a connection: the variables its
    provider declares (``config_vars``: the key or token, the URL …) as this process's configuration
    holds them, hashed (never the values themselves) with ``AIIMPL_SECRET_KEY``, then with each key
    of ``AIIMPL_SECRET_KEY_FALLBACKS``: while the key changes, a process on the new key and one still
    on the old one (or a back-off recorded before the change) have the same settings all the same.
    A stored secret is the same for every process and is not part of it. Empty when the provider is
    not installed here."""
    facade = current_app.extensions.get("aiimpl")
    cls = facade.classes.get(kind, {}).get(provider_id) if facade is not None else None
    if cls is None:
        return ()
    values = {var.name: str(current_app.config.get(var.name) or "") for var in cls.config_vars}
    text = b"aiimpl-backoff-settings:" + json.dumps([kind, provider_id, values], sort_keys=True).encode()
    return tuple(hmac.new(key.encode(), text, hashlib.sha256).hexdigest()[:32]
                 for key in secret_keys(current_app.config))


def _holds_here(
    value: dict[str, Any], kind: str, provider_id: str, ours: tuple[str, ...] | None = None
) -> bool:
    """Whether a back-off holds this process back: every back-off of an outage does; one of a
    failure that is no outage only when it was recorded with this process's settings (a key
    refused to a process with another key says nothing of this process's key), hashed with any
    key this process knows, or any the recording process knew.

    :param ours: this process's :func:`settings_fingerprints` of the connection, when the caller
        has them already (else worked out here, only for a back-off that has any)."""
    recorded = value.get("settings")
    if not recorded:
        return True
    if ours is None:
        ours = settings_fingerprints(kind, provider_id)
    if not ours:
        return True
    theirs = recorded if isinstance(recorded, list) else []
    return any(isinstance(one, str) and hmac.compare_digest(one.encode(), mine.encode())
               for one in theirs for mine in ours)


def backoff_of(kind: str, provider_id: str, now: datetime | None = None) -> Backoff | None:
    """The connection's back-off while it is in force for this process, else ``None``."""
    row = db.session.scalar(select(Setting).where(Setting.key == backoff_key(kind, provider_id)))
    return backoff_from(row.value if row is not None else None, now, kind=kind, provider_id=provider_id)


def backoff_from(
    value: Any, now: datetime | None = None, *, kind: str | None = None, provider_id: str | None = None
) -> Backoff | None:
    """The back-off a setting's value holds while it is in force, else ``None``.

    :param kind: with ``provider_id``, the connection the setting is of: a back-off recorded with
        other settings of it than this process's (:func:`settings_fingerprints`) is not in force here.
    """
    if not isinstance(value, dict):
        return None
    if kind is not None and provider_id is not None and not _holds_here(value, kind, provider_id):
        return None
    try:
        until = datetime.fromisoformat(str(value["until"]))
        failures = int(value.get("failures") or 1)
    except (KeyError, ValueError, TypeError):
        return None  # (a row edited by hand: no back-off, rather than a failed cycle or /metrics)
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)  # the poller writes UTC
    if until <= (now or utcnow()):
        return None
    return Backoff(until, failures, str(value.get("error") or ""))


def is_outage(exc: BaseException) -> bool:
    """Whether a failure is one a wait may see end (:func:`is_transient`: no answer, 429, 5xx, a
    ``Retry-After``), rather than a provider's settings refused or missing, or a plugin's bug that
    no remote's failure caused (an error raised from another is judged by that one)."""
    if isinstance(exc, ProviderConfigError | ProviderNotConfigured) or not is_transient(exc):
        return False
    cause = exc.__cause__
    return cause is None or (isinstance(cause, ProviderError) and is_outage(cause))


def record_failure(kind: str, provider_id: str, exc: BaseException, now: datetime | None = None) -> Backoff:
    """Remember that a connection failed; returns the new back-off.

    ``Retry-After`` is honoured as given, up to an hour (:data:`MAX_RETRY_AFTER`); otherwise the
    wait doubles per failure in a row, from 30 seconds up to 15 minutes for an outage
    (:func:`is_outage`), up to 2 minutes for any other failure. Any other failure is recorded
    with this process's settings of the connection (:func:`settings_fingerprints`), and holds back
    only the processes with the same settings.
    """
    now = now or utcnow()
    key = backoff_key(kind, provider_id)
    outage = is_outage(exc)
    ours = settings_fingerprints(kind, provider_id)
    # (under every key this process knows: one still on a key it keeps as a fallback matches it too)
    settings = None if outage else list(ours) or None
    retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
    # stored, and shown in cycle reports: a foreign exception by its class only (its message may
    # quote a setting); the log line below has the whole message, masked of the known secrets
    message = logs.masked(describe_plugin_error(exc))[:500]
    with serialized() as session:
        # two pollers (or a poller and a webhook) failing on one connection at once: the second
        # waits here, then counts on from the first's row instead of inserting its own
        advisory_lock(f"backoff:{key}", session)
        row = session.get(Setting, key, populate_existing=True)
        failures = 1
        counts_on = row is not None and isinstance(row.value, dict) and _holds_here(
            row.value, kind, provider_id, ours)
        if counts_on:
            # (the failures of a process with other settings are not this process's in a row)
            failures = int(row.value.get("failures") or 0) + 1
        if retry_after is not None:
            # (the connection is not tried meanwhile)
            wait = retry_after_wait(retry_after, MAX_RETRY_AFTER)
        else:
            longest = MAX_BACKOFF if outage else MAX_BACKOFF_NOT_TRANSIENT
            wait = min(longest, MIN_BACKOFF * 2 ** min(failures - 1, 10))
        # ``at``: when it was recorded, by the wall clock as record_success's ``since`` (``now`` may be
        # the start of a cycle), and on which host's clock
        value: dict[str, Any] = {"until": (now + wait).isoformat(), "failures": failures, "error": message,
                                 "at": utcnow().isoformat(), "host": socket.gethostname()[:255]}
        if settings is not None:
            value["settings"] = settings
        if row is None:
            session.add(Setting(key=key, value=value))
        else:
            row.value = value
    log.warning(
        "%s %s failed (%s); leaving it alone for %ss", kind, provider_id, str(exc)[:500] or message,
        int(wait.total_seconds()),
    )
    return Backoff(now + wait, failures, message)


def record_success(kind: str, provider_id: str, since: datetime | None = None) -> None:
    """Forget a connection's failures (no write when there were none).

    :param since: when the call that succeeded began. A failure recorded after it (by another
        host's poller or a webhook, whose call failed while this one was under way) is kept: this
        success says nothing of the connection after it began, and the other's back-off stands.
    """
    key = backoff_key(kind, provider_id)
    if db.session.scalar(select(Setting.key).where(Setting.key == key)) is None:
        db.session.commit()
        return
    with serialized() as session:
        advisory_lock(f"backoff:{key}", session)  # (as record_failure: one reads after the other wrote)
        row = session.get(Setting, key, populate_existing=True)
        if row is not None and not (since is not None and _recorded_after(row.value, since)):
            session.delete(row)


def _recorded_after(value: Any, since: datetime) -> bool:
    """Whether a back-off's failure was recorded after ``since`` by this host's clock; by another
    host's, which may be behind this one's by the clock tolerance, after that much before ``since``.
    (A row without the time, written by an earlier version or by hand, was not.)"""
    try:
        at = datetime.fromisoformat(str(value["at"]))
    except (KeyError, ValueError, TypeError):
        return False
    if value.get("host") != socket.gethostname():
        since -= timedelta(seconds=CLOCK_TOLERANCE)
    return (at if at.tzinfo is not None else at.replace(tzinfo=UTC)) > since


# -- stopping a cycle -------------------------------------------------------------------------

#: the stop request of the poll loop whose cycle this thread runs (:func:`stoppable`)
_STOP: ContextVar[threading.Event | None] = ContextVar("aiimpl_poll_stop", default=None)


@contextmanager
def stoppable(stop: threading.Event) -> Iterator[None]:
    """Run a cycle that ends early once ``stop`` is set (a poll loop asked to stop: SIGTERM, a
    gunicorn worker's graceful stop).

    The cycle checks :func:`stop_asked` between its steps: a tracker's listing page, a dispatch,
    a runner backend's reconcile, a tracker write the outbox sends. The step under way when the stop comes
    ends as it would have (a dispatch is claimed, launched and recorded, or not started at all);
    the steps not started are left to the next cycle, this process's or the one that takes over
    (the loop gives back its listing and reconcile leases as it ends).
    """
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def stop_asked() -> bool:
    """Whether the poll loop running this thread's cycle was asked to stop (:func:`stoppable`);
    false outside a poll loop (a tracker webhook, ``aiimpl dispatch``)."""
    stop = _STOP.get()
    return stop is not None and stop.is_set()


# -- the loop ---------------------------------------------------------------------------------

#: the settings row of the latest cycle any poll loop finished (``aiimpl_poller_last_cycle_*``)
LAST_CYCLE_KEY = "poller:last_cycle"


def record_last_cycle(report: Any, holder: str) -> None:
    """Note that a poll loop finished a cycle: when, by whom, and how it went (one upsert)."""
    finished = report.finished_at or utcnow()
    value = {
        "startedAt": report.started_at.isoformat(),
        "finishedAt": finished.isoformat(),
        "holder": holder,
        # (those the backend refused or rate-limited are errors of the cycle, not dispatches)
        "dispatched": len(report.dispatched) - getattr(report, "failed_dispatches", 0)
        - getattr(report, "deferred_dispatches", 0),
        # a tracker whose listing failed is an error of the cycle too: its issues were not read
        "errors": len(report.errors) + len(getattr(report, "providers_failed", ())),
    }
    stmt = upsert(Setting).values(key=LAST_CYCLE_KEY, value=value, updated_at=finished)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Setting.key], set_={"value": value, "updated_at": finished}
    )
    with serialized(writes_first=True):
        db.session.execute(stmt)


def last_cycle_from(value: Any) -> tuple[datetime, int] | None:
    """When the latest cycle finished and its number of errors, from the row's value."""
    if not isinstance(value, dict):
        return None
    try:
        return datetime.fromisoformat(str(value["finishedAt"])), int(value.get("errors") or 0)
    except (KeyError, ValueError, TypeError):
        return None


def housekeep(holder: str | None = None) -> None:
    """After a cycle: the hourly housekeeping of all the pollers together
    (:func:`~aiimpl_core.services.housekeeping.maybe_prune`, nothing when one ran it within the
    hour). A failure is logged and waits for the next hour; the cycle's work stands."""
    from . import housekeeping

    try:
        housekeeping.maybe_prune(holder=holder)
    except Exception:  # noqa: BLE001 - housekeeping waits for the next hour, polling goes on
        db.session.rollback()
        log.exception("housekeeping failed")


class Poller:
    """Runs poll cycles every ``interval`` seconds until :meth:`stop` is called.

    A stop request ends the current cycle after the step it is in (:func:`stoppable`); the wait
    between cycles ends at once.
    """

    def __init__(self, interval: float | None = None) -> None:
        self.interval = float(
            interval if interval is not None else current_app.config.get("AIIMPL_POLL_INTERVAL") or 60
        )
        self.holder = holder_id()
        self._stop = threading.Event()
        self.cycles = 0
        self._shadow_left = False
        self._clock_checked = False

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_once(self) -> Any:
        from .dispatch import run_cycle

        try:
            if not self._shadow_left:
                self._leave_shadow()
            if not self._clock_checked:
                self._check_clock()
            with stoppable(self._stop):
                report = run_cycle(lease_seconds=self.interval, holder=self.holder)
            try:
                record_last_cycle(report, self.holder)
            except Exception:  # noqa: BLE001 - only the heartbeat is missed; the next cycle writes it
                db.session.rollback()
                log.exception("recording the poll cycle failed")
            if not self.stopping:  # (when stopped, housekeeping is left to the poller that takes over)
                housekeep(self.holder)
            return report
        finally:
            self.cycles += 1
            db.session.remove()

    def _leave_shadow(self) -> None:
        """Before the loop's first cycle: outside shadow mode, give back what shadow jobs held
        (:func:`.shadow.leave`). A ``RUNNER_MODE=shadow`` taken out of the environment takes effect
        at a restart, which ``POST /api/runner-mode`` never sees. A database that does not answer
        fails the cycle as it would have failed anyway; the next cycle tries again."""
        from . import shadow

        try:
            shadow.leave()
        except SQLAlchemyError:
            raise
        except Exception:  # noqa: BLE001 - a fault of its own must not stop polling
            db.session.rollback()
            log.exception("giving back what shadow jobs held failed")
        self._shadow_left = True

    def _check_clock(self) -> None:
        """Before the loop's first cycle: warn when this host's clock is off the database's (a
        database that does not answer fails the cycle; the next one measures again)."""
        try:
            problem = clock_problem()
        except SQLAlchemyError:
            raise
        except Exception:  # noqa: BLE001 - a fault of its own must not stop polling
            db.session.rollback()
            log.exception("comparing this host's clock with the database's failed")
            problem = None
        self._clock_checked = True
        if problem:
            log.warning("%s", problem)

    def run_forever(self, on_cycle: Any = None) -> None:
        """Run cycles until stopped; a failing cycle is logged and the loop goes on."""
        while not self._stop.is_set():
            try:
                report = self.run_once()
                if on_cycle is not None:
                    on_cycle(report)
            except SQLAlchemyError as exc:
                # the database is down or restarting: one line per cycle, not a driver's traceback
                log.error("poll cycle failed: %s", failure_message(exc))
                db.session.remove()
            except Exception:  # noqa: BLE001 - one bad cycle must not end the poller
                log.exception("poll cycle failed")
                db.session.remove()
            self._stop.wait(self.interval)
