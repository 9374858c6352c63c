"""The in-app scheduler: poll cycles in a daemon thread of the web process.

For single-process installs (``AIIMPL_SCHEDULER=1``). Installs with several workers or hosts run
``aiimpl poll`` as its own process instead; running both is safe (the dispatcher's claim prevents
double dispatch, and tracker leases keep the listings from being read twice per interval).

A stop ends the current cycle after the step it is in (a listing page, a dispatch, a backend's
reconcile, a tracker write the outbox sends: :func:`.poller.stoppable`), which is waited for: a cycle cut in
the middle (the process gone while a dispatch or a tracker write is on its way) leaves its job to
the reconciler and its writes to be taken again once their leases run out, and a launch it cut
ends the job ``run_not_found`` minutes later. A loop that stopped gives back its listing and
reconcile leases (:func:`give_back_leases`), and the next poller does the rest of the cycle.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref

from flask import Flask
from sqlalchemy import delete, or_
from sqlalchemy.exc import SQLAlchemyError

from ..database import failure_message, serialized
from ..extensions import db
from ..orm import Lease
from .poller import Poller

log = logging.getLogger(__name__)

_EXTENSION = "aiimpl_scheduler"

#: the apps of this process whose scheduler runs: a gunicorn worker's graceful stop stops them all
#: (:func:`ask_schedulers_to_stop`, :func:`stop_schedulers`) without knowing its app
_RUNNING: weakref.WeakSet[Flask] = weakref.WeakSet()

#: the leases a poll loop takes again every cycle: a tracker's listing (``poll:<tracker>``) and a
#: backend's reconcile (``reconcile:<backend>``). The others a loop holds (``sweep:<backend>``,
#: ``housekeeping``) say that something was done for a while, whoever holds them, and stay.
LOOP_LEASES = ("poll:", "reconcile:")


def start_scheduler(app: Flask, interval: float | None = None) -> threading.Thread:
    """Start the poll loop for ``app`` in a daemon thread (once per app); return the thread."""
    existing = app.extensions.get(_EXTENSION)
    if existing is not None and existing[0].is_alive():
        return existing[0]
    ready = threading.Event()
    holder: dict[str, Poller] = {}

    def run() -> None:
        with app.app_context():
            poller = Poller(interval)
            holder["poller"] = poller
            ready.set()
            log.info("in-app scheduler: a poll cycle every %ss", poller.interval)
            poller.run_forever()
            give_back_leases(poller.holder)

    thread = threading.Thread(target=run, name="aiimpl-scheduler", daemon=True)
    thread.start()
    ready.wait(5)
    app.extensions[_EXTENSION] = (thread, holder.get("poller"))
    _RUNNING.add(app)
    return thread


def stop_scheduler(app: Flask, timeout: float | None = 30, *, warn: bool = True) -> bool:
    """Ask the scheduler to stop (its cycle ends after the current step) and wait for it,
    ``timeout`` seconds at most (``None``: until it ends); false when its cycle was still running
    then (it goes on, and is cut when the process ends; ``warn`` logs that)."""
    entry = app.extensions.get(_EXTENSION)
    if entry is None:
        return True
    thread, poller = entry
    if poller is not None:
        poller.stop()
    thread.join(None if timeout is None else max(0.0, timeout))
    if thread.is_alive():
        if warn:
            log.warning("in-app scheduler: the step its poll cycle was in did not end within %gs of the "
                        "stop; the process ends in the middle of it", timeout)
        return False
    app.extensions.pop(_EXTENSION, None)
    _RUNNING.discard(app)
    return True


def ask_schedulers_to_stop() -> None:
    """Ask every scheduler of this process to stop (its cycle ends after the current step), without
    waiting (safe in a signal handler: it only sets events)."""
    for app in list(_RUNNING):
        entry = app.extensions.get(_EXTENSION)
        if entry is not None and entry[1] is not None:
            entry[1].stop()


def schedulers_running() -> bool:
    """Whether a scheduler of this process is still in a cycle or waiting for the next."""
    return any((entry := app.extensions.get(_EXTENSION)) is not None and entry[0].is_alive()
               for app in list(_RUNNING))


def stop_schedulers(timeout: float, *, warn: bool = True) -> bool:
    """Stop every scheduler of this process (:func:`stop_scheduler`), all within ``timeout``
    seconds; false when a cycle was still running then."""
    ask_schedulers_to_stop()
    deadline = time.monotonic() + timeout
    stopped = True
    for app in list(_RUNNING):
        stopped = stop_scheduler(app, deadline - time.monotonic(), warn=warn) and stopped
    return stopped


def give_back_leases(holder: str) -> None:
    """Give back the leases a poll loop that stopped (between cycles) took again every cycle
    (:data:`LOOP_LEASES`): the poller that takes over (the next process of a deploy, another
    host) reads the trackers and asks the backends at its next cycle instead of waiting out what
    is left of this loop's interval. A failure (the database gone meanwhile) is logged: the leases
    then run out as they would have."""
    try:
        with serialized():
            db.session.execute(
                delete(Lease).where(Lease.holder == holder,
                                    or_(*(Lease.name.startswith(prefix) for prefix in LOOP_LEASES))),
                execution_options={"synchronize_session": False},
            )
    except SQLAlchemyError as exc:  # the database is down: one line, as the poll loop says it
        log.warning("the poll loop's leases were not given back (they run out by themselves): %s",
                    failure_message(exc))
    except Exception:  # noqa: BLE001 - the stop goes on; the leases run out by themselves
        log.exception("the poll loop's leases were not given back (they run out by themselves)")
    finally:
        db.session.remove()
