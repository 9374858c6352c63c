"""The in-app scheduler: poll cycles in a daemon thread of the web process.

For single-process installs (``AIIMPL_SCHEDULER=1``). Installs with several workers or hosts run
``aiimpl poll`` as its own process instead; running both is safe (the dispatcher's claim prevents
double dispatch, and tracker leases keep the listings from being read twice per interval).
"""

from __future__ import annotations

import logging
import threading

from flask import Flask

from .poller import Poller

log = logging.getLogger(__name__)

_EXTENSION = "aiimpl_scheduler"


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

    thread = threading.Thread(target=run, name="aiimpl-scheduler", daemon=True)
    thread.start()
    ready.wait(5)
    app.extensions[_EXTENSION] = (thread, holder.get("poller"))
    return thread


def stop_scheduler(app: Flask, timeout: float = 30) -> None:
    """Ask the scheduler to stop after its current cycle and wait for it."""
    entry = app.extensions.pop(_EXTENSION, None)
    if entry is None:
        return
    thread, poller = entry
    if poller is not None:
        poller.stop()
    thread.join(timeout)
