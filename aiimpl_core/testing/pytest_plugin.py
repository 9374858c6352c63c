"""Pytest fixtures shipped with the core (entry point ``pytest11``: ``aiimpl``).

Databases: every test that uses ``app`` runs on SQLite, and again on PostgreSQL when
``AIIMPL_TEST_DATABASE_URL`` is set. Each test session gets its own PostgreSQL database (created
from that URL, dropped at the end), so parallel runs never share rows. The schema is built by
the real Alembic migrations once per session; tables are emptied after each test. The tests' apps
on one database share one engine (with its statement cache); its connections are closed after
each test.

Override ``aiimpl_plugins`` (a list of plugin objects) and ``aiimpl_config`` (a dict) in a test
module or conftest to shape the app. Its providers read ``aiimpl_clock`` (a
:class:`~aiimpl_core.testing.clock.Clock`) as ``context.clock()``.

``app`` pushes an application context for the whole test, and ``client``'s requests run in it: the
test and its requests share one database session. Rows read stay as they were read until
:func:`aiimpl_core.testing.orchestrator.fresh` starts a new snapshot — call it before reading what
another thread or process committed.
"""
from __future__ import annotations

import functools
import os
import tempfile
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .clock import Clock

TEST_SECRET_KEY = "test-secret-key-0123456789abcdef"
TEST_ADMIN_CODE = "test-admin-code"


def _pg_base_url() -> str | None:
    return os.environ.get("AIIMPL_TEST_DATABASE_URL") or None


def migrate(url: str, revision: str = "head", *, command: str = "upgrade") -> str:
    """Runs ``aiimpl db upgrade`` (or ``downgrade``, by ``command``) to ``revision`` on the database
    at ``url`` in this process, and returns Alembic's progress lines (``Running upgrade …``).

    The same migrations, lock and checks as the command, without a Python process of its own (which
    costs a second and more of CPU to start): for tests of what a migration does to a database;
    the command's own behaviour is tested through the command. A migration that fails raises
    :class:`AssertionError` with what Alembic and Flask-Migrate said.
    """
    import io
    import logging

    from flask_migrate import downgrade, upgrade

    from ..app import create_app
    from ..extensions import db

    app = create_app({"AIIMPL_DATABASE_URL": url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY, "TESTING": True},
                     load_entrypoints=False, environ={})
    said = io.StringIO()
    handler = logging.StreamHandler(said)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("alembic", "flask_migrate")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        with app.app_context():
            try:
                (upgrade if command == "upgrade" else downgrade)(revision=revision)
            except SystemExit as exc:  # Flask-Migrate's way to say a command failed
                failed = f"db {command} {revision} failed (exit {exc.code}):\n{said.getvalue()}"
                raise AssertionError(failed) from None
            finally:
                db.engine.dispose()
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    return said.getvalue()


class _Databases:
    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.engines: dict[str, Any] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="aiimpl-test-")
        self._pg_admin: Any = None
        self._pg_name: str | None = None

    def get(self, kind: str) -> str:
        if kind not in self.urls:
            self.urls[kind] = self._create(kind)
            migrate(self.urls[kind])
        return self.urls[kind]

    def _create(self, kind: str) -> str:
        if kind == "sqlite":
            return "sqlite:///" + os.path.join(self._tmp.name, "aiimpl.db")
        base = _pg_base_url()
        if not base:
            pytest.skip("PostgreSQL tests need AIIMPL_TEST_DATABASE_URL")
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        self._pg_name = f"aiimpl_t_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._pg_admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with self._pg_admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self._pg_name}"'))
        return make_url(base).set(database=self._pg_name).render_as_string(hide_password=False)

    def engine(self, make: Any, bind_key: str | None, options: dict[str, Any], app: Any) -> Any:
        """The engine of the tests' apps with these engine options, made by ``make`` (Flask-SQLAlchemy's
        own) the first time.

        An engine of its own for each test's app cost about a fifth of the test processes' CPU
        time (a quarter of the API tests'): a new engine compiles every statement again (its cache
        of compiled statements is its own), and inspects its database at its first connection.
        Each test's app is still built from scratch; what the apps share is the engine, whose pool
        the ``app`` fixture empties after each test.
        """
        key = repr(sorted(options.items(), key=lambda item: item[0]))
        if key not in self.engines:
            self.engines[key] = make(bind_key, options, app)
        return self.engines[key]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        if self._pg_admin is not None and self._pg_name:
            from sqlalchemy import text

            with self._pg_admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)'))
            self._pg_admin.dispose()
        self._tmp.cleanup()


@pytest.fixture(scope="session")
def aiimpl_databases() -> Iterator[_Databases]:
    dbs = _Databases()
    yield dbs
    dbs.close()


