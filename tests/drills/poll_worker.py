"""An orchestrator process for the crash drill (run as a script by ``test_crash.py``).

Usage: ``python poll_worker.py`` with the app's configuration as JSON in ``AIIMPL_DRILL_CONFIG``.
It builds the app with the real Linear and GitHub Actions plugins (pointed at the drill's fakes),
prints ``ready`` and runs poll cycles back to back until it is killed.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    import aiimpl_gha.plugin
    import aiimpl_linear.plugin

    from aiimpl_core.app import create_app
    from aiimpl_core.services.poller import Poller

    config = json.loads(os.environ["AIIMPL_DRILL_CONFIG"])
    app = create_app(config, plugins=[aiimpl_linear.plugin, aiimpl_gha.plugin], load_entrypoints=False,
                     environ={})
    with app.app_context():
        poller = Poller(interval=float(config.get("AIIMPL_POLL_INTERVAL", 0.1)))
        print("ready", flush=True)
        poller.run_forever(on_cycle=lambda report: print("cycle", report.summary(), flush=True))


if __name__ == "__main__":
    sys.exit(main())
