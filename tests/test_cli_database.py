"""A CLI command whose database does not answer, or has no schema yet, says so in one line and
what to do, never with a traceback, a statement or its parameters."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import create_engine

from aiimpl_core.database import schema_heads, schema_revision
from aiimpl_core.testing.pytest_plugin import migrate


def _environ(url: str) -> dict[str, str]:
    """This process's environment without its AIIMPL_ settings, on the database at ``url``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=url, AIIMPL_SECRET_KEY="cli-database-test-key-of-32-characters")
    return environ


def _cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", *args], env=_environ(url),
                          capture_output=True, text=True, timeout=120)


def test_a_database_without_a_schema_asks_for_db_upgrade(tmp_path):
    done = _cli("jobs", "list", url=f"sqlite:///{tmp_path}/new.db")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: the database has no schema yet: run `aiimpl db upgrade`"
    done = _cli("db", "upgrade", url=f"sqlite:///{tmp_path}/new.db")
    assert done.returncode == 0, done.stderr
    assert _cli("jobs", "list", url=f"sqlite:///{tmp_path}/new.db").stdout.strip() == "(no jobs)"


def test_a_database_that_cannot_be_reached_is_named_as_such(tmp_path):
    done = _cli("jobs", "list", url=f"sqlite:///{tmp_path}/missing-directory/a.db")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: the database could not be reached: unable to open database file"
    assert "Traceback" not in done.stderr


API_COMMANDS = [("mappings", "list"), ("mappings", "show", "ENG"), ("runner-mode", "get"),
                ("runner-mode", "set", "fly"), ("outbox", "list"), ("sessions", "list"), ("secrets", "list"),
                ("mappings", "sync-workflows", "--all"), ("mappings", "set-cap", "ENG", "2")]


@pytest.mark.parametrize("command", API_COMMANDS, ids=" ".join)
def test_commands_through_the_api_ask_for_db_upgrade_in_one_line(tmp_path, command):
    done = _cli(*command, url=f"sqlite:///{tmp_path}/new.db")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: the database has no schema yet: run `aiimpl db upgrade`"
    assert done.stdout == ""


@pytest.mark.parametrize("command", API_COMMANDS[:2], ids=" ".join)
def test_commands_through_the_api_name_a_database_that_cannot_be_reached(tmp_path, command):
    done = _cli(*command, url=f"sqlite:///{tmp_path}/missing-directory/a.db")
    assert done.returncode == 1
    assert done.stderr.strip() == "Error: the database could not be reached: unable to open database file"


@pytest.fixture
def sqlite_app(tmp_path):
    from aiimpl_core import create_app

    return create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}, load_entrypoints=False)


class _Failed(Exception):
    """A driver's error: its first line is the database's message, the next ones its details."""


def test_an_older_schema_is_told_apart_from_a_newer_or_a_current_one(sqlite_app):
    from flask_migrate import upgrade
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from aiimpl_core.database import failure_message, schema_heads
    from aiimpl_core.extensions import db

    failed = OperationalError("SELECT secret FROM t WHERE v = ?", ("s3cr3t-param",),
                              _Failed("no such column: jobs.cancel_reason\nDETAIL: Key (value)=(s3cr3t-row)"))
    (head,) = schema_heads()[0]
    with sqlite_app.app_context():
        upgrade(revision="0002")
        message = failure_message(failed)
        assert message == (f"the database schema (revision 0002) is older than this version's ({head}): run "
                           "`aiimpl db upgrade` (no such column: jobs.cancel_reason)")
        upgrade()
        refused = "the database refused a statement: no such column: jobs.cancel_reason"
        assert failure_message(failed) == refused
        # a newer version's schema: not for `db upgrade` of this one to fix
        db.session.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
        db.session.commit()
        message = failure_message(failed)
        assert message == refused
    assert "s3cr3t" not in message and "SELECT" not in message


