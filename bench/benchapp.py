"""The application the callback benchmark serves with gunicorn: the real app plus, on the same
stack, a bare endpoint doing one database insert (the yardstick), and a tracker that discards
comments (so the figures measure the orchestrator, not a tracker)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from flask import Blueprint, jsonify, request
from sqlalchemy import Column, Integer, MetaData, String, Table, Text

from aiimpl_core import create_app, hookimpl
from aiimpl_core.extensions import db
from aiimpl_core.providers import TicketingProvider
from aiimpl_core.types import Comment, Stage, TrackerIssue, TriggeredPage

bench_metadata = MetaData()
bench_rows = Table("bench_rows", bench_metadata, Column("id", Integer, primary_key=True),
                   Column("runner", String(64)), Column("body", Text))


class NullTracker(TicketingProvider):
    id = "bench"
    display_name = "Benchmark tracker (discards writes)"

    def iter_triggered(self, teams: Sequence[str]) -> Iterator[TriggeredPage]:
        yield TriggeredPage((), complete=True)

    def get_issue(self, key: str) -> TrackerIssue:
        return TrackerIssue(key=key, team_key=key.rsplit("-", 1)[0], title="bench", provider=self.id)

    def post_comment(self, key: str, body: str) -> Comment:
        return Comment(body=body, id="0")

    def set_stage(self, key: str, stage: Stage) -> None:
        return None

    def mark_done(self, key: str) -> None:
        return None


class BenchPlugin:
    __name__ = "bench"

    @hookimpl
    def aiimpl_register_ticketing_providers(self, register: Callable[..., None]) -> None:
        register(NullTracker)


bare = Blueprint("bench_bare", __name__)


@bare.post("/bench/bare")
def bare_insert():  # noqa: ANN201
    body = request.get_json(silent=True) or {}
    db.session.execute(bench_rows.insert().values(runner=str(body.get("runner", "")), body=str(body)[:500]))
    db.session.commit()
    return jsonify(ok=True)


def create():  # noqa: ANN201
    app = create_app(plugins=[BenchPlugin()])
    app.register_blueprint(bare)
    return app  # the bench made bench_rows before starting gunicorn (its workers would race to)
