"""Database engine behaviour shared by every process: SQLite pragmas, transactions, locks.

On SQLite the driver's own transaction handling is replaced by explicit ``BEGIN`` statements so
that a transaction can ask for ``BEGIN IMMEDIATE`` (the one way to serialize writers that read
first). On PostgreSQL, work that must be serialized takes transaction-scoped advisory locks.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import select as select_module
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Text,
    any_,
    bindparam,
    cast,
    column,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from .extensions import db

IMMEDIATE = "aiimpl_immediate"
T = TypeVar("T")


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


#: a PostgreSQL connection back from the pool after longer than this is pinged before it is used
PING_IDLE_AFTER = 5.0
_RETURNED = "aiimpl_returned_at"


def check_connections_at_checkout(engine: Engine) -> None:
    """Make sure a PostgreSQL (psycopg) connection taken from ``engine``'s pool still works, in
    place of SQLAlchemy's ``pool_pre_ping``, which costs a round trip at every check-out: several
    per poll-cycle dispatch, one or two per runner callback. (The app installs it on its own
    engine; other engines of the process are left as they are.)

    A connection the server ended (a restart, ``pg_terminate_backend``, an idle timeout) has
    something to read — the server's last message, or the end of the stream — while a live idle
    one has nothing: that look costs no round trip and is made every time. A connection that sat
    in the pool longer than :data:`PING_IDLE_AFTER` is pinged too (a connection a network device
    dropped silently shows nothing to read). A dead one is replaced by a new connection.
    """
    event.listen(engine, "connect", _mark_returned)  # a new connection needs no ping
    event.listen(engine, "checkin", _mark_returned)
    event.listen(engine, "checkout", _on_checkout)


def _mark_returned(dbapi_connection, connection_record):  # noqa: ANN001, ANN202
    if dbapi_connection is not None:
        connection_record.info[_RETURNED] = time.monotonic()


def _on_checkout(dbapi_connection, connection_record, connection_proxy):  # noqa: ANN001, ANN202
    returned = connection_record.info.get(_RETURNED)
    if returned is not None and time.monotonic() - returned < PING_IDLE_AFTER:
        if not dbapi_connection.closed and not _has_input(dbapi_connection):
            return
    if dbapi_connection.closed or not _ping(dbapi_connection):
        raise DisconnectionError("a pooled connection was found closed; replacing it")


def _has_input(dbapi_connection: Any) -> bool:
    """Whether the connection's socket has something to read (or is closed), without waiting.
    ``poll`` rather than ``select``: a busy worker's descriptors may number past ``select``'s
    limit of 1,024."""
    try:
        fd = dbapi_connection.fileno()
        if hasattr(select_module, "poll"):
            watch = select_module.poll()
            watch.register(fd, select_module.POLLIN)  # (an error or a hang-up is always reported)
            return bool(watch.poll(0))
        return bool(select_module.select([fd], [], [], 0)[0])
    except Exception:  # noqa: BLE001 - when in doubt, the caller pings
        return True


def _ping(dbapi_connection: Any) -> bool:
    """One round trip outside any transaction: whether the connection works."""
    autocommit = dbapi_connection.autocommit
    try:
        if not autocommit:
            dbapi_connection.autocommit = True
        dbapi_connection.execute("SELECT 1")
        if not autocommit:
            dbapi_connection.autocommit = False
    except Exception:  # noqa: BLE001 - whatever failed, the connection cannot be used
        return False
    return True


#: execution option of a statement PostgreSQL is to plan once per connection (a server-side
#: prepared statement, see :func:`prepare_marked_statements`) rather than at every run
PREPARED = "aiimpl_prepared"


def prepare_marked_statements(engine: Engine) -> None:
    """Have ``engine``'s psycopg connections prepare the statements marked :data:`PREPARED`, and
    only those (the app's connections are opened with psycopg's preparing turned off).

    Planning is most of what PostgreSQL spends on a runner callback's statement (an upsert of a
    step with its checks: 0.7 ms of the server's CPU planned at every run, 0.3 ms prepared), and
    every callback runs the same few. They are marked because each reads rows by key (a job by
    its id or nonce, a step by its job and id, an outbox item by its id or its issue), which no
    growth of a table makes a different plan for, and PostgreSQL plans a prepared statement again
    when a table's statistics change. The statements of a poll cycle or a listing are not marked:
    a plan made while a table was small would stay in use as it grows.
    """
    event.listen(engine, "do_execute", _execute_marked)


def _execute_marked(cursor, statement, parameters, context):  # noqa: ANN001, ANN202
    if not context.execution_options.get(PREPARED):
        return None  # executed as usual
    connection = cursor.connection
    threshold = connection.prepare_threshold
    # (psycopg prepares nothing while its threshold is None, not even a statement it is told to)
    connection.prepare_threshold = 0
    try:
        cursor.execute(statement, parameters, prepare=True)
    finally:
        connection.prepare_threshold = threshold
    return True


@event.listens_for(Engine, "begin")
def _on_begin(conn):  # noqa: ANN001, ANN202
    if conn.dialect.name == "sqlite":
        immediate = conn.get_execution_options().get(IMMEDIATE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def dialect_name(session: Session | None = None) -> str:
    """``sqlite`` or ``postgresql``: the database of the session (default: the app's)."""
    return str((session or db.session).get_bind().dialect.name)


def is_sqlite(session: Session | None = None) -> bool:
    return dialect_name(session) == "sqlite"


@contextmanager
def serialized(
    session: Session | None = None, *, keep: Iterable[object] = (), writes_first: bool = False
) -> Iterator[Session]:
    """A transaction that excludes other writers of the same database while it runs.

    SQLite: ``BEGIN IMMEDIATE`` (the session must not be inside a transaction already).
    PostgreSQL: an ordinary transaction; take :func:`advisory_lock` for what must not interleave.
    Commits on success, rolls back on error.

    :param keep: mapped objects whose column values stay loaded after the commit, as this
        transaction wrote them (the commit expires every object, so reading one again costs a
        query); read when the block ends, so the caller may add to it inside. For an object the
        caller goes on to change only with compare-and-set updates (a job's
        :func:`~aiimpl_core.services.jobs.transition`), which notice another writer.
    :param writes_first: the transaction's first statement writes, so on SQLite that statement
        takes the write lock itself (a plain ``BEGIN``; SQLite waits for the lock as it does for
        ``BEGIN IMMEDIATE``) and holds it from there to the commit only. What follows a first
        statement that wrote nothing must not write.
    """
    # the scoped_session proxy has no in_transaction(): work on the current Session itself
    session = session or db.session()
    if session.in_transaction():
        session.commit()
    if not writes_first and dialect_name(session) == "sqlite":
        session.connection(execution_options={IMMEDIATE: True})
    try:
        yield session
        kept = _loaded_columns(session, keep)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    for obj, values in kept:
        for key, value in values.items():
            set_committed_value(obj, key, value)


@contextmanager
def one_statement() -> Iterator[Connection]:
    """A connection for one write that is a transaction of its own, committed when the block ends
    (a transaction of the session under way is committed first).

    On PostgreSQL the statement runs in autocommit (a single statement is atomic by itself): the
    server gets no ``BEGIN`` and no ``COMMIT``, one round trip instead of three, and both ends
    spend less CPU than on those two messages (switching the connection to autocommit and back
    included). On SQLite, a transaction whose statement takes the write lock itself
    (:func:`serialized` with ``writes_first``).
    """
    if dialect_name() != "postgresql":
        with serialized(writes_first=True) as session:
            yield session.connection()
        return
    session = db.session()
    if session.in_transaction():
        session.commit()
    # the commit gives the connection back to the pool, which sets its isolation level back
    connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    try:
        yield connection
        session.commit()
    except BaseException:
        session.rollback()
        raise


def _loaded_columns(session: Session, objects: Iterable[object]) -> list[tuple[object, dict[str, Any]]]:
    """The loaded column values of ``objects`` once the session's changes are flushed."""
    objects = list(objects)
    if not objects:
        return []
    session.flush()
    kept = []
    for obj in objects:
        state = inspect(obj)
        if state.session_id != session.hash_key:
            continue
        keys = state.mapper.column_attrs.keys()
        kept.append((obj, {key: state.dict[key] for key in keys if key in state.dict}))
    return kept


def per_dialect(build: Callable[..., T]) -> Callable[..., T]:
    """``build``'s statement, built once per database dialect and arguments (an :func:`upsert` is
    the dialect's own construct) and kept: a statement on a hot path is not built again for every
    request."""
    built: dict[tuple[Any, ...], T] = {}

    @functools.wraps(build)
    def get(*args: Any) -> T:
        key = (dialect_name(), *args)
        statement = built.get(key)
        if statement is None:
            statement = built[key] = build(*args)
        return statement

    return get


def upsert(model: Any, session: Session | None = None) -> Any:
    """An ``INSERT`` of ``model`` with ``on_conflict_do_update`` / ``on_conflict_do_nothing``, in
    the dialect of the session's database (SQLite and PostgreSQL share the syntax)."""
    name = dialect_name(session)
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model)
    # unreachable from the app: create_app refuses any other database (AIIMPL_DATABASE_URL)
    raise NotImplementedError(f"no upsert for the {name} dialect: use SQLite or PostgreSQL")


def chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """``items`` in slices of ``size`` (bound parameters of an ``IN`` list stay few per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def one_of(column: Any, values: Iterable[Any], session: Session | None = None) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:values)`` with one array parameter.

    An ``IN`` list is rendered with a parameter per value, so its text differs with each length:
    SQLAlchemy renders it and psycopg parses it again every time. The array form is one statement
    text whatever the number of values (measured on a page of 250 issue keys: half the client CPU
    and half the round trip).
    """
    values = list(values)
    if dialect_name(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, values, type_=ARRAY(column.type), unique=True))
    return column.in_(values)


def rows_by_issue_key(model: Any, keys: Sequence[str], *columns: Any) -> dict[str, Any]:
    """``columns`` (and ``issue_key``) of the rows of ``model`` for these issue keys, by key, in one
    query (pass at most a chunk of keys, see :func:`chunks`)."""
    query = select(model.issue_key, *columns).where(one_of(model.issue_key, keys))
    return {row.issue_key: row for row in db.session.execute(query)}


def insert_rows(model: Any, rows: Sequence[Mapping[str, Any]], session: Session | None = None) -> None:
    """Insert ``rows`` (each with the same keys) into the table of ``model``, without the ORM's
    per-row bookkeeping.

    SQLite: one ``executemany`` (the driver loops in C). PostgreSQL: one statement whatever the
    number of rows, ``INSERT … SELECT … FROM json_to_recordset(…)`` with the rows as one JSON
    parameter (an ``executemany`` sends a statement per row, or a ``VALUES`` list whose text
    differs with each length; an array parameter per column, ``unnest``, is one statement too,
    but the driver builds each array element by element in Python: measured on 40 pages of 250
    rows, the JSON form takes half the time). Columns left out take their defaults.
    """
    if not rows:
        return
    session = session or db.session
    table = model.__table__
    if dialect_name(session) != "postgresql":
        session.execute(insert(table), list(rows))
        return
    names = list(rows[0])
    dialect = session.get_bind().dialect
    # the columns' own conversions (a type decorator's), as a bound parameter would have them; a
    # JSON column's value travels as its JSON text, cast back (so None is JSON null, as the ORM
    # stores it, unless the column says none_as_null)
    as_text = {name for name in names if isinstance(table.c[name].type, JSON)}
    convert: dict[str, Callable[[Any], Any]] = {
        name: processor
        for name in names
        if name not in as_text and (processor := table.c[name].type.bind_processor(dialect)) is not None
    }
    for name in as_text:
        convert[name] = functools.partial(_json_text, none_as_null=table.c[name].type.none_as_null)
    payload = json.dumps(
        [{name: (convert[name](row[name]) if name in convert else row[name]) for name in names}
         for row in rows],
        default=_json_value,
    )
    source = (
        func.json_to_recordset(cast(bindparam("rows", payload, type_=Text), JSON))
        .table_valued(*(column(name, Text() if name in as_text else table.c[name].type) for name in names))
        .render_derived(with_types=True)
    )
    picked = [
        cast(source.c[name], table.c[name].type) if name in as_text else source.c[name] for name in names
    ]
    session.execute(insert(table).from_select(names, select(*picked)))