def _db_params() -> list[Any]:
    return ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=_db_params())
def database_url(request: pytest.FixtureRequest, aiimpl_databases: _Databases) -> str:
    """A migrated, empty database: SQLite, then PostgreSQL when configured."""
    return aiimpl_databases.get(request.param)


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    """Plugins the test app loads (entry points are not loaded). Override to add yours."""
    return []


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    """Extra configuration for the test app. Override to add yours."""
    return {}


@pytest.fixture
def aiimpl_clock() -> Clock:
    """The time the test app's providers read as ``context.clock()``: the current time until the
    test stops it (``aiimpl_clock.set(when)``, ``aiimpl_clock.advance(hours=2)``)."""
    from .clock import Clock

    return Clock()


@pytest.fixture
def app(database_url: str, aiimpl_plugins: list[object], aiimpl_config: dict[str, Any],
        aiimpl_clock: Clock, aiimpl_databases: _Databases) -> Iterator[Any]:
    """A Flask app on a migrated test database, with ``aiimpl_plugins`` registered and
    ``aiimpl_clock`` as its providers' clock. Its engine is the one the test process's apps with
    the same engine options share (see :meth:`_Databases.engine`); an app a test builds itself
    with ``create_app`` has an engine of its own."""
    from ..app import create_app
    from ..extensions import db

    config = {
        "AIIMPL_DATABASE_URL": database_url,
        "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
        "AIIMPL_ADMIN_ACCESS_CODE": TEST_ADMIN_CODE,
        "AIIMPL_PUBLIC_URL": "http://orchestrator.test",
        # a webhook's answer says what its check did, however loaded the machine running the tests
        # (a test of the answer's time sets its own)
        "AIIMPL_WEBHOOK_ANSWER_SECONDS": 60,
        "TESTING": True,
        **aiimpl_config,
    }
    app = _with_shared_engine(aiimpl_databases, create_app, config, plugins=aiimpl_plugins,
                              load_entrypoints=False, environ={})
    # the one context every provider of the app is built with (the app factory gives it the
    # wall clock)
    app.extensions["aiimpl"].context.clock = aiimpl_clock
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        db.session.remove()
        empty_tables()
        db.engine.dispose()
        ctx.pop()


def _with_shared_engine(databases: _Databases, create_app: Any, *args: Any, **kwargs: Any) -> Any:
    """``create_app(*args, **kwargs)``, its engine taken from ``databases``. (Flask-SQLAlchemy
    makes an app's engines with its ``_make_engine``; where it has none, the app makes its own.)"""
    from ..extensions import db

    make = getattr(db, "_make_engine", None)
    if make is None:
        return create_app(*args, **kwargs)
    db._make_engine = functools.partial(databases.engine, make)
    try:
        return create_app(*args, **kwargs)
    finally:
        del db._make_engine


def empty_tables() -> None:
    """Delete every row of every table (the schema stays), and start the ids at 1 again.

    On PostgreSQL, one round trip of ``DELETE`` statements and a reset of the schema's sequences,
    not ``TRUNCATE``: a truncation gives each table, index and sequence a new file, dozens per
    test, and a suite's worth of them made every checkpoint sync tens of thousands of files (a
    ``DROP DATABASE`` waits for one). The deletes take about 1.5 ms, the truncation 50 ms and more.
    """
    from ..extensions import db

    deletes = [f'DELETE FROM "{t.name}"' for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            restart = (
                "SELECT setval(c.oid, 1, false) FROM pg_class c"
                " WHERE c.relkind = 'S' AND c.relnamespace = current_schema()::regnamespace"
            )
            conn.exec_driver_sql("; ".join([*deletes, restart]))
        else:
            for statement in deletes:
                conn.exec_driver_sql(statement)


@pytest.fixture
def client(app: Any) -> Any:
    """A Flask test client of ``app``; its requests share the test's database session (see
    :func:`aiimpl_core.testing.orchestrator.fresh`)."""
    return app.test_client()


@pytest.fixture
def admin_token(client: Any) -> str:
    resp = client.post("/api/auth", json={"code": TEST_ADMIN_CODE})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    return body.get("token") or body["sessionToken"]


@pytest.fixture
def admin_headers(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


def specs_dir() -> str:
    """The directory of official API descriptions (``shared/specs`` beside the repository)."""
    env = os.environ.get("AIIMPL_SPECS_DIR")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    probe = here
    for _ in range(8):
        candidate = os.path.join(probe, "..", "shared", "specs")
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
        probe = os.path.dirname(probe)
    raise FileNotFoundError("shared/specs not found; set AIIMPL_SPECS_DIR")


@pytest.fixture(scope="session")
def aiimpl_specs_dir() -> str:
    try:
        return specs_dir()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
