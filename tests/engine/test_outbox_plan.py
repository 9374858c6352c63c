"""Queueing a comment reads the outbox by one index probe, whatever the table holds: thousands of
items taken and sent (whose old index entries PostgreSQL keeps until a vacuum) or thousands
waiting out a tracker outage."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import event, insert, update

from aiimpl_core.database import dialect_name
from aiimpl_core.extensions import db
from aiimpl_core.orm import OutboxItem, utcnow
from aiimpl_core.services import outbox


def _fill(state_then: str | None, count: int = 5000) -> None:
    """``count`` items of other issues queued taken; then moved to ``state_then`` (sent: ``done``)."""
    now = utcnow()
    rows = [
        {"dedupe_key": f"fill:{n}", "op": "comment", "provider": "fake-tracker",
         "issue_key": f"FILL-{n % 700}", "kind": "progress:session_created", "body": "x", "state": "sending",
         "attempts": 0, "next_attempt_at": now + outbox.LEASE, "created_at": now}
        for n in range(count)
    ]
    db.session.execute(insert(OutboxItem), rows)
    db.session.commit()
    if state_then is not None:
        db.session.execute(update(OutboxItem).values(state=state_then))
        db.session.commit()


def _queue_statement() -> tuple[str, Any]:
    """The statement (and its parameters, as sent) that queues a status comment, captured from a
    real call whose work is then undone."""
    captured: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
        if statement.lstrip().upper().startswith("INSERT INTO OUTBOX"):
            captured.append((statement, parameters))

    engine = db.engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        now = utcnow()
        outbox.queue_taken(dedupe_key="status:1:pr_opened", op="comment", provider="fake-tracker",
                           issue_key="ENG-1", job_id=None, kind="progress:pr_opened", body="b", now=now)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
        db.session.rollback()
    assert len(captured) == 1
    return captured[0]


def _outbox_reads(statement: str, parameters: Any) -> list[dict[str, Any]]:
    """How the statement's plan reads the outbox (its own writes left out): one entry per read,
    with the indexes it reads by, and on PostgreSQL the blocks it touched. The statement runs
    (PostgreSQL: ``EXPLAIN ANALYZE``) and is rolled back."""
    raw = db.session.connection().connection.driver_connection
    cursor = raw.cursor()
    try:
        if dialect_name() == "postgresql":
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
            plan = cursor.fetchone()[0]
            plan = plan if isinstance(plan, list) else json.loads(plan)
            reads: list[dict[str, Any]] = []

            def walk(node: dict[str, Any]) -> None:
                if node.get("Relation Name") == "outbox" and node["Node Type"] != "ModifyTable":
                    # a bitmap heap scan reads by the bitmap index scans under it
                    indexes = [node["Index Name"]] if "Index Name" in node else [
                        child["Index Name"] for child in node.get("Plans", ()) if "Index Name" in child
                    ]
                    reads.append({"node": node["Node Type"], "indexes": indexes,
                                  "blocks": node["Shared Hit Blocks"] + node["Shared Read Blocks"]})
                for child in node.get("Plans", ()):
                    walk(child)

            walk(plan[0]["Plan"])
            return reads
        cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        details = [row[-1] for row in cursor.fetchall()]
        return [{"node": d, "indexes": [d.split(" INDEX ")[1].split(" ")[0]] if " INDEX " in d else []}
                for d in details if d.startswith(("SEARCH outbox", "SCAN outbox"))]
    finally:
        cursor.close()
        db.session.rollback()


@pytest.mark.parametrize("state_then", ["done", None], ids=["after-5000-sent", "behind-5000-waiting"])
def test_queueing_a_comment_looks_at_its_issue_once_by_one_probe(app, state_then):
    """Whether anything of the issue waits is one probe of ``(issue_key, state)``, made once (the
    planner may leave the state to a filter when most items wait: the issue's own items only): not
    the pending items' index (PostgreSQL intersected the two, and walked every entry left there
    by the items sent since the last vacuum: a status event's cost grew with the comments sent),
    not once per expression that reads the chosen state."""
    with app.app_context():
        _fill(state_then)
        reads = _outbox_reads(*_queue_statement())
    assert len(reads) == 1, reads
    (read,) = reads
    assert read["indexes"] == ["ix_outbox_issue_state"], read
    if "blocks" in read:
        assert read["blocks"] <= 8, read  # the index's root and a leaf or two, whatever the table holds