def _json_text(value: Any, *, none_as_null: bool) -> str | None:
    return None if value is None and none_as_null else json.dumps(value, default=_json_value)


def _json_value(value: Any) -> Any:
    """What :func:`json.dumps` cannot write itself, as PostgreSQL reads it back from text."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"cannot store a {type(value).__name__} through insert_rows")


def write_seen_rows(
    model: Any,
    wanted: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Any],
    now: datetime,
    *,
    fresh_for: timedelta = timedelta(0),
    on_insert: Mapping[str, Any] | None = None,
    on_change: Callable[[Any], Mapping[str, Any]] | None = None,
) -> None:
    """Bring the rows of ``model`` keyed by ``issue_key`` in line with ``wanted`` (the values of
    each key's row), in a few statements whatever their number; the caller commits.

    A missing row is inserted (with ``on_insert`` too); a row whose values differ is updated (with
    what ``on_change(row)`` adds); a row that matches only has ``last_seen_at`` moved to ``now``,
    in one ``UPDATE`` for all of them, and only when it is older than ``fresh_for``.

    :param current: the existing rows by key (:func:`rows_by_issue_key`), each with ``id``, the
        columns of ``wanted`` and ``last_seen_at``.
    """
    inserts: list[dict[str, Any]] = []
    changed: list[tuple[int, dict[str, Any]]] = []
    seen: list[str] = []
    for key, values in wanted.items():
        row = current.get(key)
        if row is None:
            inserts.append({"issue_key": key, **values, **(on_insert or {}), "last_seen_at": now})
        elif any(getattr(row, name) != value for name, value in values.items()):
            extra = on_change(row) if on_change is not None else {}
            changed.append((row.id, {**values, **extra, "last_seen_at": now}))
        elif row.last_seen_at is None or row.last_seen_at <= now - fresh_for:
            seen.append(key)
    no_sync = {"synchronize_session": False}
    if inserts:
        insert_rows(model, inserts)
    for row_id, values in changed:  # rare: something about the issue changed
        db.session.execute(
            update(model).where(model.id == row_id).values(**values), execution_options=no_sync
        )
    if seen:
        db.session.execute(
            update(model).where(one_of(model.issue_key, seen)).values(last_seen_at=now),
            execution_options=no_sync,
        )


_ADVISORY_XACT_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def advisory_lock(name: str, session: Session | None = None) -> None:
    """Take a lock released at the end of the current transaction (no-op on SQLite, which
    serializes writers with :func:`serialized` already)."""
    session = session or db.session
    if dialect_name(session) == "postgresql":
        session.execute(_ADVISORY_XACT_LOCK, {"k": lock_key(name)})


_ADVISORY_XACT_LOCKS = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:ks AS bigint[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
)


def advisory_locks(names: Iterable[str], session: Session | None = None) -> None:
    """:func:`advisory_lock` for several names, taken in the order given, in one statement (pass
    them in an order every caller uses, such as sorted, so no two transactions deadlock)."""
    session = session or db.session
    keys = [lock_key(name) for name in names]
    if keys and dialect_name(session) == "postgresql":
        session.execute(_ADVISORY_XACT_LOCKS, {"ks": keys})


def try_advisory_lock(name: str, session: Session | None = None) -> bool:
    """Like :func:`advisory_lock` but returns false at once when another transaction holds it."""
    session = session or db.session
    if dialect_name(session) == "postgresql":
        locked = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_key(name)})
        return bool(locked.scalar())
    return True


def foreign_key_violation(exc: Exception) -> bool:
    """Whether an ``IntegrityError`` broke a foreign key (a row it refers to is gone): SQLSTATE 23503
    on PostgreSQL (psycopg's ``sqlstate``, psycopg2's ``pgcode``), SQLite's ``FOREIGN KEY
    constraint failed``. Anything else (a unique index, NOT NULL) is not."""
    orig = getattr(exc, "orig", exc)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate is not None:
        return bool(sqlstate == "23503")
    return str(orig).startswith("FOREIGN KEY constraint failed")


# -- schema and failures, for an operator ----------------------------------------------------


def index_changes_concurrently(op: Any) -> tuple[Any, dict[str, Any]]:
    """For a migration that only adds or drops indexes: on PostgreSQL, ``CONCURRENTLY`` outside
    the migration's transaction, so writes go on during an upgrade (the block to run the changes
    in and the options to pass them); on SQLite, the migration's own transaction.

    Such a run killed on the way can leave some of its changes made without its revision recorded
    (PostgreSQL finishes a statement whose client died): use :func:`create_index_again` and
    ``op.drop_index(…, if_exists=True)``, so that upgrading again recovers."""
    context = op.get_context()
    if context.dialect.name == "postgresql":
        return context.autocommit_block(), {"postgresql_concurrently": True}
    return contextlib.nullcontext(), {}


def create_index_again(op: Any, name: str, table: str, columns: list[str], **options: Any) -> None:
    """Create the index unless it is there already — made by an earlier run killed before it
    recorded its revision — and valid: on PostgreSQL an interrupted ``CREATE INDEX CONCURRENTLY``
    leaves the index invalid (no query uses it), which is dropped and built again."""
    if op.get_context().dialect.name == "postgresql":
        invalid = op.get_bind().execute(
            text(
                "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = :name AND NOT i.indisvalid"
            ),
            {"name": name},
        ).first()
        if invalid is not None:
            op.drop_index(name, table_name=table, if_exists=True, **options)
    op.create_index(name, table, columns, unique=False, if_not_exists=True, **options)

MIGRATIONS_DIR = os.path.join(os.path.dirname(__file__), "migrations")
#: the PostgreSQL advisory lock a migration run holds from before it reads the schema's revision to
#: its end, so that hosts upgrading at once take turns (:func:`one_migration_at_a_time`)
MIGRATION_LOCK = "aiimpl:migrations"
#: seconds between two attempts at :data:`MIGRATION_LOCK`
MIGRATION_LOCK_POLL = 0.5
#: the Alembic config attribute that says whether a run changes the schema (``upgrade``,
#: ``downgrade``, ``stamp``), which takes :data:`MIGRATION_LOCK`; one that only reads (``aiimpl db
#: current``) is false. Not set: a run started without the CLI, taken as changing the schema
MIGRATING = "aiimpl.migrating"


@contextmanager
def one_migration_at_a_time(
    connection: Any, waiting: Callable[[], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Hold the database against other migration runs while the block migrates through
    ``connection``, and yield the options for Alembic's ``context.configure``; ``waiting`` is
    called once when another run holds it.

    Without it, two hosts that run ``aiimpl db upgrade`` at once both read the same revision and
    apply the same migrations: one fails halfway (``duplicate key``, ``database is locked``).

    PostgreSQL: a session-level advisory lock (the index migrations commit as they go, outside
    any one transaction), taken and left outside a transaction. SQLite: the whole run is one
    ``BEGIN IMMEDIATE`` transaction (SQLite's DDL is transactional once the driver leaves ``BEGIN``
    to us), which the next run waits for (``busy_timeout``).
    """
    if connection.dialect.name == "sqlite":
        connection.execution_options(**{IMMEDIATE: True})
        yield {"transactional_ddl": True}
        return
    if connection.dialect.name != "postgresql":
        yield {}
        return
    key = {"k": lock_key(MIGRATION_LOCK)}
    # tried again and again rather than waited for in one statement: a statement that waits holds
    # a snapshot, which the other run's CREATE INDEX CONCURRENTLY waits for in turn (a deadlock)
    while not connection.execute(text("SELECT pg_try_advisory_lock(:k)"), key).scalar():
        connection.commit()
        if waiting is not None:
            waiting()
            waiting = None
        time.sleep(MIGRATION_LOCK_POLL)
    connection.commit()
    try:
        yield {}
    finally:
        if not connection.invalidated:  # (a connection that broke took its lock with it)
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), key)
            connection.commit()