def test_poll_waits_for_a_database_that_does_not_answer_yet(tmp_path):
    """Only a schema known to be older stops the poller at start; a database that is not up yet
    (a service started before it) is retried cycle after cycle, as a long-running poller does,
    each failed cycle one line (what the driver said), never a traceback."""
    import signal
    import socket
    import threading
    import time

    pytest.importorskip("psycopg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"postgresql+psycopg://nobody@127.0.0.1:{port}/none",
                   AIIMPL_SECRET_KEY="cli-database-test-key-of-32-characters")
    proc = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "poll", "--interval", "0.2"],
                            env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        # two failed cycles, however long a loaded machine takes to start the command
        deadline = time.monotonic() + 60
        while sum("poll cycle failed" in line for line in list(lines)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "the database does not answer yet: connection failed" in err
    assert "polling every 0.2s" in err and "stopped after" in err
    failed = [line for line in lines if "poll cycle failed" in line]
    assert all("poll cycle failed: the database could not be reached: connection failed" in line
               for line in failed), failed
    assert "Traceback" not in err and "[SQL:" not in err


def test_db_upgrade_logs_in_the_configured_format(tmp_path):
    """Alembic's ``fileConfig`` (alembic.ini) would put a text handler of its own in place of the
    root logger's: a log collector reading ``AIIMPL_LOG_FORMAT=json`` would get text lines."""
    import json

    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db", AIIMPL_LOG_FORMAT="json",
                   AIIMPL_LOG_LEVEL="INFO")
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade"], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(line["message"].startswith("Running upgrade") for line in lines), lines


def test_db_current_says_the_revision_without_alembics_own_lines(tmp_path):
    """Alembic's engine name and DDL note at every run are no news to an operator (at DEBUG only).
    Nor is AIIMPL_SECRET_KEY unset, to a command that reads no secret and signs nothing."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db")
    run = [sys.executable, "-m", "aiimpl_core.cli", "db"]
    # no schema yet: Alembic prints nothing, which an operator cannot tell from a command that did
    # not run; stdout stays empty for a script, stderr says why
    done = subprocess.run([*run, "current"], env=environ, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    assert "no revision: the database has no schema yet: run `aiimpl db upgrade`" in done.stderr
    assert "AIIMPL_SECRET_KEY" not in done.stderr
    done = subprocess.run([*run, "upgrade"], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "AIIMPL_SECRET_KEY" not in done.stderr, done.stderr
    listed = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "jobs", "list"], env=environ,
                            capture_output=True, text=True, timeout=120)
    assert "AIIMPL_SECRET_KEY is not set" in listed.stderr  # a command that may sign still says it
    for level, shown in (("", False), ("DEBUG", True)):
        done = subprocess.run([*run, "current"], env={**environ, "AIIMPL_LOG_LEVEL": level},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith("(head)")
        assert ("Will assume" in done.stderr) is shown, done.stderr  # (non-)transactional DDL
        assert "no revision" not in done.stderr


def test_migrating_keeps_the_apps_log_handlers_and_their_mask(tmp_path):
    """A process that migrates and goes on (``aiimpl demo``, the test fixtures) keeps its log lines
    in their format and masked of the known secrets."""
    import logging

    from flask_migrate import upgrade

    from aiimpl_core import create_app, logs

    root = logging.getLogger()
    app = create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/a.db"}, load_entrypoints=False)
    handlers = list(root.handlers)
    assert all(logs.SECRETS in handler.filters for handler in handlers)
    with app.app_context():
        upgrade()
    assert root.handlers == handlers


def test_check_fails_on_a_schema_older_than_this_version_s(tmp_path):
    """A pre-flight check that passes while the server would refuse to start is no check."""
    from aiimpl_core.database import schema_heads

    url = f"sqlite:///{tmp_path}/old.db"
    assert _cli("db", "upgrade", "0002", url=url).returncode == 0
    (head,) = schema_heads()[0]
    for args in (("check",), ("check", "--json")):
        done = _cli(*args, url=url)
        assert done.returncode == 1
        assert done.stderr.strip() == (f"Error: the database schema (revision 0002) is older than this "
                                       f"version's ({head}): run `aiimpl db upgrade`")
        assert done.stdout == ""


#: what a database with AI-Implement's tables but no Alembic revision is told
NO_REVISION = (
    "the database has AI-Implement's tables but no schema revision (no alembic_version table): if they "
    "are this version's, record it with `aiimpl db stamp head`; if not, empty the database, then "
    "`aiimpl db upgrade` makes them"
)


def test_a_failed_upgrade_says_what_the_database_refused_not_to_upgrade(tmp_path):
    """`aiimpl db upgrade` that fails must not answer "run `aiimpl db upgrade`": it names the
    revision the database stays at and what stopped the migration."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/a.db"
    assert _cli("db", "upgrade", "0002", url=url).returncode == 0
    with sqlite3.connect(tmp_path / "a.db") as conn:  # what a manual change left
        conn.execute("CREATE TABLE ended_admin_sessions (session_id TEXT)")
    done = _cli("db", "upgrade", url=url)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: the migration failed; the database schema stays at revision 0002: "
        "table ended_admin_sessions already exists")
    assert "run `aiimpl db upgrade`" not in done.stderr
    (tmp_path / "b.db").touch()
    with sqlite3.connect(tmp_path / "b.db") as conn:  # a table of that name, no Alembic revision
        conn.execute("CREATE TABLE auth_failures (client TEXT)")
    done = _cli("db", "upgrade", url=f"sqlite:///{tmp_path}/b.db")
    assert done.returncode == 1
    # (one table of a name of ours is not taken for our schema: tables_without_revision)
    assert done.stderr.strip().splitlines()[-1] == (
        "Error: the migration failed; the database has no schema revision: "
        "table auth_failures already exists")


