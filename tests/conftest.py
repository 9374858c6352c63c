"""Fixtures every folder of the core's tests shares: the test kit's in-memory tracker and runner,
each with its default id (a folder or module that needs another defines its own)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``long`` first, the others in their order. Under pytest-xdist, the suite's
    first worker runs them one after the other while the others share the rest (a worker that runs
    out takes some of another's queue): the time they spend waiting overlaps the rest of the
    suite, where one of them left last in a worker's queue made the whole run wait for it."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture
def tracker() -> FakeTracker:
    """An in-memory tracker (``fake-tracker``), for the tests that run no real tracker plugin."""
    return FakeTracker()


@pytest.fixture
def runner() -> FakeRunner:
    """An in-memory runner backend (``github-actions``), for the tests that run no real runner plugin."""
    return FakeRunner()


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    base = os.environ.get("AIIMPL_TEST_DATABASE_URL")
    if not base:
        pytest.skip("needs AIIMPL_TEST_DATABASE_URL")
    name = f"aiimpl_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
