"""Migration 0009 adds ``session_packages`` (the wheels the workflows pin) on SQLite and PostgreSQL;
``aiimpl db downgrade 0008`` removes it, and upgrading again restores it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url


def aiimpl_db(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AIIMPL_DATABASE_URL=url, AIIMPL_SECRET_KEY="k" * 32)
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def check_migration(url: str) -> None:
    assert aiimpl_db(url, "upgrade", "0008").returncode == 0
    engine = create_engine(url)
    try:
        assert "session_packages" not in inspect(engine).get_table_names()
        up = aiimpl_db(url, "upgrade")
        assert up.returncode == 0, up.stderr
        assert "Running upgrade 0008 -> 0009" in up.stderr
        insp = inspect(engine)
        columns = {c["name"]: c for c in insp.get_columns("session_packages")}
        assert sorted(columns) == ["created_at", "data", "filename", "last_pinned_at", "sha256"]
        assert not any(c["nullable"] for c in columns.values())
        key = insp.get_pk_constraint("session_packages")
        assert (key["name"], key["constrained_columns"]) == ("pk_session_packages", ["sha256"])
        data = bytes(range(256)) * 4
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO session_packages (sha256, filename, data, created_at, last_pinned_at) VALUES"
                " (:sha, 'aiimpl_core-0.1.0-py3-none-any.whl', :data, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ), {"sha": "a" * 64, "data": data})
        with engine.connect() as conn:
            assert bytes(conn.execute(text("SELECT data FROM session_packages")).scalar_one()) == data
        down = aiimpl_db(url, "downgrade", "0008")
        assert down.returncode == 0, down.stderr
        engine.dispose()
        assert "session_packages" not in inspect(engine).get_table_names()
        again = aiimpl_db(url, "upgrade")
        assert again.returncode == 0, again.stderr
        engine.dispose()
        assert "session_packages" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM session_packages")).scalar_one() == 0
    finally:
        engine.dispose()


def test_the_migration_on_sqlite(tmp_path) -> None:  # noqa: ANN001
    check_migration(f"sqlite:///{tmp_path}/x.db")


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


@pytest.mark.postgres
def test_the_migration_on_postgres(scratch_postgres: str) -> None:
    check_migration(scratch_postgres)
