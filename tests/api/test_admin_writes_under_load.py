"""Admin writes while a poller writes all the time: each is read and written by one writer, so none
fails on SQLite with "database is locked" (a read in an ordinary transaction, then a write after
another connection's commit, cannot wait its turn there), and none is lost on PostgreSQL."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest

from aiimpl_core.extensions import db
from aiimpl_core.services import poller


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def test_admin_writes_succeed_while_a_poller_commits_every_few_milliseconds(
    app: Any, client: Any, admin_headers: dict[str, str], adm_mapping: Any
) -> None:
    adm_mapping("ENG")
    db.session.remove()
    stop, poller_writes = threading.Event(), [0]

    def busy_poller() -> None:  # what a poll loop does all the time: short write transactions
        with app.app_context():
            while not stop.is_set():
                poller.acquire_lease("poll:fake-tracker", 60, holder="another-host")
                poller_writes[0] += 1
                time.sleep(0.003)
            db.session.remove()

    writes = [
        ("PATCH", "/api/mappings/ENG", lambda n: {"paused": bool(n % 2)}, 200),
        ("POST", "/api/runner-mode", lambda n: {"mode": "shadow" if n % 2 else "default"}, 200),
        ("POST", "/api/mappings", lambda n: {"teamKey": "ENG", "owner": "acme", "repo": "api",
                                              "defaultBranch": f"b{n}",
                                              "ticketing": {"provider": "fake-tracker"}}, 200),
        ("POST", "/api/mappings/ENG/secrets", lambda n: {"name": "TOKEN", "value": f"value-{n:06d}"}, 200),
    ]
    answers: collections.Counter[tuple[str, int]] = collections.Counter()
    thread = threading.Thread(target=busy_poller)
    thread.start()
    try:
        for n in range(60):
            for method, path, body, _ok in writes:
                resp = client.open(path, method=method, json=body(n), headers=admin_headers)
                answers[(f"{method} {path}", resp.status_code)] += 1
                db.session.remove()
    finally:
        stop.set()
        thread.join(30)
    assert poller_writes[0] > 60
    assert {key for key in answers if key[1] not in (200, 201)} == set(), answers
    mapping = client.get("/api/mappings", headers=admin_headers).get_json()
    assert [m["defaultBranch"] for m in mapping if m["teamKey"] == "ENG"] == ["b59"]
