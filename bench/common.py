"""Shared pieces of the benchmarks: databases, result files, tables."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import uuid
from datetime import UTC, datetime
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fresh_database(kind: str) -> tuple[str, Any]:
    """A new empty database URL and a function that drops it: ``kind`` is ``sqlite``, ``postgres``
    or a PostgreSQL URL to make the database beside.

    :raises SystemExit: for anything else, with the reason in one line.
    """
    if kind != "sqlite" and kind != "postgres" and not kind.startswith("postgresql"):
        raise SystemExit(f"--db: {kind!r} is not sqlite, postgres or a PostgreSQL URL")
    if kind == "sqlite":
        tmp = tempfile.mkdtemp(prefix="aiimpl-bench-")
        return f"sqlite:///{tmp}/bench.db", lambda: None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = os.environ.get("AIIMPL_TEST_DATABASE_URL", PG_DEFAULT) if kind == "postgres" else kind
    name = f"aiimpl_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(base).set(database=name).render_as_string(hide_password=False), drop


def migrate(app: Any) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()


def commit_id() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_result(name: str, payload: dict[str, Any]) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    payload = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"),
               "commit": commit_id(), "machine": f"{platform.machine()} {os.cpu_count()} cores", **payload}
    path = os.path.join(RESULTS, f"{name}.json")
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
    return path


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths, strict=True)))
