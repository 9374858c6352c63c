"""Load generator for the callback benchmark: many simulated runners in threads, keep-alive
connections, latencies measured per request. Run as a separate process; prints JSON."""
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


def run_phase(base_url: str, kind: str, runners: list[dict], total: int, concurrency: int) -> dict:
    parts = urlsplit(base_url)
    per_thread = max(1, total // concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def worker(index: int) -> None:
        runner = runners[index % len(runners)]
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        mine: list[float] = []
        for n in range(per_thread):
            if kind == "progress":
                path = "/runner/progress"
                body = {"step": {"id": f"s{index}-{n}", "type": "agent", "status": "running",
                                 "started_at": "2026-11-29T05:00:00Z"}}
                headers = {"Authorization": f"Bearer {runner['progressToken']}"}
            elif kind == "status":
                path = "/api/status"
                body = {"nonce": runner["nonce"], "event": "environment_ready"}
                headers = {}
            else:
                path = "/bench/bare"
                body = {"runner": str(index), "n": n}
                headers = {}
            headers["Content-Type"] = "application/json"
            payload = json.dumps(body)
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
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "kind": kind,
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
    args = parser.parse_args()
    with open(args.runners) as fh:
        runners = json.load(fh)
    print(json.dumps(run_phase(args.url, args.kind, runners, args.requests, args.concurrency)))


if __name__ == "__main__":
    main()