#: an ``aiimpl`` command line (``ARGS``) with Ctrl-C pressed as the database is sent a statement
#: starting with ``STATEMENT``
INTERRUPTED = """
import sys

from sqlalchemy import event
from sqlalchemy.engine import Engine


def interrupt(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith(STATEMENT):
        raise KeyboardInterrupt


event.listen(Engine, "before_cursor_execute", interrupt)
sys.argv = ["aiimpl", *ARGS]
from aiimpl_core._entry import main

main()
"""


def _interrupted(url: str, statement: str, *args: str) -> subprocess.CompletedProcess:
    script = f"STATEMENT = {statement!r}\nARGS = {list(args)!r}\n{INTERRUPTED}"
    return subprocess.run([sys.executable, "-c", script], env=_environ(url), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_ctrl_c_during_a_migration_is_said_as_such_and_running_it_again_finishes_it(kind, tmp_path, request):
    """It was "the migration failed … Can't reconnect until invalid transaction is rolled back"
    (the interrupt leaves the driver's connection unusable), as if the database had refused it."""
    url = f"sqlite:///{tmp_path}/a.db" if kind == "sqlite" else request.getfixturevalue("scratch_postgres")
    migrate(url, "0002")
    done = _interrupted(url, "CREATE INDEX", "db", "upgrade")  # as the database builds an index
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "Aborted: the migration was interrupted; run the command again to finish it.")
    assert "Traceback" not in done.stderr and "failed" not in done.stderr
    again = _cli("db", "upgrade", url=url)
    assert again.returncode == 0, again.stderr
    engine = create_engine(url)
    try:
        assert {schema_revision(engine)} == set(schema_heads()[0])  # this version's schema
    finally:
        engine.dispose()
    # a command that migrates nothing is only aborted
    done = _interrupted(url, "SELECT", "db", "current")
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (130, "Aborted.")


