"""A port for a server that another process will start.

Binding to port 0 and handing the number to a child process leaves a gap: until the child binds,
the kernel may give the same port to any outgoing connection on the machine (a test run's other
workers make thousands), since port 0 is drawn from the ephemeral range. :func:`free_port` picks
from below that range, where the kernel never hands out ports by itself, and gives each pytest-xdist
worker its own slice of it, so two workers never pick the same one.
"""
from __future__ import annotations

import itertools
import os
import random
import socket
import threading

_LOWEST = 10000
_lock = threading.Lock()
_next: itertools.count | None = None


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # the Linux default; other systems start theirs higher still


def _slice() -> range:
    high = max(_ephemeral_low(), _LOWEST + 1000)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (high - _LOWEST) // max(count, 1)
    start = _LOWEST + (index % max(count, 1)) * width
    return range(start, start + width)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the range the kernel gives out by itself, and not one
    this process has handed out before (a server that just stopped may keep its port a while)."""
    global _next
    ports = _slice()
    with _lock:
        if _next is None:
            _next = itertools.count(random.randrange(len(ports)))
        for _ in range(len(ports)):
            port = ports[next(_next) % len(ports)]
            with socket.socket() as probe:
                try:
                    probe.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")