@functools.cache
def schema_heads() -> tuple[frozenset[str], frozenset[str]]:
    """The Alembic heads this code needs, and every revision it knows."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", MIGRATIONS_DIR)
    script = ScriptDirectory.from_config(config)
    return frozenset(script.get_heads()), frozenset(r.revision for r in script.walk_revisions())


def schema_revision(engine: Any = None) -> str | None:
    """The database's Alembic revision (``None``: no schema yet), through ``engine`` (the app's by
    default). Read directly, not through an Alembic migration context, which logs two INFO lines
    each time (``/healthz`` reads it)."""
    from sqlalchemy import inspect

    with (engine or db.engine).connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def schema_behind(revision: str | None) -> bool:
    """Whether a database at ``revision`` needs ``aiimpl db upgrade`` for this code (a revision
    this code does not know is a newer schema: not behind)."""
    heads, known = schema_heads()
    return revision is None or (revision in known and revision not in heads)


#: a database with AI-Implement's tables and no ``alembic_version`` (made by ``db.create_all()``,
#: a partial restore, its version table dropped): ``aiimpl db upgrade`` would create them again
#: and fail with "… already exists"
NO_REVISION = (
    "the database has AI-Implement's tables but no schema revision (no alembic_version table): if they "
    "are this version's, record it with `aiimpl db stamp head`; if not, empty the database, then "
    "`aiimpl db upgrade` makes them"
)


def tables_without_revision(engine: Any = None) -> bool:
    """Whether a database without a schema revision holds AI-Implement's tables (most of them: a
    database shared with another application may have a ``jobs`` or ``settings`` table of its
    own, and "stamp it" would be wrong advice there), through ``engine`` (the app's by default;
    outside an app, without one, false: not looked at)."""
    from flask import has_app_context
    from sqlalchemy import inspect

    from . import orm  # noqa: F401 - the metadata's tables

    if engine is None and not has_app_context():
        return False
    with (engine or db.engine).connect() as conn:
        ours = set(db.metadata.tables)
        return len(ours & set(inspect(conn).get_table_names())) * 2 > len(ours)


def schema_problem(revision: str | None, engine: Any = None) -> str | None:
    """What an operator must do about a database at ``revision``, or ``None`` when this code can
    use it. A database without a revision is looked at (through ``engine``, the app's by default):
    an empty one needs ``aiimpl db upgrade``, one with tables :data:`NO_REVISION`'s repair."""
    if not schema_behind(revision):
        return None
    if revision is None:
        if tables_without_revision(engine):
            return NO_REVISION
        return "the database has no schema yet: run `aiimpl db upgrade`"
    heads = ", ".join(sorted(schema_heads()[0]))
    return (f"the database schema (revision {revision}) is older than this version's ({heads}): "
            "run `aiimpl db upgrade`")


def newer_schema_problem(revisions: Iterable[str]) -> str | None:
    """What an operator must do about a database whose schema is at ``revisions`` when one of them
    is unknown to this code (a newer version upgraded it), or ``None``."""
    heads, known = schema_heads()
    unknown = sorted(set(revisions) - known)
    if not unknown:
        return None
    ours = ", ".join(sorted(heads))
    return (f"the database schema (revision {', '.join(unknown)}) is newer than this version's ({ours}): "
            f"run the version that upgraded it, or first go back with its `aiimpl db downgrade {ours}`")


def failure_reason(exc: Exception) -> str:
    """What the database (or its driver) said, first line only: never the statement, its
    parameters or a row's values, which SQLAlchemy's own message and later lines may carry."""
    said = str(getattr(exc, "orig", None) or exc).strip()
    return said.splitlines()[0] if said else type(exc).__name__


def migration_failure_message(exc: Exception) -> str:
    """One line for an operator about a migration (``aiimpl db upgrade``, ``downgrade``) that the
    database refused: what it said and the revision the schema stays at, never the advice to run
    the command that has just failed."""
    reason = failure_reason(exc)
    try:
        db.session.rollback()
        revision = schema_revision()
        orphaned = revision is None and tables_without_revision()
    except Exception:  # noqa: BLE001 - the database does not answer at all
        return f"the database could not be reached: {reason}"
    if orphaned:
        return f"the migration failed; {NO_REVISION}: {reason}"
    if revision is None:
        return f"the migration failed; the database has no schema revision: {reason}"
    return f"the migration failed; the database schema stays at revision {revision}: {reason}"


def failure_message(exc: Exception) -> str:
    """One line for an operator about a database error: :func:`failure_reason` and, when the
    schema is missing or older than this code, that ``aiimpl db upgrade`` is the fix."""
    reason = failure_reason(exc)
    try:
        db.session.rollback()
        problem = schema_problem(schema_revision())
    except Exception:  # noqa: BLE001 - the database does not answer at all
        return f"the database could not be reached: {reason}"
    if problem:
        return f"{problem} ({reason})"
    return f"the database refused a statement: {reason}"


#: how far this host's clock may be from the database's before :func:`clock_skew` callers say so:
#: leases, back-offs and the reconciler's windows compare times written by every host
CLOCK_TOLERANCE = 5.0


def clock_skew(now: Callable[[], datetime], session: Session | None = None) -> tuple[float, float] | None:
    """How many seconds ``now()`` (this host's clock, in UTC) is ahead of the database server's
    clock (negative: behind), and how far off that reading may be (half the query's round trip);
    ``None`` on SQLite, whose clock is this host's. Leaves no transaction open."""
    session = session or db.session
    if dialect_name(session) != "postgresql":
        return None
    try:
        # the connection first (a pool checkout, maybe a new connection or a ping): timed, it
        # would be read as half before the server's clock was read and half after
        session.connection()
        before = now()
        # clock_timestamp(), not now(): the latter is the time the transaction started
        theirs = session.execute(text("SELECT clock_timestamp()")).scalar_one()
        after = now()
    except Exception:
        session.rollback()
        raise
    session.commit()
    middle = before + (after - before) / 2
    return (middle - theirs).total_seconds(), (after - before).total_seconds() / 2