def test_db_upgrade_keeps_to_the_configured_log_level(tmp_path):
    """Alembic's progress is INFO: shown by default (the CLI's own level is WARNING), not when the
    operator asked for warnings only."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db",
                   AIIMPL_SECRET_KEY="cli-database-test-key-of-32-characters")
    command = [sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade", "0001"]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Running upgrade" in done.stderr, done.stderr
    command[-1] = "head"
    done = subprocess.run(command, env={**environ, "AIIMPL_LOG_LEVEL": "WARNING"}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    done = subprocess.run([*command[:-1], "9999"], env={**environ, "AIIMPL_LOG_LEVEL": "CRITICAL"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Can't locate revision identified by '9999'" in done.stderr


def test_a_schema_newer_than_this_version_is_named_as_such(tmp_path):
    """A package rolled back over a database a newer version upgraded: Alembic's own "Can't locate
    revision" does not say what happened or what to do."""
    import sqlite3

    from aiimpl_core.database import schema_heads

    url = f"sqlite:///{tmp_path}/a.db"
    assert _cli("db", "upgrade", url=url).returncode == 0
    with sqlite3.connect(tmp_path / "a.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    (head,) = schema_heads()[0]
    expected = (f"Error: the database schema (revision 9999) is newer than this version's ({head}): run "
                f"the version that upgraded it, or first go back with its `aiimpl db downgrade {head}`")
    for command in (("db", "upgrade"), ("db", "current"), ("db", "downgrade", head)):
        done = _cli(*command, url=url)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1] == expected
        assert "Traceback" not in done.stderr


ON_THE_DATABASE = [("dispatch", "ENG-1", "--force"), ("jobs", "list"), ("jobs", "show", "1"),
                   ("jobs", "cancel", "1"), ("prune",)]


