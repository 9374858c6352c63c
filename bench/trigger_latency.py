"""Trigger-to-dispatch latency: through Linear's webhook, and through polling.

    python -m bench.trigger_latency [--db sqlite|postgres] [--webhooks 20] [--polled 10] [--interval 2]

The app (real Linear plugin, real GitHub Actions backend) is served by a threaded werkzeug server;
the fake Linear and the fake GitHub run in threads of this process, and every request and answer
is checked against the services' descriptions at the end.

- **webhook**: the trigger label is applied in the fake Linear, then a signed ``Issue`` delivery
  is posted to ``POST /api/linear/webhook``. The latency runs from the label being applied to the
  workflow dispatch arriving at the fake GitHub (the job launched), sampled every 5 ms.
- **polling**: a poller thread runs cycles every ``--interval`` seconds; triggers are applied at
  random moments and the same end point is awaited. The bound is the interval plus one cycle.
"""
from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from .common import fresh_database, migrate, print_table, write_result

SECRET = "bench-secret-key-0123456789abcdef"
TEAM = "ENG"


@contextmanager
def scene(db_kind: str) -> Iterator[dict[str, Any]]:
    import aiimpl_gha.plugin
    import aiimpl_linear.plugin
    from aiimpl_linear.testing import FakeLinear
    from werkzeug.serving import make_server

    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.testing.fake_github import FakeGitHub

    url, drop = fresh_database(db_kind)
    linear, gh = FakeLinear().start(), FakeGitHub().start()
    server = None
    try:
        linear.add_team(TEAM)
        gh.add_repo("acme", "eng")
        gh.add_installation("acme")
        config = {
            "AIIMPL_DATABASE_URL": url,
            "AIIMPL_SECRET_KEY": SECRET,
            "AIIMPL_PUBLIC_URL": "http://orchestrator.bench",
            "AIIMPL_GITHUB_API_URL": gh.url,
            "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
            "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem,
            **linear.config(),
        }
        app = create_app(config, plugins=[aiimpl_linear.plugin, aiimpl_gha.plugin], load_entrypoints=False,
                         environ={})
        migrate(app)
        with app.app_context():
            row = Mapping(team_key=TEAM, owner="acme", repo="eng", default_branch="main",
                          execution_mode="github-actions", ticketing={"provider": "linear"})
            db.session.add(row)
            db.session.commit()
            app.extensions["aiimpl"].runner("github-actions").sync_workflows(row.view())
            db.session.remove()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield {"app": app, "linear": linear, "gh": gh, "base": f"http://127.0.0.1:{server.server_port}"}
        gh.assert_clean()
        assert not linear.validation_errors, linear.validation_errors[:3]
    finally:
        if server is not None:
            server.shutdown()
        from aiimpl_core.extensions import db

        if "app" in locals():
            with app.app_context():
                db.engine.dispose()
        linear.stop()
        gh.stop()
        drop()


def _launched(gh: Any, key: str) -> bool:
    with gh.lock:
        return any(f" {key} " in run.title for run in gh.runs.values())


def _wait_launched(gh: Any, key: str, limit: float) -> float:
    """Seconds (perf counter) at which ``key``'s workflow dispatch reached the fake GitHub."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if _launched(gh, key):
            return time.perf_counter()
        time.sleep(0.005)
    raise TimeoutError(f"{key} was not dispatched within {limit} s")


def webhook_latencies(s: dict[str, Any], count: int) -> list[float]:
    linear, gh, base = s["linear"], s["gh"], s["base"]
    out = []
    session = requests.Session()
    for _ in range(count):
        issue = linear.add_issue(TEAM, "Triggered by webhook", labels=[])
        key = issue["identifier"]
        started = time.perf_counter()
        linear.add_labels(key, "AI-Implement")  # the person applies the trigger
        body = json.dumps(linear.issue_webhook_payload(key, action="update")).encode()
        resp = session.post(f"{base}/api/linear/webhook", data=body, timeout=30, headers={
            "Content-Type": "application/json", "Linear-Event": "Issue", "Linear-Delivery": f"d-{key}",
            "Linear-Signature": linear.sign(body)})
        if resp.status_code != 200:
            raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text[:300]}")
        out.append(_wait_launched(gh, key, 30) - started)
    return out


def polling_latencies(s: dict[str, Any], count: int, interval: float) -> tuple[list[float], list[float]]:
    from aiimpl_core.extensions import db
    from aiimpl_core.services.poller import Poller

    linear, gh, app = s["linear"], s["gh"], s["app"]
    cycle_times: list[float] = []
    ready = threading.Event()
    holder: dict[str, Poller] = {}

    def loop() -> None:
        with app.app_context():
            poller = holder["p"] = Poller(interval=interval)
            ready.set()
            last = [time.perf_counter()]

            def on_cycle(report: Any) -> None:
                if report.finished_at and report.started_at:
                    cycle_times.append((report.finished_at - report.started_at).total_seconds())
                last[0] = time.perf_counter()

            poller.run_forever(on_cycle=on_cycle)
            db.session.remove()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    ready.wait(30)
    rng = random.Random(11)
    out = []
    try:
        for _ in range(count):
            time.sleep(rng.uniform(0, interval))  # a random moment relative to the cycles
            issue = linear.add_issue(TEAM, "Triggered, found by polling", labels=[])
            key = issue["identifier"]
            started = time.perf_counter()
            linear.add_labels(key, "AI-Implement")
            out.append(_wait_launched(gh, key, interval * 4 + 30) - started)
    finally:
        holder["p"].stop()
        thread.join(60)
    return out, cycle_times


def summary(kind: str, values: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(values)
    return {"path": kind, "samples": len(values), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "max_ms": round(ordered[-1] * 1000, 1), "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
            **extra}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"], help="the database")
    parser.add_argument("--webhooks", type=int, default=20, help="triggers delivered by webhook")
    parser.add_argument("--polled", type=int, default=10, help="triggers found by polling")
    parser.add_argument("--interval", type=float, default=2.0, help="poll interval for the polling path (s)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with scene(args.db) as s:
        hooks = webhook_latencies(s, args.webhooks)
        polled, cycles = polling_latencies(s, args.polled, args.interval)
    cycle = max(cycles) if cycles else 0.0
    rows = [
        summary("webhook", hooks, target_ms=1000, within_target=max(hooks) < 1.0),
        summary("polling", polled, interval_s=args.interval,
                bound_ms=round((args.interval + cycle) * 1000, 1),
                within_bound=max(polled) <= args.interval + cycle),
    ]
    print_table(rows, ["path", "samples", "p50_ms", "mean_ms", "max_ms", "target_ms", "interval_s",
                       "bound_ms",
                       "within_target", "within_bound"])
    print("\nwritten:", write_result(f"trigger_latency-{args.db}", {"database": args.db, "paths": rows,
                                                                    "webhook_s": hooks, "polling_s": polled,
                                                                    "cycle_s": cycles}))


if __name__ == "__main__":
    main()
