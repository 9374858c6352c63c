"""Callback throughput and worker memory under gunicorn with the production configuration.

    python -m bench.callbacks [--db postgres|sqlite] [--requests 6000] [--concurrency 100] [--rate 200]
                              [--rounds 3]

Starts gunicorn (``aiimpl_core.gunicorn_conf``, access log off) on a fresh database seeded with
running jobs (and a few team and global secrets), then a second process (``bench/loadgen.py``)
plays many runners posting ``/runner/progress`` (each step running, then finished with a detail,
as the session program reports it) and ``/api/status``, and the same load against a bare endpoint doing one
database insert on the same stack (``/bench/bare``):

- throughput: the runners post as fast as they are answered (closed loop); requests per second,
  and the ratio to the bare endpoint (the mean of the bare phases just before and after). After a
  warm-up of each kind, ``--rounds`` rounds of bare, progress and status run in turn, closed by a
  last bare phase; the summary gives each kind's median over the rounds and the spread of its
  ratio (one phase's figure moves by ±10 % on a shared two-core machine);
- latency: the runners together offer ``--rate`` requests per second on a fixed schedule (open
  loop); p50 and p99 from each request's scheduled time.

Then a one-worker gunicorn (no recycling) takes three rounds of 10,000 callbacks and reports the
worker's resident size after each.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from .common import HERE, ROOT, fresh_database, migrate, print_table, write_result
from .loadgen import status_slots

SECRET = "bench-secret-key-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str, runners: int) -> list[dict]:
    from aiimpl_core import create_app
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Mapping
    from aiimpl_core.services import launch, secrets
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus, Phase

    from .benchapp import BenchPlugin, bench_metadata

    app = create_app({"AIIMPL_DATABASE_URL": url, "AIIMPL_SECRET_KEY": SECRET}, plugins=[BenchPlugin()],
                     load_entrypoints=False)
    migrate(app)
    creds = []
    with app.app_context():
        # the bare endpoint's table, made once here: workers creating it as they boot race each other
        bench_metadata.create_all(db.engine)
        mapping = Mapping(team_key="BENCH", owner="acme", repo="api", default_branch="main",
                          execution_mode="github-actions", provider="anthropic", branch_prefix="ai/")
        db.session.add(mapping)
        db.session.commit()
        # secrets a step's detail is redacted of, as on an install that hands sessions some
        for n in range(4):
            secrets.set_secret(secrets.GLOBAL, f"GLOBAL_TOKEN_{n}", f"global-secret-value-{n:04d}-0123456789")
            secrets.set_secret("BENCH", f"BENCH_TOKEN_{n}", f"team-secret-value-{n:04d}-0123456789")
        choice = launch.BackendChoice("github-actions", "default", False)
        for n in range(runners):
            job = launch.create_job(mapping, f"BENCH-{n + 1}", phase=Phase.IMPLEMENTATION, provider="bench",
                                    choice=choice)
            nonce, tokens = launch.issue_credentials(job)
            transition(job, JobStatus.RUNNING)
            db.session.commit()
            creds.append({"jobId": job.id, "nonce": nonce, "progressToken": tokens["runner:progress"]})
        db.engine.dispose()
    return creds


def start_gunicorn(url: str, port: int, *, workers: int | None = None, max_requests: int | None = None):
    env = dict(os.environ, AIIMPL_DATABASE_URL=url, AIIMPL_SECRET_KEY=SECRET, AIIMPL_BIND=f"127.0.0.1:{port}",
               AIIMPL_ACCESS_LOG="", AIIMPL_LOG_LEVEL="warning", PYTHONPATH=ROOT)
    if workers:
        env["AIIMPL_WORKERS"] = str(workers)
    if max_requests is not None:
        env["AIIMPL_MAX_REQUESTS"] = str(max_requests)
    # its log goes to a file: a pipe nobody reads during the run would stop gunicorn once full
    log = tempfile.NamedTemporaryFile(prefix="aiimpl-bench-gunicorn-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:aiimpl_core.gunicorn_conf",
                             "bench.benchapp:create()"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    proc.log_path = log.name  # type: ignore[attr-defined]
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {_log_tail(proc)}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gunicorn did not answer /healthz")


def _log_tail(proc, size: int = 4000) -> str:  # noqa: ANN001
    with open(proc.log_path, encoding="utf-8", errors="replace") as fh:
        return fh.read()[-size:].strip()


def stop(proc) -> None:  # noqa: ANN001
    """Stop gunicorn; what it logged (warnings and errors) goes to this process's stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    text = _log_tail(proc)
    os.unlink(proc.log_path)
    if text:
        print(f"gunicorn (exit {proc.returncode}) logged:\n{text}", file=sys.stderr)


