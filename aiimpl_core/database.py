"""Database engine behaviour shared by every process: SQLite pragmas, transactions, locks.

On SQLite the driver's own transaction handling is replaced by explicit ``BEGIN`` statements so
that a transaction can ask for ``BEGIN IMMEDIATE`` (the one way to serialize writers that read
first). On PostgreSQL, work that must be serialized takes transaction-scoped advisory locks.
"""
from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from .extensions import db

IMMEDIATE = "aiimpl_immediate"


@event.listens_for(Engine, "connect")
def _on_connect(dbapi_connection, connection_record):  # noqa: ANN001, ANN202
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:  # in-memory databases
            pass
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()


@event.listens_for(Engine, "begin")
def _on_begin(conn):  # noqa: ANN001, ANN202
    if conn.dialect.name == "sqlite":
        immediate = conn.get_execution_options().get(IMMEDIATE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def is_sqlite(session: Session | None = None) -> bool:
    bind = (session or db.session).get_bind()
    return bind.dialect.name == "sqlite"


@contextmanager
def serialized(session: Session | None = None) -> Iterator[Session]:
    """A transaction that excludes other writers of the same database while it runs.

    SQLite: ``BEGIN IMMEDIATE`` (the session must not be inside a transaction already).
    PostgreSQL: an ordinary transaction; take :func:`advisory_lock` for what must not interleave.
    Commits on success, rolls back on error.
    """
    # the scoped_session proxy has no in_transaction(): work on the current Session itself
    session = session or db.session()
    if session.in_transaction():
        session.commit()
    if session.get_bind().dialect.name == "sqlite":
        session.connection(execution_options={IMMEDIATE: True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


def upsert(model: Any, session: Session | None = None) -> Any:
    """An ``INSERT`` of ``model`` with ``on_conflict_do_update`` / ``on_conflict_do_nothing``, in
    the dialect of the session's database (SQLite and PostgreSQL share the syntax)."""
    name = (session or db.session).get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model)
    raise NotImplementedError(f"no upsert for the {name} dialect")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def advisory_lock(name: str, session: Session | None = None) -> None:
    """Take a lock released at the end of the current transaction (no-op on SQLite, which
    serializes writers with :func:`serialized` already)."""
    session = session or db.session
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})


def try_advisory_lock(name: str, session: Session | None = None) -> bool:
    """Like :func:`advisory_lock` but returns false at once when another transaction holds it."""
    session = session or db.session
    if session.get_bind().dialect.name == "postgresql":
        locked = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)})
        return bool(locked.scalar())
    return True