@pytest.mark.parametrize("command", ON_THE_DATABASE, ids=" ".join)
def test_commands_on_the_database_refuse_an_older_schema_before_they_act(tmp_path, command):
    """``dispatch`` read the tracker, made a job and started its run before a statement failed on
    the older schema; ``jobs cancel`` ended the job, then printed a traceback and exited 0; ``jobs
    list`` and ``show`` answered as if nothing were wrong."""
    from click.testing import CliRunner
    from flask.cli import ScriptInfo
    from flask_migrate import upgrade
    from sqlalchemy import text

    from aiimpl_core import create_app
    from aiimpl_core.cli import cli
    from aiimpl_core.cli import jobs as _jobs  # noqa: F401 - registers the commands
    from aiimpl_core.database import schema_heads
    from aiimpl_core.extensions import db
    from aiimpl_core.testing.fakes import FakeRunner, FakeTracker

    tracker, runner = FakeTracker(), FakeRunner()
    tracker.add("ENG-1", title="Add a health check")
    app = create_app({"AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/a.db", "AIIMPL_SECRET_KEY": "k" * 40},
                     load_entrypoints=False, plugins=[tracker.plugin, runner.plugin])
    with app.app_context():
        upgrade(revision="0002")
        db.session.execute(text(
            "INSERT INTO mappings (team_key, owner, repo, default_branch, provider, execution_mode, "
            "session_mode, branch_prefix, planning_enabled, extra_env, ticketing, paused, created_at, "
            "updated_at) VALUES ('ENG', 'acme', 'api', 'main', 'anthropic', 'github-actions', "
            "'autonomous', 'ai/', 0, '{}', '{\"provider\": \"fake-tracker\"}', 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        db.session.commit()
    (head,) = schema_heads()[0]
    done = CliRunner().invoke(cli, list(command), obj=ScriptInfo(create_app=lambda: app))
    assert (done.exit_code, done.output) == (1, (
        f"Error: the database schema (revision 0002) is older than this version's ({head}): run "
        "`aiimpl db upgrade`\n"))
    assert runner.runs == {}
    with app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 0


def test_a_failed_db_command_says_error_as_every_command_does(tmp_path):
    """It was a log line (``2026-… ERROR flask_migrate: Error: Can't locate …``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AIIMPL_")}
    environ.update(AIIMPL_DATABASE_URL=f"sqlite:///{tmp_path}/a.db", AIIMPL_SECRET_KEY="k" * 40)
    done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade", "bogus"], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (1, "Error: Can't locate revision identified by 'bogus'\n")


@pytest.mark.parametrize(("command", "revision"), [
    (["upgrade"], ""), (["upgrade"], "head+1"), (["downgrade", "--yes"], "0001@"), (["stamp"], "@"),
    (["show"], "-99"), (["history", "--rev-range"], "@:"), (["history", "--rev-range"], "a:b:c"),
])
def test_a_revision_alembic_fails_on_is_said_as_one_it_cannot_locate(tmp_path, command, revision):
    """Alembic fails on these with an ``assert``, an ``AttributeError`` or a ``ValueError`` of its
    own: they were tracebacks. Nothing is migrated."""
    url = f"sqlite:///{tmp_path}/a.db"
    migrate(url)
    done = _cli("db", *command, *(() if command[0] == "history" else ("--",)), revision, url=url)
    said = ("History range requires [start]:[end], [start]:, or :[end]" if revision == "a:b:c"
            else f"Can't locate revision identified by {revision!r}")
    assert (done.returncode, done.stderr) == (1, f"Error: {said}\n")
    engine = create_engine(url)
    try:
        assert {schema_revision(engine)} == set(schema_heads()[0])
    finally:
        engine.dispose()


def _url(kind: str, tmp_path, request) -> str:  # noqa: ANN001
    """A new, empty database of ``kind``: SQLite in ``tmp_path``, or a scratch PostgreSQL one."""
    return f"sqlite:///{tmp_path}/a.db" if kind == "sqlite" else request.getfixturevalue("scratch_postgres")


KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("kind", KINDS)
def test_db_upgrade_sql_is_refused_in_one_line_before_any_script(kind, tmp_path, request):
    """`aiimpl db upgrade --sql` (offline mode, offered by its --help) printed half a script, then
    an AttributeError traceback: 0003's `create_index_again` (PostgreSQL) and 0006 (both) read the
    database through `op.get_bind()`, which is None offline. It is refused before it writes."""
    url = _url(kind, tmp_path, request)
    for command in (("db", "upgrade", "--sql"), ("db", "downgrade", "--sql", "0010:0005")):
        done = _cli(*command, url=url)
        assert (done.returncode, done.stdout) == (1, ""), done.stderr[-600:]
        assert done.stderr.startswith("Error: --sql (a script to run later) is not supported: ")
        assert len(done.stderr.splitlines()) == 1
    engine = create_engine(url)
    try:
        assert schema_revision(engine) is None  # nothing was run either
    finally:
        engine.dispose()
    assert "--sql" not in _cli("db", "upgrade", "--help", url=url).stdout


def test_db_current_answers_while_another_writer_holds_sqlite(tmp_path):
    """`aiimpl db current` only reads, yet every run of env.py began with BEGIN IMMEDIATE: while an
    upgrade (or any writer) held the write lock it waited SQLite's 30 s, then said "the migration
    failed; the database schema stays at revision …: database is locked"."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/a.db"
    migrate(url)
    (head,) = schema_heads()[0]
    writer = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # a long `aiimpl db upgrade` under way, say 0007's copy
    try:
        done = _cli("db", "current", url=url)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert (done.returncode, done.stdout.split()[:1], done.stderr) == (0, [head], "")


@pytest.mark.postgres
def test_db_current_answers_while_a_migration_holds_the_lock(scratch_postgres):
    """On PostgreSQL `aiimpl db current` queued behind the migration lock: while a run is under way
    (or a killed run's statement still holds it, as the operator guide describes) the command an
    operator runs to see where the schema is hung. `aiimpl db stamp`, which writes, still waits."""
    from sqlalchemy import text

    from aiimpl_core.database import MIGRATION_LOCK, lock_key

    migrate(scratch_postgres)
    (head,) = schema_heads()[0]
    engine = create_engine(scratch_postgres)
    try:
        with engine.connect() as held:
            held.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key(MIGRATION_LOCK)})
            held.commit()
            try:
                done = subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "current"],
                                      env=_environ(scratch_postgres), capture_output=True, text=True,
                                      timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("`aiimpl db current` waited for the migration lock")
            assert (done.returncode, done.stdout.split()[:1]) == (0, [head]), done.stderr
            with pytest.raises(subprocess.TimeoutExpired):
                subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", "stamp", head],
                               env=_environ(scratch_postgres), capture_output=True, timeout=5)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", KINDS)