def load(port: int, runners_file: str, kind: str, requests: int, concurrency: int, *,
         rate: float | None = None, offset: int = 0) -> dict:
    command = [sys.executable, os.path.join(HERE, "loadgen.py"), "--url", f"http://127.0.0.1:{port}",
               "--runners", runners_file, "--kind", kind, "--requests", str(requests),
               "--concurrency", str(concurrency), "--offset", str(offset)]
    if rate:
        command += ["--rate", str(rate)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["requests"] == 0:
        # nothing was answered: the figures would be of nothing (gunicorn gone, say)
        raise RuntimeError(f"no {kind} request was answered: {result['errors']}")
    return result


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as fh:
                    if fh.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def measured(proc: subprocess.Popen, phase: Any) -> dict:
    """Run ``phase()`` (a load) and add the CPU time the app's workers and PostgreSQL spent per
    request meanwhile (the machine's two cores are shared by them and the load generator)."""
    workers, database = _children(proc.pid), _postgres_pids()
    app0, db0 = _cpu_seconds(workers), _cpu_seconds(database)
    result = phase()
    app_s, db_s = _cpu_seconds(workers) - app0, _cpu_seconds(database) - db0
    served = max(1, result["requests"])
    result["app_cpu_ms_per_request"] = round(app_s / served * 1000, 3)
    result["db_cpu_ms_per_request"] = round(db_s / served * 1000, 3)
    return result


def worker_rss_mb(master_pid: int) -> float:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as fh:
        children = [int(p) for p in fh.read().split()]
    sizes = []
    for pid in children:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]) / 1024)
    return round(max(sizes), 1)


def summary(phases: list[dict]) -> list[dict]:
    """Each kind's median over the rounds; a phase's ratio is to the mean of the bare phases just
    before and after it (a round is bare, progress, status; a last bare phase closes the run)."""
    bare = [i for i, p in enumerate(phases) if p["kind"] == "bare"]
    for i, p in enumerate(phases):
        before = max((b for b in bare if b < i), default=None)
        after = min((b for b in bare if b > i), default=None)
        around = [phases[b]["rps"] for b in (before, after) if b is not None]
        reference = sum(around) / len(around) if around else 0
        p["ratio_to_bare"] = round(p["rps"] / reference, 2) if reference else None
    rows = []
    for kind in ("bare", "progress", "status"):
        mine = [p for p in phases if p["kind"] == kind]
        ratios = [p["ratio_to_bare"] for p in mine if p["ratio_to_bare"] is not None]
        errors: dict[str, int] = {}
        for p in mine:
            for error, n in p["errors"].items():
                errors[error] = errors.get(error, 0) + n
        rows.append({
            "kind": kind,
            "phases": len(mine),
            "rps": round(statistics.median(p["rps"] for p in mine), 1),
            "p50_ms": round(statistics.median(p["p50_ms"] for p in mine), 2),
            "p99_ms": round(statistics.median(p["p99_ms"] for p in mine), 2),
            "ratio_to_bare": round(statistics.median(ratios), 2) if ratios else None,
            "ratio_range": f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "",
            "app_cpu_ms_per_request": round(statistics.median(p["app_cpu_ms_per_request"] for p in mine), 3),
            "db_cpu_ms_per_request": round(statistics.median(p["db_cpu_ms_per_request"] for p in mine), 3),
            "errors": errors,
        })
    return rows


