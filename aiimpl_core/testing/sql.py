"""Counting what the app sends to its database, for tests that check a cost in statements."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from ..extensions import db


@contextmanager
def statements() -> Iterator[list[str]]:
    """The statements the app's engine sends inside the block (in an app context)."""
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


@contextmanager
def schema_at(revision: str) -> Iterator[None]:
    """The database's recorded schema revision set to ``revision`` inside the block, then back to
    this code's head (in an app context)."""
    from sqlalchemy import text

    from ..database import schema_heads

    (head,) = schema_heads()[0]
    update = text("UPDATE alembic_version SET version_num = :v")
    db.session.execute(update, {"v": revision})
    db.session.commit()
    try:
        yield
    finally:
        db.session.rollback()
        db.session.execute(update, {"v": head})
        db.session.commit()
