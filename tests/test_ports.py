"""The test kit's ports for servers started by another process lie outside the kernel's own range."""
from __future__ import annotations

import socket

from aiimpl_core.testing import ports


def test_free_ports_are_below_the_ephemeral_range_and_not_repeated():
    low = ports._ephemeral_low()
    taken = [ports.free_port() for _ in range(20)]
    assert len(set(taken)) == 20
    assert all(10000 <= port < low for port in taken)
    for port in taken[:3]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_each_worker_has_a_slice_of_its_own(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    slices = []
    for n in range(4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{n}")
        slices.append(set(ports._slice()))
    assert all(slices) and sum(map(len, slices)) == len(set().union(*slices))


def test_a_port_in_use_is_passed_over(monkeypatch):
    monkeypatch.setattr(ports, "_next", None)
    monkeypatch.setattr(ports.random, "randrange", lambda n: 0)
    first = ports._slice()[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        assert ports.free_port() == first + 1
