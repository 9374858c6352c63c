"""Cost of one poll cycle at scale, against the local fake servers.

    python -m bench.poll_cycle [--db sqlite|postgres] [--issues 1000,10000] [--inflight 500] [--profile]

The scene: 100 mappings (teams ``T000``–``T099``, one repository each) on the real Linear plugin
talking to the fake Linear server (``aiimpl_linear.testing.FakeLinear``, pages of 250 issues); the
triggered issues are spread over 10 of those teams; 500 in-flight jobs (50 per busy team, runs
``in_progress``) belong to the real GitHub Actions backend talking to the fake GitHub
(``aiimpl_core.testing.fake_github.FakeGitHub``), both served from a child process
(``bench/fakes_process.py``). Each busy team's cap is 55, so the **first
cycle** dispatches 5 issues per team (50 workflow dispatches) and records every other issue as
blocked; the **steady-state cycles** that follow find the caps full and everything blocked. Their
clock is the first cycle's start plus a few seconds, whatever the machine's speed, so that they
write nothing; the **refresh** cycle after them runs a minute later (``SEEN_REFRESH``), when each
waiting issue's "last seen" time is moved in its tracked-issue and blocker rows, as a poller does
once a minute.

Measured per cycle:

- tracker calls: requests the fake Linear received (listing pages, and the stage changes of the
  dispatched issues);
- backend calls: requests the fake GitHub received (run listings, token, dispatches);
- database queries: SQLAlchemy ``before_cursor_execute`` events on the app's engine, and the
  time from each statement's send to its answer (``db_s``);
- orchestrator time: the cycle's wall time minus the time spent inside ``requests`` sends to the
  fakes (while a send waits, the orchestrator is idle, so what remains is the orchestrator's own
  work: Python, JSON, SQL and the database's answers), and the CPU time of its thread;
- ``gc_s``: pauses of the cyclic garbage collector inside the cycle.

``--profile`` writes each cycle's cProfile statistics to ``bench/results/`` (it slows the cycle).
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import os
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import event

from .common import RESULTS, fresh_database, migrate, print_table, write_result
from .fakes_process import RemoteFakes

TEAMS = 100
BUSY_TEAMS = 10
CAP = 55
SECRET = "bench-secret-key-0123456789abcdef"


class SendTimer:
    """Counts and times every ``requests`` send of this process's calling threads.

    The fakes answer from a process of their own, so every send counted is the orchestrator's.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._original = requests.Session.send
        self._lock = threading.Lock()

    def install(self) -> None:
        timer, original = self, self._original

        def send(session: requests.Session, request: Any, **kw: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(session, request, **kw)
            finally:
                with timer._lock:
                    timer.seconds += time.perf_counter() - started
                    timer.calls += 1

        requests.Session.send = send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        requests.Session.send = self._original  # type: ignore[method-assign]


class GCTimer:
    """Time spent in the cyclic garbage collector (all threads), from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started

    def install(self) -> None:
        gc.callbacks.append(self)

    def uninstall(self) -> None:
        gc.callbacks.remove(self)


class QueryCounter:
    """SQLAlchemy ``before_cursor_execute`` / ``after_cursor_execute`` events on one engine: how
    many statements, of which kinds, and the time spent waiting for their answers."""

    def __init__(self, engine: Any) -> None:
        self.count = 0
        self.seconds = 0.0
        self.kinds: Counter[str] = Counter()
        self.kind_seconds: Counter[str] = Counter()
        self._started = 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    @staticmethod
    def kind(statement: str) -> str:
        # the statement's head names what it does (SELECT ... FROM x / UPDATE x / INSERT INTO x)
        words = " ".join(statement.split())
        head = words.split(" WHERE ")[0]
        if head.startswith("SELECT") and " FROM " in head:
            head = "SELECT … FROM " + head.split(" FROM ", 1)[1][:60]
        return head[:90]

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.count += 1
        self.kinds[self.kind(statement)] += 1
        self._started = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        elapsed = time.perf_counter() - self._started
        self.seconds += elapsed
        self.kind_seconds[self.kind(statement)] += elapsed


def team_key(n: int) -> str:
    return f"T{n:03d}"


def build_scene(url: str, issues: int, inflight: int) -> dict[str, Any]:
    """Fakes, app, mappings, triggered issues and in-flight jobs. Nothing here is measured."""
    from aiimpl_gha import plugin as gha_plugin
    from aiimpl_linear import plugin as linear_plugin

    from aiimpl_core.app import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.github.app_auth import TOKENS
    from aiimpl_core.orm import Mapping, utcnow
    from aiimpl_core.services import launch
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus, Phase

    # triggered issues interleaved over the busy teams, as a real listing mixes them
    fakes = RemoteFakes(
        [team_key(n) for n in range(TEAMS)],
        [(team_key(i % BUSY_TEAMS), f"Triggered issue {i}") for i in range(issues)],
    )
    TOKENS.clear()  # installation tokens of an earlier scene's fake mean nothing to this one
    config = {
        "AIIMPL_DATABASE_URL": url,
        "AIIMPL_SECRET_KEY": SECRET,
        "AIIMPL_PUBLIC_URL": "http://orchestrator.bench",
        "AIIMPL_LINEAR_PAGE_SIZE": "250",
        "AIIMPL_GITHUB_API_URL": fakes.github_url,
        "AIIMPL_GITHUB_APP_ID": str(fakes.github_app_id),
        "AIIMPL_GITHUB_PRIVATE_KEY": fakes.github_private_key_pem,
        **fakes.linear_config,
    }
    app = create_app(config, plugins=[linear_plugin, gha_plugin], load_entrypoints=False, environ={})
    migrate(app)
    with app.app_context():
        backend = app.extensions["aiimpl"].runner("github-actions")
        rows = []
        for n in range(TEAMS):
            row = Mapping(team_key=team_key(n), owner="acme", repo=f"repo-{n:03d}", default_branch="main",
                          execution_mode="github-actions", branch_prefix="ai/",
                          max_in_progress=CAP if n < BUSY_TEAMS else None, ticketing={"provider": "linear"})
            db.session.add(row)
            rows.append(row)
        db.session.commit()
        for row in rows[:BUSY_TEAMS]:
            backend.sync_workflows(row.view())  # the workflow files the dispatches need
        choice = launch.BackendChoice("github-actions", "default", False)
        started = utcnow() - timedelta(minutes=3)
        jobs = []
        for k in range(inflight):
            row = rows[k % BUSY_TEAMS]
            job = launch.create_job(row, f"{row.team_key}-{90000 + k}", phase=Phase.IMPLEMENTATION,
                                    provider="linear", choice=choice)
            jobs.append(job)
        run_ids = fakes.add_runs(
            [(job.repo, job.run_name or "", f"ai/{job.issue_key}", job.id, started) for job in jobs]
        )
        for job, run_id in zip(jobs, run_ids, strict=True):
            transition(job, JobStatus.DISPATCHED)
            transition(job, JobStatus.RUNNING)
            job.run_id = str(run_id)
            job.dispatched_at = started
        db.session.commit()
    return {"app": app, "fakes": fakes}


class ReconcileMeter:
    """Splits a cycle's cost: the reconciler's share (thread CPU, queries, fake waits) is recorded
    by wrapping ``aiimpl_core.services.reconcile.reconcile``, which ``run_cycle`` calls once."""

    def __init__(self, timer: SendTimer, counter: QueryCounter) -> None:
        from aiimpl_core.services import reconcile as module

        self.module, self.original = module, module.reconcile
        self.timer, self.counter = timer, counter
        self.cpu = self.wait = 0.0
        self.queries = 0
        meter = self

        def reconcile(*args: Any, **kw: Any) -> Any:
            cpu0, wait0, q0 = time.thread_time(), meter.timer.seconds, meter.counter.count
            try:
                return meter.original(*args, **kw)
            finally:
                meter.cpu += time.thread_time() - cpu0
                meter.wait += meter.timer.seconds - wait0
                meter.queries += meter.counter.count - q0

        module.reconcile = reconcile

    def uninstall(self) -> None:
        self.module.reconcile = self.original


#: the cycles measured on each scene, in order
CYCLES = ("first", "steady", "steady", "refresh")


def cycle_clock(label: str, n: int, first_started: datetime) -> datetime:
    """The clock of the ``n``-th cycle: a steady cycle's is a few seconds after the first cycle
    began (so it never comes due for the minute's refresh, however long the cycles before took);
    the refresh cycle's is a minute past every row written so far."""
    from aiimpl_core.orm import utcnow
    from aiimpl_core.services.dispatch import SEEN_REFRESH

    if label == "refresh":
        return utcnow() + SEEN_REFRESH + timedelta(seconds=5)
    return first_started + timedelta(seconds=5 * n)


def measure_cycle(scene: dict[str, Any], timer: SendTimer, counter: QueryCounter,
                  meter: ReconcileMeter, profile: str | None = None, *, now: datetime | None = None
                  ) -> dict[str, Any]:
    from aiimpl_core.extensions import db
    from aiimpl_core.services.dispatch import run_cycle

    fakes = scene["fakes"]
    lin0, gh0 = len(fakes.linear_operations()), fakes.github_requests()
    q0, qs0, t0, s0 = counter.count, counter.seconds, timer.seconds, timer.calls
    kind_seconds0 = Counter(counter.kind_seconds)
    gc_timer = GCTimer()
    gc_timer.install()
    kinds0 = Counter(counter.kinds)
    meter.cpu = meter.wait = 0.0
    meter.queries = 0
    profiler = cProfile.Profile() if profile else None
    started, cpu0 = time.perf_counter(), time.thread_time()
    if profiler is not None:
        profiler.enable()
    report = run_cycle(now=now)
    if profiler is not None:
        profiler.disable()
    wall, cpu = time.perf_counter() - started, time.thread_time() - cpu0
    gc_timer.uninstall()
    if profiler is not None:
        os.makedirs(os.path.dirname(profile), exist_ok=True)
        profiler.dump_stats(profile)
    db.session.remove()
    ops = fakes.linear_operations()[lin0:]
    waited = timer.seconds - t0
    return {
        "started_at": report.started_at,
        "wall_s": round(wall, 3),
        "fake_wait_s": round(waited, 3),
        "orchestrator_s": round(wall - waited, 3),
        # CPU of this thread only: the fakes' threads are not counted, and neither is load from
        # other processes on a shared machine (nor PostgreSQL's own work, which is another process)
        "orchestrator_cpu_s": round(cpu, 3),
        # the cyclic garbage collector's pauses inside the cycle
        "gc_s": round(gc_timer.seconds, 3),
        "tracker_calls": len(ops),
        "listing_pages": ops.count("TriggeredIssues"),
        "backend_calls": fakes.github_requests() - gh0,
        "db_queries": counter.count - q0,
        # time from sending each statement to its answer (the database's work and the round trip)
        "db_s": round(counter.seconds - qs0, 3),
        "sends": timer.calls - s0,
        "listed": sum(report.listed.values()),
        "dispatched": len(report.dispatched),
        "blocked": len(report.blocked),
        "errors": len(report.errors),
        "reconcile_cpu_s": round(meter.cpu, 3),
        "reconcile_queries": meter.queries,
        "top_queries": dict((counter.kinds - kinds0).most_common(8)),
        "slowest_queries_s": {
            k: round(v, 3) for k, v in (counter.kind_seconds - kind_seconds0).most_common(5)
        },
    }


@contextmanager
def scene_for(db_kind: str, issues: int, inflight: int) -> Any:
    url, drop = fresh_database(db_kind)
    scene: dict[str, Any] = {}
    try:
        scene = build_scene(url, issues, inflight)
        yield scene
    finally:
        if scene:
            from aiimpl_core.extensions import db

            with scene["app"].app_context():
                db.engine.dispose()
            scene["fakes"].stop()
        drop()


def run(db_kind: str, sizes: list[int], inflight: int, profile: bool = False) -> list[dict[str, Any]]:
    from aiimpl_core.extensions import db

    rows: list[dict[str, Any]] = []
    for issues in sizes:
        with scene_for(db_kind, issues, inflight) as scene:
            timer = SendTimer()
            timer.install()
            try:
                with scene["app"].app_context():
                    counter = QueryCounter(db.engine)
                    meter = ReconcileMeter(timer, counter)
                    try:
                        started: datetime | None = None
                        for n, label in enumerate(CYCLES):
                            path = (
                                os.path.join(RESULTS, f"poll_cycle-{db_kind}-{issues}-{n}-{label}.prof")
                                if profile
                                else None
                            )
                            now = None if started is None else cycle_clock(label, n, started)
                            row = {"db": db_kind, "issues": issues, "inflight": inflight, "cycle": label,
                                   **measure_cycle(scene, timer, counter, meter, path, now=now)}
                            began = row.pop("started_at")
                            started = started or began
                            rows.append(row)
                            print_row(row)
                    finally:
                        meter.uninstall()
                # every request the plugins sent, and every answer, matched the services' descriptions
                scene["fakes"].assert_clean()
            finally:
                timer.uninstall()
    return rows


COLUMNS = ["db", "issues", "cycle", "listing_pages", "tracker_calls", "backend_calls", "db_queries",
           "dispatched", "blocked", "wall_s", "fake_wait_s", "orchestrator_s", "orchestrator_cpu_s",
           "db_s", "gc_s", "reconcile_queries", "reconcile_cpu_s"]


def print_row(row: dict[str, Any]) -> None:
    print("  ".join(f"{c}={row[c]}" for c in COLUMNS), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", default="sqlite", help="sqlite, postgres, or both (comma-separated)")
    parser.add_argument("--issues", default="1000,10000", help="triggered issues, comma-separated sizes")
    parser.add_argument("--inflight", type=int, default=500, help="in-flight jobs")
    parser.add_argument("--profile", action="store_true",
                        help="write each cycle's cProfile statistics to bench/results/ (slows the cycle)")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fakes' request lines
    sizes = [int(s) for s in args.issues.split(",") if s.strip()]
    rows: list[dict[str, Any]] = []
    for kind in [k.strip() for k in args.db.split(",") if k.strip()]:
        rows.extend(run(kind, sizes, args.inflight, args.profile))
    print()
    print_table(rows, COLUMNS)
    name = "poll_cycle-" + "-".join(sorted({r["db"] for r in rows}))
    print("\nwritten:", write_result(name, {"teams": TEAMS, "busy_teams": BUSY_TEAMS, "cap": CAP,
                                            "cycles": rows}))


if __name__ == "__main__":
    main()
