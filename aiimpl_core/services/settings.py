"""Persisted global settings, and the runner mode with its environment override."""
from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import select

from ..config import RUNNER_MODES
from ..database import serialized, upsert
from ..extensions import db
from ..orm import Setting, utcnow

RUNNER_MODE_KEY = "runner_mode"


def get(key: str, default: Any = None) -> Any:
    row = db.session.scalar(select(Setting).where(Setting.key == key))
    return default if row is None else row.value


def put(key: str, value: Any) -> None:
    # one statement: two first saves of a setting at once would otherwise both read no row and
    # both insert one (the second a duplicate key)
    with serialized(writes_first=True) as session:
        stmt = upsert(Setting, session).values(key=key, value=value, updated_at=utcnow())
        changed = {"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
        session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=changed))


def persisted_runner_mode() -> str:
    return get(RUNNER_MODE_KEY, "default") or "default"


def env_runner_mode() -> str | None:
    """The ``RUNNER_MODE`` override in force, if any (the setting refuses other values at start-up)."""
    value = current_app.config.get("RUNNER_MODE")
    return value.strip() if isinstance(value, str) and value.strip() in RUNNER_MODES else None


def effective_runner_mode(persisted: Any = None) -> str:
    """The mode in force: the ``RUNNER_MODE`` environment variable wins over the database.

    :param persisted: the stored setting's value when the caller read it already.
    """
    env = env_runner_mode()
    if env in RUNNER_MODES:
        return env  # type: ignore[return-value]
    return (persisted or "default") if persisted is not None else persisted_runner_mode()
