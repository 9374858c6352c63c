"""An orchestrator process for the drills (run as a script through ``helpers.start_poller``).

Usage: ``python poll_worker.py READY_FD`` with the app's configuration as JSON in
``AIIMPL_DRILL_CONFIG``. It builds the app with the real tracker plugin named by
``AIIMPL_DRILL_TRACKER`` (a package with a ``plugin`` module: ``aiimpl_linear``, the default, or
``aiimpl_jira``) and the GitHub Actions plugin (pointed at the drill's fakes), writes ``ready`` to
the file descriptor ``READY_FD`` and runs poll cycles back to back until it is killed, printing a
line after each: ``cycle``, the keys of the issues it dispatched (JSON) and what it did, separated
by tabs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any


def main() -> None:
    import aiimpl_gha.plugin

    from aiimpl_core.app import create_app
    from aiimpl_core.services.poller import Poller

    config = json.loads(os.environ["AIIMPL_DRILL_CONFIG"])
    tracker = importlib.import_module(f"{os.environ.get('AIIMPL_DRILL_TRACKER', 'aiimpl_linear')}.plugin")
    app = create_app(config, plugins=[tracker, aiimpl_gha.plugin], load_entrypoints=False, environ={})
    with app.app_context():
        poller = Poller(interval=float(config.get("AIIMPL_POLL_INTERVAL", 0.1)))
        with os.fdopen(int(sys.argv[1]), "w") as ready:
            ready.write("ready\n")

        def done(report: Any) -> None:
            keys = json.dumps([d.issue_key for d in report.dispatched])
            print("cycle", keys, report.summary(), sep="\t", flush=True)

        poller.run_forever(on_cycle=done)


if __name__ == "__main__":
    sys.exit(main())