def test_tables_without_a_revision_are_not_sent_round_in_a_circle(kind, tmp_path, request):
    """A database with this version's tables but no `alembic_version` (made by `db.create_all()`,
    restored from a partial dump, its version table dropped): every command said "the database has
    no schema yet: run `aiimpl db upgrade`", and that upgrade failed with "… already exists", its
    message saying only that the database had no schema revision. Both say what repairs it."""
    from sqlalchemy import text

    url = _url(kind, tmp_path, request)
    migrate(url)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
    finally:
        engine.dispose()
    told = _cli("jobs", "list", url=url)
    assert (told.returncode, told.stderr) == (1, f"Error: {NO_REVISION}\n")
    upgraded = _cli("db", "upgrade", url=url)
    assert upgraded.returncode == 1
    said = upgraded.stderr.strip().splitlines()[-1]
    assert said.startswith(f"Error: the migration failed; {NO_REVISION}: ") and "already exists" in said
    current = _cli("db", "current", url=url)
    assert (current.returncode, current.stdout, current.stderr) == (0, "", f"no revision: {NO_REVISION}\n")
    # the repair it names: the tables are this version's
    assert _cli("db", "stamp", "head", url=url).returncode == 0
    assert _cli("jobs", "list", url=url).stdout.strip() == "(no jobs)"


def test_another_applications_table_of_the_same_name_is_not_taken_for_ours(tmp_path):
    """A database shared with another application, which has a ``jobs`` table of its own, is not
    told to be stamped as this version's schema."""
    import sqlite3

    with sqlite3.connect(tmp_path / "shared.db") as conn:
        conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    told = _cli("jobs", "list", url=f"sqlite:///{tmp_path}/shared.db")
    assert told.stderr.strip() == "Error: the database has no schema yet: run `aiimpl db upgrade`"


def test_db_downgrade_to_base_asks_first(tmp_path):
    """``aiimpl db downgrade base`` removed every table and all its data (jobs, mappings, secrets)
    unasked; a script (no terminal to confirm on) says so with --yes."""
    url = f"sqlite:///{tmp_path}/x.db"
    assert _cli("db", "upgrade", url=url).returncode == 0
    refused = _cli("db", "downgrade", "base", url=url)
    assert refused.returncode == 2, refused.stderr
    assert "base removes every table and all its data; give --yes" in refused.stderr
    assert _cli("jobs", "list", url=url).stdout.strip() == "(no jobs)"  # nothing was removed
    done = _cli("db", "downgrade", "base", "--yes", url=url)
    assert done.returncode == 0, done.stderr
    assert "no schema yet" in _cli("jobs", "list", url=url).stderr


def test_db_downgrade_to_base_by_steps_asks_first(tmp_path):
    """As many steps down as there are revisions (``-N`` from the database's, ``REV-N`` from REV)
    ends at base as well: asked first. One step fewer keeps the first revision's tables."""
    from aiimpl_core.database import schema_heads

    url = f"sqlite:///{tmp_path}/x.db"
    assert _cli("db", "upgrade", url=url).returncode == 0
    (head,) = schema_heads()[0]
    depth = int(head)  # (the revisions are numbered from 0001)
    for target in (f"-{depth}", f"-{depth + 3}", f"{head}-{depth}", "BASE"):
        refused = _cli("db", "downgrade", "--", target, url=url)
        assert refused.returncode == 2, (target, refused.stderr)
        assert "base removes every table and all its data; give --yes" in refused.stderr
    assert _cli("jobs", "list", url=url).stdout.strip() == "(no jobs)"  # nothing was removed
    done = _cli("db", "downgrade", "--", f"-{depth - 1}", url=url)
    assert done.returncode == 0, done.stderr
    assert "0001" in _cli("db", "current", url=url).stdout
    done = _cli("db", "downgrade", "--yes", "--", "-1", url=url)
    assert done.returncode == 0, done.stderr
    assert "no schema yet" in _cli("jobs", "list", url=url).stderr
