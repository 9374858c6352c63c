"""An outbox item's id is never given twice (it keys the identity of the comment the item posts),
also on SQLite once housekeeping pruned the newest items; migration 0007 makes it so on a SQLite
database of an older version, its ids going on past those its comments had."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text

from aiimpl_core.orm import utcnow
from aiimpl_core.services import housekeeping, outbox
from aiimpl_core.testing.fakes import queue_outbox_item
from aiimpl_core.testing.pytest_plugin import migrate


def test_an_item_queued_after_the_newest_were_pruned_takes_a_new_id_and_comment_identity(app):
    old = utcnow() - timedelta(days=200)
    earlier = [queue_outbox_item("ENG-1", state="done", created_at=old, done_at=old) for _ in range(3)]
    posted = {outbox.comment_ref(item_id) for item_id in earlier}
    assert housekeeping.prune()["outbox"] == 3

    item_id = queue_outbox_item("ENG-2")

    assert item_id > max(earlier)
    assert outbox.comment_ref(item_id) not in posted


def _insert_items(engine, *ids: int) -> None:  # noqa: ANN001
    with engine.begin() as conn:
        for item_id in ids:
            conn.execute(text(
                "INSERT INTO outbox (id, dedupe_key, op, provider, issue_key, state, attempts,"
                " next_attempt_at, created_at) VALUES (:id, :key, 'comment', 'linear', 'ENG-1', 'done', 1,"
                " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": item_id, "key": f"k{item_id}"})


def _next_id(engine) -> int:  # noqa: ANN001
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO outbox (dedupe_key, op, provider, issue_key, state, attempts, next_attempt_at,"
            " created_at) VALUES ('new', 'comment', 'linear', 'ENG-2', 'pending', 0, CURRENT_TIMESTAMP,"
            " CURRENT_TIMESTAMP)"))
        return conn.execute(text("SELECT id FROM outbox WHERE dedupe_key = 'new'")).scalar()


@pytest.mark.parametrize(
    ("pruned", "expected"),
    [((), 42), ((41,), 42), ((3, 41), 42)],
    ids=["nothing-pruned", "newest-pruned", "all-pruned"],
)
def test_upgrade_on_sqlite_goes_on_past_every_id_given_before(tmp_path, pruned, expected):
    """Items 3 and 41 were written before 0006 (its ``legacy_through`` is 41), then some were pruned
    before this upgrade: the next item is 42 whatever the table still holds."""
    url = f"sqlite:///{tmp_path}/x.db"
    migrate(url, "0005")
    engine = create_engine(url)
    try:
        _insert_items(engine, 3, 41)
        migrate(url, "0006")
        with engine.begin() as conn:
            for item_id in pruned:
                conn.execute(text("DELETE FROM outbox WHERE id = :id"), {"id": item_id})
        migrate(url)
        kept = sorted({3, 41} - set(pruned))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id FROM outbox ORDER BY id")).scalars().all() == kept
        assert _next_id(engine) == expected
        with engine.begin() as conn:  # and once that one is pruned too
            conn.execute(text("DELETE FROM outbox"))
        assert _next_id(engine) == expected + 1
    finally:
        engine.dispose()


def test_an_upgrade_again_after_a_downgrade_on_sqlite_keeps_counting(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    migrate(url)
    engine = create_engine(url)
    try:
        _insert_items(engine, 50)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM outbox"))
        migrate(url, "0006", command="downgrade")
        migrate(url)
        assert _next_id(engine) == 51
    finally:
        engine.dispose()
