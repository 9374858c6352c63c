"""Load generator for the callback benchmark: many simulated runners in threads, keep-alive
connections, latencies measured per request. Run as a separate process; prints JSON.

Two ways to load the server:

- closed loop (default): each runner sends its next request as soon as the last one is answered,
  so the server is saturated; the figure is throughput;
- open loop (``--rate``): the runners together send ``rate`` requests per second on a fixed
  schedule, whatever the answers take; a request's latency runs from its *scheduled* time, so a
  slow answer that delays the next send counts against the server (no coordinated omission).

``/runner/progress`` reports steps as the session program does: each step once ``running``, then
once finished with its detail (text to redact: a commit and a branch).

``/api/status`` posts each lifecycle event once per job, as sessions do (a repeated event is the
cheap duplicate path): runner ``i``'s ``n``-th request is event ``n mod 9`` of the job in slot
``offset + i + (n // 9) * concurrency`` of the runners file.
"""
from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from urllib.parse import urlsplit


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = max(0, min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


EVENTS = ["session_created", "environment_ready", "pr_opened", "verification_started",
          "verification_passed", "verification_failed", "session_failed", "session_timed_out",
          "session_cleaned_up"]


def status_slots(total: int, concurrency: int) -> int:
    """How many jobs of the runners file a status phase uses (each (job, event) posted once)."""
    per_thread = max(1, total // concurrency)
    return concurrency * -(-per_thread // len(EVENTS))


def run_phase(base_url: str, kind: str, runners: list[dict], total: int, concurrency: int,
              rate: float | None = None, offset: int = 0) -> dict:
    parts = urlsplit(base_url)
    per_thread = max(1, total // concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    interval = concurrency / rate if rate else 0.0  # each runner's time between sends

    def worker(index: int) -> None:
        runner = runners[index % len(runners)]
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        # open loop: the runners' schedules are spread evenly over one interval
        next_at = started + interval * index / concurrency
        for n in range(per_thread):
            if kind == "status":
                runner = runners[(offset + index + (n // len(EVENTS)) * concurrency) % len(runners)]
            if kind == "progress":
                path = "/runner/progress"
                # as the session program reports a step: running, then finished with its detail
                body = {"step": {"id": f"s{index}-{n // 2}", "type": "commit", "status": "running",
                                 "started_at": "2026-11-29T05:00:00Z"}}
                if n % 2:
                    detail = {"commit": f"{index:08x}{n:032x}", "branch": f"ai/BENCH-{index}"}
                    body["step"].update(status="succeeded", finished_at="2026-11-29T05:00:09Z", detail=detail)
                headers = {"Authorization": f"Bearer {runner['progressToken']}"}
            elif kind == "status":
                path = "/api/status"
                body = {"nonce": runner["nonce"], "event": EVENTS[n % len(EVENTS)]}
                headers = {}
            else:
                path = "/bench/bare"
                body = {"runner": str(index), "n": n}
                headers = {}
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body)
            if interval:
                pause = next_at - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                start = next_at
                next_at += interval
            else:
                start = time.perf_counter()
            try:
                conn.request("POST", path, payload, headers)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except OSError as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
            elapsed = time.perf_counter() - start
            if status == 200:
                mine.append(elapsed)
            else:
                with lock:
                    errors[str(status)] = errors.get(str(status), 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    # the open-loop schedules begin once every thread runs
    started = time.perf_counter() + (0.2 if interval else 0.0)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "kind": kind,
        "mode": f"open loop, {rate:g} requests/s offered" if rate else "closed loop",
        "requests": len(latencies),
        "errors": errors,
        "concurrency": concurrency,
        "seconds": round(wall, 3),
        "rps": round(len(latencies) / wall, 1) if wall else 0.0,
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--runners", required=True, help="JSON file with the runners' credentials")
    parser.add_argument("--kind", required=True, choices=["bare", "progress", "status"])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rate", type=float, default=None, help="open loop: requests per second in all")
    parser.add_argument("--offset", type=int, default=0, help="first job slot of a status phase")
    args = parser.parse_args()
    with open(args.runners) as fh:
        runners = json.load(fh)
    print(json.dumps(run_phase(args.url, args.kind, runners, args.requests, args.concurrency,
                               args.rate, args.offset)))


if __name__ == "__main__":
    main()
