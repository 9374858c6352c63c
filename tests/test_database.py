"""Migrations create the schema on SQLite and PostgreSQL; a second run changes nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from aiimpl_core.testing.pytest_plugin import migrate


def _upgrade(url: str, *revision: str, command: str = "upgrade") -> subprocess.CompletedProcess:
    env = dict(os.environ, AIIMPL_DATABASE_URL=url, AIIMPL_SECRET_KEY="k")
    return subprocess.run([sys.executable, "-m", "aiimpl_core.cli", "db", command, *revision], env=env,
                          capture_output=True, text=True, timeout=120)


def _schema(url: str) -> dict[str, list[str]]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        return {t: sorted(c["name"] for c in insp.get_columns(t)) for t in sorted(insp.get_table_names())}
    finally:
        engine.dispose()


def _check_twice(url: str) -> None:
    first = _upgrade(url)
    assert first.returncode == 0, first.stderr
    assert "Running upgrade" in first.stderr
    schema = _schema(url)
    assert {"mappings", "jobs", "job_steps", "outbox", "consumed_tokens", "secrets"} <= set(schema)
    second = _upgrade(url)
    assert second.returncode == 0, second.stderr
    assert "Running upgrade" not in second.stderr
    assert _schema(url) == schema


def _check_run_name_migration(url: str) -> None:
    """0002 drops the stored run name, which is derived since; going back fills it in again."""
    migrate(url, "0001")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO jobs (id, issue_key, team_key, phase, status, shadow, forced, created_at,"
                " updated_at, run_name) VALUES (7, 'ENG-1', 'ENG', 'planning', 'failed', false, false,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'AI-Implement ENG-1 planning job-7')"
            ))
        migrate(url)
        assert "run_name" not in _schema(url)["jobs"]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT issue_key FROM jobs WHERE id = 7")).scalar() == "ENG-1"
        migrate(url, "0001", command="downgrade")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT run_name FROM jobs WHERE id = 7")).scalar() == (
                "AI-Implement ENG-1 planning job-7"
            )
    finally:
        engine.dispose()


def _check_install_migration(url: str, *, items: bool) -> None:
    """0006 gives the database an id of its own (keying its comments' identities); the items
    written before it keep theirs (``legacy_through``), so a retry still finds its comment."""
    migrate(url, "0005")
    engine = create_engine(url)
    try:
        if items:
            with engine.begin() as conn:
                insert = text(
                    "INSERT INTO outbox (id, dedupe_key, op, provider, issue_key, state, attempts,"
                    " next_attempt_at, created_at) VALUES (:id, :key, 'comment', 'linear', 'ENG-1',"
                    " 'pending', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)")
                for item_id in (3, 41):
                    conn.execute(insert, {"id": item_id, "key": f"k{item_id}"})
        migrate(url)
        read = text("SELECT value FROM settings WHERE key = 'install'")
        with engine.connect() as conn:
            value = conn.execute(read).scalar()
        value = json.loads(value) if isinstance(value, str) else value
        assert value["legacy_through"] == (41 if items else 0)
        assert len(value["id"]) == 32
        # going back and up again keeps the id, and with it the identities of the comments written
        # before the downgrade (it was deleted and made anew: a retry of one of them could post it
        # twice); the items the older version wrote meanwhile keep the identity it gave them
        if items:
            with engine.begin() as conn:
                conn.execute(insert, {"id": 50, "key": "k50"})  # by this version
        migrate(url, "0005", command="downgrade")
        if items:
            with engine.begin() as conn:
                conn.execute(insert, {"id": 57, "key": "k57"})  # by the version gone back to
        migrate(url)
        with engine.connect() as conn:
            again = conn.execute(read).scalar()
        again = json.loads(again) if isinstance(again, str) else again
        assert again == {**value, **({"legacy_ranges": [[51, 57]]} if items else {})}
    finally:
        engine.dispose()


@pytest.mark.parametrize("items", [True, False], ids=["with-items", "empty"])
def test_install_migration_on_sqlite(tmp_path, items):
    _check_install_migration(f"sqlite:///{tmp_path}/x.db", items=items)


@pytest.mark.postgres
def test_install_migration_on_postgres(scratch_postgres):
    _check_install_migration(scratch_postgres, items=True)


def _outbox_indexes(engine) -> dict[str, list[str]]:  # noqa: ANN001
    return {ix["name"]: ix["column_names"] for ix in inspect(engine).get_indexes("outbox")}


def _check_outbox_index_migration(url: str) -> None:
    """0003 replaces the outbox's index on the issue with one on (issue, state), built on
    PostgreSQL concurrently (outside a transaction) and valid; going back restores the old one."""
    migrate(url, "0002")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO outbox (dedupe_key, op, provider, issue_key, state, attempts, next_attempt_at,"
                " created_at) VALUES ('status:1:pr_opened', 'comment', 'linear', 'ENG-1', 'done', 0,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ))
        assert _outbox_indexes(engine)["ix_outbox_issue_key"] == ["issue_key"]
        migrate(url)
        indexes = _outbox_indexes(engine)
        assert indexes["ix_outbox_issue_state"] == ["issue_key", "state"]
        assert "ix_outbox_issue_key" not in indexes
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                assert conn.execute(text(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_outbox_issue_state'::regclass"
                )).scalar() is True
        migrate(url, "0002", command="downgrade")
        indexes = _outbox_indexes(engine)
        assert indexes["ix_outbox_issue_key"] == ["issue_key"]
        assert "ix_outbox_issue_state" not in indexes
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM outbox")).scalar() == 1
    finally:
        engine.dispose()


def _check_job_steps_index_migration(url: str) -> None:
    """0004 drops the index on a step's job, which the unique (job, step) index starts with: a
    job's steps are still read by an index (PostgreSQL's plan says which); going back restores it."""
    migrate(url, "0003")
    engine = create_engine(url)
    try:
        indexes = lambda: {ix["name"] for ix in inspect(engine).get_indexes("job_steps")}  # noqa: E731
        assert "ix_job_steps_job_id" in indexes()
        migrate(url)
        assert "ix_job_steps_job_id" not in indexes()
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("SET enable_seqscan = off"))  # (an empty table: any index will do)
                plan = "\n".join(conn.execute(text(
                    "EXPLAIN SELECT * FROM job_steps WHERE job_id = 7 ORDER BY id")).scalars())
            assert "uq_job_steps_job_step" in plan, plan
        migrate(url, "0003", command="downgrade")
        assert "ix_job_steps_job_id" in indexes()
    finally:
        engine.dispose()


def _check_index_migrations_interrupted(url: str) -> None:
    """0003 and 0004 change indexes, on PostgreSQL ``CONCURRENTLY`` and outside a transaction: a
    run killed on the way can leave any of their changes made without the revision recorded (the
    server finishes a statement whose client died), or an index left invalid by an interrupted
    build. Upgrading again recovers from each (it failed with `already exists` / `does not exist`)."""
    engine = create_engine(url)
    postgres = engine.dialect.name == "postgresql"

    def run(*statements: str) -> None:
        # (a fresh connection: SQLite checks a CREATE INDEX against the schema the connection read
        # last, which the migrations, on connections of their own, changed since)
        engine.dispose()
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))

    try:
        # 0003's build done, its drop not
        migrate(url, "0002")
        run("CREATE INDEX ix_outbox_issue_state ON outbox (issue_key, state)")
        migrate(url)
        assert _outbox_indexes(engine)["ix_outbox_issue_state"] == ["issue_key", "state"]
        assert "ix_outbox_issue_key" not in _outbox_indexes(engine)
        # 0003 done whole, and 0004's drop too
        migrate(url, "0002", command="downgrade")
        run("CREATE INDEX ix_outbox_issue_state ON outbox (issue_key, state)",
            "DROP INDEX ix_outbox_issue_key", "DROP INDEX ix_job_steps_job_id")
        migrate(url)
        assert "ix_outbox_issue_key" not in _outbox_indexes(engine)
        assert "ix_job_steps_job_id" not in {ix["name"] for ix in inspect(engine).get_indexes("job_steps")}
        if postgres:
            # a build interrupted: PostgreSQL keeps the index, invalid, which no lookup uses
            migrate(url, "0002", command="downgrade")
            run("CREATE INDEX ix_outbox_issue_state ON outbox (issue_key, state)",
                "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_outbox_issue_state'::regclass")
            migrate(url)
            with engine.connect() as conn:
                assert conn.execute(text(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_outbox_issue_state'::regclass"
                )).scalar() is True
        # and going back recovers alike: 0004's index made again already, 0003's old one too
        run("CREATE INDEX ix_job_steps_job_id ON job_steps (job_id)",
            "CREATE INDEX ix_outbox_issue_key ON outbox (issue_key)")
        migrate(url, "0002", command="downgrade")
        assert "ix_outbox_issue_state" not in _outbox_indexes(engine)
    finally:
        engine.dispose()


def test_index_migrations_interrupted_on_sqlite(tmp_path):
    _check_index_migrations_interrupted(f"sqlite:///{tmp_path}/x.db")


@pytest.mark.postgres
def test_index_migrations_interrupted_on_postgres(scratch_postgres):
    _check_index_migrations_interrupted(scratch_postgres)


def test_job_steps_index_migration_on_sqlite(tmp_path):
    _check_job_steps_index_migration(f"sqlite:///{tmp_path}/x.db")


@pytest.mark.postgres
def test_job_steps_index_migration_on_postgres(scratch_postgres):
    _check_job_steps_index_migration(scratch_postgres)


def test_outbox_index_migration_on_sqlite(tmp_path):
    _check_outbox_index_migration(f"sqlite:///{tmp_path}/x.db")


def test_db_upgrade_on_sqlite_twice(tmp_path):
    _check_twice(f"sqlite:///{tmp_path}/x.db")


def test_run_name_migration_on_sqlite(tmp_path):
    _check_run_name_migration(f"sqlite:///{tmp_path}/x.db")


@pytest.mark.postgres
def test_db_upgrade_on_postgres_twice(scratch_postgres):
    _check_twice(scratch_postgres)


@pytest.mark.postgres
def test_run_name_migration_on_postgres(scratch_postgres):
    _check_run_name_migration(scratch_postgres)


@pytest.mark.postgres
def test_outbox_index_migration_on_postgres(scratch_postgres):
    _check_outbox_index_migration(scratch_postgres)


def _check_session_packages_migration(url: str) -> None:
    """0009 adds ``session_packages`` (the wheels the workflows pin); going back to 0008 removes it,
    and upgrading again restores it, empty."""
    migrate(url, "0008")
    engine = create_engine(url)
    try:
        assert "session_packages" not in inspect(engine).get_table_names()
        up = migrate(url)
        assert "Running upgrade 0008 -> 0009" in up
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
        migrate(url, "0008", command="downgrade")
        engine.dispose()
        assert "session_packages" not in inspect(engine).get_table_names()
        migrate(url)
        engine.dispose()
        assert "session_packages" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM session_packages")).scalar_one() == 0
    finally:
        engine.dispose()


def test_session_packages_migration_on_sqlite(tmp_path):
    _check_session_packages_migration(f"sqlite:///{tmp_path}/x.db")


@pytest.mark.postgres
def test_session_packages_migration_on_postgres(scratch_postgres):
    _check_session_packages_migration(scratch_postgres)



def _check_upgrades_at_once(url: str) -> None:
    """Two hosts (or a web and a poller service) that each run `aiimpl db upgrade` as they start:
    the second waits for the first and then finds nothing left to do, instead of failing halfway
    with ``duplicate key`` or ``database is locked`` and being told to run the upgrade."""
    env = dict(os.environ, AIIMPL_DATABASE_URL=url, AIIMPL_SECRET_KEY="k")
    for start in ("0001", None):  # from an older schema, then from none at all
        if start:
            migrate(url, start)
        runs = [subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
        for run in runs:
            _out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
        assert "ended_admin_sessions" in _schema(url)
        if start:
            migrate(url, "base", command="downgrade")


def test_upgrades_at_once_on_sqlite(tmp_path):
    _check_upgrades_at_once(f"sqlite:///{tmp_path}/x.db")


@pytest.mark.long
@pytest.mark.postgres
def test_upgrades_at_once_on_postgres(scratch_postgres):
    _check_upgrades_at_once(scratch_postgres)


WAITING = "Another migration run is under way: waiting for it to end."


@pytest.mark.postgres
def test_an_upgrade_waits_for_the_one_under_way(scratch_postgres):
    import threading
    import time

    from aiimpl_core.database import MIGRATION_LOCK, lock_key

    engine = create_engine(scratch_postgres)
    try:
        with engine.connect() as held:  # another host's upgrade, under way
            key = {"k": lock_key(MIGRATION_LOCK)}
            held.execute(text("SELECT pg_advisory_lock(:k)"), key)
            held.commit()
            env = dict(os.environ, AIIMPL_DATABASE_URL=scratch_postgres, AIIMPL_SECRET_KEY="k",
                       AIIMPL_LOG_LEVEL="INFO")
            run = subprocess.Popen([sys.executable, "-m", "aiimpl_core.cli", "db", "upgrade"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            said: list[str] = []
            reader = threading.Thread(target=lambda: [said.append(line) for line in run.stderr], daemon=True)
            reader.start()
            # until the upgrade says it waits (its start takes seconds on a loaded machine)
            deadline = time.monotonic() + 120
            while not any(WAITING in line for line in list(said)):
                assert run.poll() is None and time.monotonic() < deadline, "".join(said)
                time.sleep(0.2)
            assert "jobs" not in _schema(scratch_postgres)
            held.execute(text("SELECT pg_advisory_unlock(:k)"), key)
        run.wait(timeout=120)
        reader.join(timeout=10)
        assert run.returncode == 0, "".join(said)
        assert "jobs" in _schema(scratch_postgres)
    finally:
        engine.dispose()


def _revisions_before_head() -> list[str]:
    from aiimpl_core.database import schema_heads

    heads, known = schema_heads()
    return sorted(known - heads)


def _check_upgrade_from(url: str, revision: str) -> None:
    """A database left at ``revision`` with rows in it: the upgrade to this version keeps them, and
    leaves the schema the models declare."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from aiimpl_core import orm  # noqa: F401 - the models' tables, in the metadata
    from aiimpl_core.extensions import db

    migrate(url, revision)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO mappings (id, team_key, owner, repo, default_branch, provider, execution_mode,"
                " session_mode, branch_prefix, extra_env, planning_enabled, ticketing, paused, created_at,"
                " updated_at) VALUES (3, 'ENG', 'acme', 'api', 'main', 'anthropic', 'github-actions',"
                " 'autonomous', 'ai/', '{}', false, '{}', false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO jobs (id, issue_key, team_key, mapping_id, phase, status, shadow, forced,"
                " created_at, updated_at) VALUES (7, 'ENG-1', 'ENG', 3, 'implementation', 'running', false,"
                " false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO job_steps (job_id, step_id, type, status, started_at, source, created_at,"
                " updated_at) VALUES (7, 'clone', 'setup', 'ok', '2026-01-01T00:00:00Z', 'runner',"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text(
                "INSERT INTO outbox (dedupe_key, op, provider, issue_key, job_id, state, attempts,"
                " next_attempt_at, created_at) VALUES ('status:7:running', 'comment', 'linear', 'ENG-1', 7,"
                " 'pending', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        migrate(url)
        with engine.connect() as conn:
            assert conn.execute(text(
                "SELECT j.issue_key, m.team_key, s.step_id, o.dedupe_key FROM jobs j JOIN mappings m ON"
                " m.id = j.mapping_id JOIN job_steps s ON s.job_id = j.id JOIN outbox o ON o.job_id = j.id"
            )).one() == ("ENG-1", "ENG", "clone", "status:7:running")
            opts = {"compare_type": True, "compare_server_default": True}
            assert compare_metadata(MigrationContext.configure(conn, opts=opts), db.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", _revisions_before_head())
def test_upgrade_from_every_revision_with_rows_on_sqlite(tmp_path, revision):
    _check_upgrade_from(f"sqlite:///{tmp_path}/x.db", revision)


@pytest.mark.postgres
@pytest.mark.parametrize("revision", _revisions_before_head())
def test_upgrade_from_every_revision_with_rows_on_postgres(scratch_postgres, revision):
    _check_upgrade_from(scratch_postgres, revision)


def test_models_match_migrations(app):
    """Autogenerate finds nothing to add: every model change has its migration, down to column
    types and server defaults (as `aiimpl db migrate` compares them). What it does not compare
    (partial indexes' WHERE, AUTOINCREMENT) the next test does."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from aiimpl_core.extensions import db

    with db.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(ctx, db.metadata)
    assert diff == []


def _rules(url: str) -> dict[str, str]:
    """What Alembic's compare_metadata does not compare, as the database has it: each index's
    definition (a partial index's WHERE above all: ``uq_jobs_active_issue`` is the one rule that
    keeps one active job per issue) and, on SQLite, which tables are ``AUTOINCREMENT`` (ids
    never given twice). Normalized: the SQL SQLite keeps is the statement as sent."""
    import re

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                rows = conn.execute(text(
                    "SELECT 'index ' || indexname, indexdef FROM pg_indexes WHERE schemaname ="
                    " current_schema() AND indexname NOT LIKE 'pk_%' AND tablename <> 'alembic_version'"
                )).all()
            else:
                rows = conn.execute(text(
                    "SELECT type || ' ' || name, sql FROM sqlite_master WHERE sql IS NOT NULL AND"
                    " type IN ('index', 'table') AND name NOT IN ('alembic_version', 'sqlite_sequence')"
                )).all()
                rows = [(name, "AUTOINCREMENT" if "AUTOINCREMENT" in sql.upper() else "")
                        if name.startswith("table ") else (name, sql) for name, sql in rows]
    finally:
        engine.dispose()
    said = {}
    for name, sql in rows:
        sql = re.sub(r"\s+", " ", sql.replace('"', "")).strip()
        said[name] = re.sub(r"\s*([(),])\s*", r"\1", sql).lower()
    return said


def _made_by_the_models(url: str) -> dict[str, str]:
    """:func:`_rules` of the schema ``metadata.create_all`` makes, on an empty database at ``url``
    (left empty again)."""
    from aiimpl_core import orm  # noqa: F401 - the models' tables
    from aiimpl_core.extensions import db

    engine = create_engine(url)
    try:
        db.metadata.create_all(engine)
        try:
            return _rules(url)
        finally:
            db.metadata.drop_all(engine)
    finally:
        engine.dispose()


KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("kind", KINDS)
def test_models_match_migrations_down_to_partial_indexes_and_autoincrement(kind, tmp_path, request):
    """compare_metadata (test_models_match_migrations, the upgrade-from-every-revision tests)
    ignores a partial index's WHERE and SQLite's AUTOINCREMENT: a migration that wrote
    `uq_jobs_active_issue` with other statuses than the model's ACTIVE_STATUSES (0001 lists them
    by hand), or left out AUTOINCREMENT, passed them. The indexes `aiimpl db upgrade` builds are
    compared with those the models make, as the database defines them."""
    url = f"sqlite:///{tmp_path}/a.db" if kind == "sqlite" else request.getfixturevalue("scratch_postgres")
    expected = _made_by_the_models(url)
    assert "index uq_jobs_active_issue" in expected and ")where" in expected["index uq_jobs_active_issue"]
    migrate(url)
    assert _rules(url) == expected
    engine = create_engine(url)
    try:
        with engine.begin() as conn:  # what a migration with a stale status list would leave
            conn.execute(text("DROP INDEX uq_jobs_active_issue"))
            conn.execute(text("CREATE UNIQUE INDEX uq_jobs_active_issue ON jobs (issue_key)"
                              " WHERE status IN ('running')"))
    finally:
        engine.dispose()
    changed = _rules(url)
    assert changed != expected
    assert {k for k in expected if changed.get(k) != expected[k]} == {"index uq_jobs_active_issue"}


def test_one_active_job_per_issue_is_enforced_by_the_database(app):
    from sqlalchemy.exc import IntegrityError

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job

    db.session.add(Job(issue_key="ENG-1", team_key="ENG", phase="implementation", status="dispatched"))
    db.session.commit()
    db.session.add(Job(issue_key="ENG-1", team_key="ENG", phase="implementation", status="unknown"))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    db.session.add(Job(issue_key="ENG-1", team_key="ENG", phase="implementation", status="failed"))
    db.session.commit()


def test_serialized_keeps_the_objects_it_is_asked_to_keep_loaded_past_its_commit(app):
    """A kept object reads as the transaction wrote it without a query; the others are expired by
    the commit as usual, and a later change of the row by someone else is noticed on refresh."""
    from sqlalchemy import event, update

    from aiimpl_core.database import serialized
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job

    kept: list[Job] = []
    with serialized(keep=kept):
        job = Job(issue_key="ENG-2", team_key="ENG", phase="implementation", status="unknown")
        other = Job(issue_key="ENG-3", team_key="ENG", phase="implementation", status="unknown")
        db.session.add_all([job, other])
        db.session.flush()
        job.branch = f"ai/job-{job.id}"  # written by the commit's flush, kept as written
        kept.append(job)
    sent: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert (job.status, job.issue_key, job.branch) == ("unknown", "ENG-2", f"ai/job-{job.id}")
        assert sent == []
        assert other.status == "unknown"  # expired: read again
        assert [s for s in sent if s.startswith("SELECT")] == [sent[-1]] and "jobs.id = " in sent[-1]
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    db.session.execute(update(Job).where(Job.id == job.id).values(status="running"))
    db.session.commit()
    db.session.refresh(job)
    assert job.status == "running"


def _prepared_on(driver: Any) -> list[str]:
    """The statements prepared on a psycopg connection (which is left idle, its cache as it was)."""
    with driver.cursor() as cur:
        cur.execute("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
        names = [" ".join(row[0].split()) for row in cur.fetchall()]
    driver.commit()  # (a rollback would have psycopg deallocate them)
    return names


def test_postgres_connections_prepare_only_the_statements_marked_prepared(app):
    """A generic plan prepared while a table was small stays in use as the table grows (found by the
    poll-cycle benchmark: a sequential scan per listing page at 10,000 issues): connections plan
    every statement afresh but those marked :data:`~aiimpl_core.database.PREPARED` (the runner
    callbacks' lookups by key), which each connection prepares once and then only runs. A
    rollback, after which psycopg deallocates what it prepared, leaves them working."""
    from sqlalchemy import bindparam, literal_column, select

    from aiimpl_core.database import PREPARED
    from aiimpl_core.extensions import db

    if db.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL connection setting")
    marked = select(literal_column("'marked'"), bindparam("n")).execution_options(**{PREPARED: True})
    plain = select(literal_column("'plain'"), bindparam("n"))
    with db.engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver.prepare_threshold is None
        for n in range(3):
            assert conn.execute(marked, {"n": n}).all() == [("marked", n)]
            assert conn.execute(plain, {"n": n}).all() == [("plain", n)]
        conn.commit()
        assert driver.prepare_threshold is None
        prepared = _prepared_on(driver)
        assert len(prepared) == 1 and "'marked'" in prepared[0], prepared
        conn.rollback()
        conn.execute(text("SELECT 1"))
        conn.rollback()  # (a transaction to roll back: psycopg now deallocates what it prepared)
        assert conn.execute(marked, {"n": 7}).all() == [("marked", 7)]
        conn.commit()
        prepared = _prepared_on(driver)
        assert len(prepared) == 1 and "'marked'" in prepared[0], prepared
        conn.rollback()


def test_with_db_prepared_off_no_statement_is_prepared(database_url):
    """``AIIMPL_DB_PREPARED=false`` (behind a PgBouncer that cannot carry prepared statements):
    the marked statements are planned at every run too."""
    from sqlalchemy import bindparam, literal_column, select

    from aiimpl_core import create_app
    from aiimpl_core.database import PREPARED
    from aiimpl_core.extensions import db

    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection setting")
    app = create_app({"AIIMPL_DATABASE_URL": database_url}, load_entrypoints=False,
                     environ={"AIIMPL_DB_PREPARED": "false"})
    marked = select(literal_column("'marked'"), bindparam("n")).execution_options(**{PREPARED: True})
    with app.app_context():
        try:
            with db.engine.connect() as conn:
                for n in range(3):
                    assert conn.execute(marked, {"n": n}).all() == [("marked", n)]
                conn.commit()
                assert _prepared_on(conn.connection.driver_connection) == []
        finally:
            db.engine.dispose()


def test_one_of_is_one_statement_text_whatever_the_number_of_values(app):
    """``one_of`` selects the same rows as ``IN``; on PostgreSQL its text does not change with the
    number of values (one array parameter), so it is rendered and parsed once, not per length."""
    from sqlalchemy import event, select

    from aiimpl_core.database import one_of, rows_by_issue_key
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import TrackedIssue

    db.session.add_all(
        TrackedIssue(issue_key=f"ENG-{n}", team_key="ENG", provider="fake") for n in range(1, 301)
    )
    db.session.commit()
    texts: list[str] = []

    def record(conn, cursor, statement, *args):
        texts.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        few = rows_by_issue_key(TrackedIssue, ["ENG-1", "ENG-2", "ENG-999"], TrackedIssue.id)
        many = rows_by_issue_key(TrackedIssue, [f"ENG-{n}" for n in range(1, 251)], TrackedIssue.id)
        wanted = [r.id for r in few.values()]
        ids = db.session.scalars(select(TrackedIssue.id).where(one_of(TrackedIssue.id, wanted))).all()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert sorted(few) == ["ENG-1", "ENG-2"] and len(many) == 250
    assert sorted(ids) == sorted(r.id for r in few.values())
    if db.engine.dialect.name == "postgresql":
        assert texts[0] == texts[1] and "ANY" in texts[0]
    else:
        assert texts[0] != texts[1]  # an IN list, one parameter per value


def test_insert_rows_keeps_every_value_and_default_in_one_statement_on_postgresql(app):
    """``insert_rows`` stores what an ``executemany`` would, defaults included; on PostgreSQL it
    is one statement (the rows as one JSON parameter) whatever the number of rows."""
    from datetime import timedelta

    from sqlalchemy import event, select

    from aiimpl_core.database import insert_rows
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import TrackedIssue, utcnow

    seen = utcnow() - timedelta(minutes=5)
    # text an array literal would have to quote: commas, braces, quotes, a backslash, the word NULL
    titles = ['a, "b" {c}', "back\\slash", "NULL", "", "émoji 🚀", "plain"]
    rows = [
        {"issue_key": f"ENG-{n}", "team_key": "ENG", "provider": "fake", "title": titles[n % 6],
         "url": None if n % 2 else f"https://x/{n}", "triggered": n % 3 == 0,
         # a naive time is UTC, as the column's type has it
         "last_seen_at": seen.replace(tzinfo=None) if n % 5 == 0 else seen}
        for n in range(1, 301)
    ]
    texts: list[str] = []

    def record(conn, cursor, statement, *args):
        texts.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        insert_rows(TrackedIssue, rows)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        assert len(texts) == 1 and "json_to_recordset" in texts[0]
    stored = {
        r.issue_key: r
        for r in db.session.execute(select(TrackedIssue)).scalars()
    }
    assert len(stored) == 300
    for row in rows:
        got = stored[row["issue_key"]]
        assert (got.title, got.url, got.triggered, got.last_seen_at) == (
            row["title"], row["url"], row["triggered"], seen
        )
        assert got.trigger_consumed is False and got.created_at is not None  # the columns' defaults


def test_insert_rows_keeps_a_json_column_s_structure(app):
    """A JSON column's value is stored as the structure it is, not as a string of it."""
    from sqlalchemy import select

    from aiimpl_core.database import insert_rows
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Setting, utcnow

    values = [{"until": "2026-12-02T05:00:00+00:00", "failures": 3}, ["a", 1, None], "text", 7, None]
    insert_rows(Setting, [{"key": f"k{n}", "value": v, "updated_at": utcnow()} for n, v in enumerate(values)])
    db.session.commit()
    stored = dict(db.session.execute(select(Setting.key, Setting.value)).all())
    assert [stored[f"k{n}"] for n in range(len(values))] == values


def test_advisory_locks_takes_every_lock_in_one_statement_until_the_transaction_ends(app):
    """``advisory_locks`` holds each named lock, as ``advisory_lock`` would, until its transaction
    ends; another transaction cannot take any of them meanwhile."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from aiimpl_core.database import advisory_locks, try_advisory_lock
    from aiimpl_core.extensions import db

    if db.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's (SQLite serializes writers)")
    texts: list[str] = []

    def record(conn, cursor, statement, *args):
        texts.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        advisory_locks(["team:A", "team:B", "team:C"])
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(texts) == 1
    with Session(db.engine) as other:
        assert not try_advisory_lock("team:A", other)
        other.rollback()
        assert not try_advisory_lock("team:C", other)
        other.rollback()
        assert try_advisory_lock("team:D", other)
        other.rollback()
        db.session.commit()  # ends the transaction holding them
        assert try_advisory_lock("team:A", other) and try_advisory_lock("team:C", other)
        other.rollback()


def test_an_unsupported_database_is_refused_at_start_up_without_echoing_its_url(tmp_path):
    """Only SQLite and PostgreSQL are supported; another database fails when the app is built (a
    clear error, no traceback), not at its first upsert. The URL, password included, is not shown."""
    from aiimpl_core import create_app
    from aiimpl_core.errors import ConfigError

    for url, shown in (("mysql+pymysql://app:hunter2@db/aiimpl", "the mysql database is not supported"),
                       ("not a url", "AIIMPL_DATABASE_URL is not a database URL")):
        with pytest.raises(ConfigError) as err:
            create_app({"AIIMPL_DATABASE_URL": url}, load_entrypoints=False)
        assert shown in err.value.message and "hunter2" not in err.value.message
    done = _upgrade("mysql+pymysql://app:hunter2@db/aiimpl")
    assert done.returncode != 0
    assert "the mysql database is not supported" in done.stderr
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://app:hunter2@db:5432x/aiimpl", "AIIMPL_DATABASE_URL is not a database URL"),
    ("postgresql+psycopg2x://app:hunter2@db/aiimpl",
     "AIIMPL_DATABASE_URL: the psycopg2x driver of postgresql is not installed"),
    ("postgresql+psycopg_async://app:hunter2@db/aiimpl",
     "AIIMPL_DATABASE_URL: the psycopg_async driver is asynchronous"),
], ids=["port", "driver", "async-driver"])
def test_a_url_whose_port_or_driver_cannot_serve_is_refused_at_start_up(tmp_path, url, shown):
    """Refused with the rest of the configuration (gunicorn's master stops with the message, no
    traceback), not met as a traceback when the engine is made; the password is not shown."""
    from aiimpl_core import create_app
    from aiimpl_core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        create_app({"AIIMPL_DATABASE_URL": url}, load_entrypoints=False)
    assert err.value.message.startswith(shown) and "hunter2" not in err.value.message
    done = _upgrade(url)
    assert done.returncode == 1
    assert shown in done.stderr and "Traceback" not in done.stderr and "hunter2" not in done.stderr


def test_a_sqlite_without_returning_is_refused_at_start_up(monkeypatch):
    """The statements use RETURNING (SQLite 3.35): an older SQLite library is named at start-up,
    not met as a 500 at the first progress report."""
    import sqlite3

    from aiimpl_core import create_app
    from aiimpl_core.errors import ConfigError

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(ConfigError) as err:
        create_app({"AIIMPL_DATABASE_URL": "sqlite://"}, load_entrypoints=False)
    assert "SQLite 3.35.0 or newer is needed" in err.value.message and "3.34.1" in err.value.message


def test_a_pooled_connection_is_checked_without_a_round_trip_unless_idle_or_ended(app, monkeypatch):
    """A connection back from the pool moments ago is used without a ping; one idle longer than
    ``PING_IDLE_AFTER`` is pinged; one the server ended meanwhile is noticed at checkout (it has
    the server's goodbye to read) and replaced, so the next statement succeeds."""
    import select as select_module
    import time

    from sqlalchemy import create_engine, event, select, text
    from sqlalchemy.engine import make_url

    from aiimpl_core import database
    from aiimpl_core.extensions import db

    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no server to end a connection")
    assert db.engine.pool._pre_ping is False
    assert event.contains(db.engine, "checkout", database._on_checkout)
    unrelated = create_engine(make_url(str(db.engine.url)))  # another engine of the process
    assert not event.contains(unrelated, "checkout", database._on_checkout)
    unrelated.dispose()
    pings: list[object] = []
    real_ping = database._ping

    def counted(connection):
        pings.append(connection)
        return real_ping(connection)

    monkeypatch.setattr(database, "_ping", counted)

    def one_transaction() -> int:
        pid = db.session.scalar(text("SELECT pg_backend_pid()"))
        db.session.commit()
        return pid

    pid = one_transaction()
    for _ in range(5):
        assert one_transaction() == pid  # the same pooled connection, returned and taken again
    assert pings == []

    monkeypatch.setattr(database, "PING_IDLE_AFTER", 0.0)
    assert one_transaction() == pid and len(pings) == 1  # idle "too long": pinged, and fine
    monkeypatch.setattr(database, "PING_IDLE_AFTER", 60.0)

    admin = create_engine(make_url(str(db.engine.url)), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()
    deadline = time.monotonic() + 5
    idle = db.engine.pool._pool.queue[0].dbapi_connection  # the one connection in the pool
    while time.monotonic() < deadline:  # the backend's exit reaches the client's socket
        if select_module.select([idle], [], [], 0.05)[0]:
            break
    pings.clear()
    assert db.session.scalar(select(1)) == 1  # no error: the ended connection was replaced
    db.session.commit()
    assert len(pings) == 1 and one_transaction() != pid


def test_a_connection_s_socket_is_looked_at_past_select_s_descriptor_limit():
    """The check-out's look at a socket works for a descriptor numbered past 1,024 (``select``'s
    limit, which a busy worker's connections can pass): nothing to read on a live connection,
    something once the peer has gone."""
    import os
    import resource
    import socket

    from aiimpl_core.database import _has_input

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the process may not open a descriptor numbered past 1,024 here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    ours, peer = socket.socketpair()
    high = os.dup2(ours.fileno(), 1100)
    try:

        class Connection:
            def fileno(self) -> int:
                return high

        assert _has_input(Connection()) is False
        peer.close()  # the server ends the connection: the end of the stream is there to read
        assert _has_input(Connection()) is True
    finally:
        os.close(high)
        ours.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_postgresql_server_that_does_not_answer_fails_a_connection_in_seconds(monkeypatch):
    """A partition or a firewall that drops packets would hold a connection attempt for the kernel's
    SYN retries (about two minutes, past gunicorn's worker timeout): the engine gives up after
    ``CONNECT_TIMEOUT``. Here a listener takes the TCP connection and never says a word."""
    import socket
    import threading
    import time

    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from aiimpl_core import app as app_module

    pytest.importorskip("psycopg")
    monkeypatch.setattr(app_module, "CONNECT_TIMEOUT", 1)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://nobody@127.0.0.1:{silent.getsockname()[1]}/none"
        engine = create_engine(url, **app_module._engine_options(url))
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                engine.connect()
            except BaseException as exc:  # noqa: BLE001 - what the attempt ended with
                outcome.append(exc)

        started = time.monotonic()
        attempt = threading.Thread(target=connect, daemon=True)  # (without a timeout: stuck for good)
        attempt.start()
        attempt.join(15)
        assert not attempt.is_alive(), "the connection attempt is still waiting"
        assert time.monotonic() - started < 10
        assert len(outcome) == 1 and isinstance(outcome[0], OperationalError), outcome
        engine.dispose()
    # the URL's own setting wins
    options = app_module._engine_options(url + "?connect_timeout=3")
    assert "connect_timeout" not in options["connect_args"]
    assert app_module._engine_options(url)["connect_args"]["connect_timeout"] == 1


def test_a_postgresql_url_without_a_driver_gets_psycopg_s_settings_when_psycopg_serves_it():
    """SQLAlchemy 2.1 serves ``postgresql://`` with psycopg (3): its connections need the same
    settings as ``postgresql+psycopg://`` (no prepared statements, a connect timeout, the check at
    check-out instead of a ping)."""
    from aiimpl_core import app as app_module

    pytest.importorskip("psycopg")
    url = "postgresql://aiimpl@db.internal/aiimpl"
    if make_url(url).get_dialect().driver != "psycopg":
        pytest.skip("this SQLAlchemy serves postgresql:// with another driver")
    options = app_module._engine_options(url)
    assert options["connect_args"] == {"prepare_threshold": None,
                                       "connect_timeout": app_module.CONNECT_TIMEOUT}
    assert options["pool_pre_ping"] is False
    assert app_module._engine_options("postgresql+psycopg2://aiimpl@db.internal/aiimpl")["pool_pre_ping"]


def test_only_a_broken_foreign_key_is_taken_for_a_row_gone() -> None:
    """A claim whose job broke its mapping's foreign key (deleted meanwhile) is told from one that
    broke the index of jobs in flight, on every driver: psycopg's sqlstate, psycopg2's pgcode,
    SQLite's message; a NOT NULL or unique violation is not a row gone."""
    from sqlalchemy.exc import IntegrityError

    from aiimpl_core.database import foreign_key_violation

    class Psycopg(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__("violation")
            self.sqlstate = sqlstate

    class Psycopg2(Exception):
        def __init__(self, pgcode: str) -> None:
            super().__init__("violation")
            self.pgcode = pgcode

    def error(orig: Exception) -> IntegrityError:
        return IntegrityError("INSERT INTO jobs", {}, orig)

    assert foreign_key_violation(error(Psycopg("23503"))) and foreign_key_violation(error(Psycopg2("23503")))
    assert foreign_key_violation(error(Exception("FOREIGN KEY constraint failed")))
    for other in (Psycopg("23505"), Psycopg2("23505"), Psycopg("23502"),
                  Exception("UNIQUE constraint failed: jobs.issue_key")):
        assert not foreign_key_violation(error(other))