def run(db_kind: str, requests: int, concurrency: int, memory_rounds: int, rate: float,
        rounds: int = 3) -> dict:
    url, drop = fresh_database(db_kind)
    try:
        warm = min(1000, requests)
        # /api/status posts each event once per job: enough jobs for every status phase below
        status_phases = ([(warm, concurrency)] + [(requests, concurrency)] * (rounds + 1)
                         + [(5000, 20)] * memory_rounds)
        creds = seed(url, max(concurrency, sum(status_slots(n, c) for n, c in status_phases)))
        runners_file = os.path.join(tempfile.mkdtemp(prefix="aiimpl-bench-"), "runners.json")
        with open(runners_file, "w") as fh:
            json.dump(creds, fh)
        offset = 0

        def status(n: int, c: int, **kw: float) -> dict:
            nonlocal offset
            result = load(port, runners_file, "status", n, c, offset=offset, **kw)
            offset += status_slots(n, c)
            return result

        port = _free_port()
        proc = start_gunicorn(url, port)
        try:
            # warm-up: every worker has served each kind before anything is measured
            load(port, runners_file, "bare", warm, concurrency)
            load(port, runners_file, "progress", warm, concurrency)
            status(warm, concurrency)

            def closed(kind: str) -> dict:
                if kind == "status":
                    return measured(proc, lambda: status(requests, concurrency))
                return measured(proc, lambda: load(port, runners_file, kind, requests, concurrency))

            phases = [closed(kind) for _ in range(rounds) for kind in ("bare", "progress", "status")]
            phases.append(closed("bare"))
            # latency at a steady offered load, the same for all three
            latency = [load(port, runners_file, "bare", requests, concurrency, rate=rate),
                       load(port, runners_file, "progress", requests, concurrency, rate=rate),
                       status(requests, concurrency, rate=rate)]
        finally:
            stop(proc)
        kinds = summary(phases)

        memory = []
        if memory_rounds:
            port = _free_port()
            proc = start_gunicorn(url, port, workers=1, max_requests=0)
            try:
                memory.append({"callbacks": 0, "rss_mb": worker_rss_mb(proc.pid)})
                for n in range(1, memory_rounds + 1):
                    load(port, runners_file, "progress", 5000, 20)
                    status(5000, 20)
                    memory.append({"callbacks": n * 10000, "rss_mb": worker_rss_mb(proc.pid)})
            finally:
                stop(proc)
        return {"database": db_kind, "rounds": rounds, "summary": kinds, "phases": phases, "latency": latency,
                "memory": memory}
    finally:
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="postgres",
                        help="postgres, sqlite, or a PostgreSQL URL (a throwaway database is made beside it)")
    parser.add_argument("--requests", type=int, default=6000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=100, help="simulated runners")
    parser.add_argument("--memory-rounds", type=int, default=3, help="rounds of 10,000 callbacks (0: skip)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="requests per second offered by all runners together in the latency phases")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of bare, progress and status phases (medians reported)")
    args = parser.parse_args()
    result = run(args.db, args.requests, args.concurrency, args.memory_rounds, args.rate, max(1, args.rounds))
    print_table(result["phases"], ["kind", "requests", "rps", "p50_ms", "p99_ms", "ratio_to_bare",
                                   "app_cpu_ms_per_request", "db_cpu_ms_per_request", "errors"])
    print()
    print_table(result["summary"], ["kind", "phases", "rps", "p50_ms", "p99_ms", "ratio_to_bare",
                                    "ratio_range", "app_cpu_ms_per_request", "db_cpu_ms_per_request",
                                    "errors"])
    print()
    print_table(result["latency"], ["kind", "mode", "requests", "rps", "p50_ms", "p99_ms", "errors"])
    if result["memory"]:
        print()
        print_table(result["memory"], ["callbacks", "rss_mb"])
    name = f"callbacks-{args.db if args.db in ('postgres', 'sqlite') else 'custom'}"
    print("\nwritten:", write_result(name, result))


if __name__ == "__main__":
    main()
