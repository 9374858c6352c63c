"""``aiimpl check``: pre-flight checks of every connection, read-only."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext

from .. import logs
from . import cli, echo_json, masked


@cli.command("check")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as the JSON object GET /api/checks answers (checks, failed, summary).")
@with_appcontext
def check_cmd(as_json: bool) -> None:
    """Check, read-only, that every tracker, runner backend and GitHub accepts the configured
    credentials and knows what the mappings name. Exits 1 when a check fails, or when the
    database lacks this version's schema (run `aiimpl db upgrade`)."""
    from ..database import schema_problem, schema_revision
    from ..services.checks import FAILED, report, run_checks, summary

    # the server would not start on it (and every poll cycle would fail): that is the first thing
    # to fix, whatever the connections answer
    problem = schema_problem(schema_revision())
    if problem:
        raise click.ClickException(problem)
    rows = run_checks()
    if as_json:
        echo_json(report(rows))
    else:
        width = max((len(f"{r.kind} {r.provider}") for r in rows), default=0)
        for r in rows:
            mark = {"ok": "ok    ", "failed": "FAILED", "skipped": "skip  "}[r.status]
            who = f"{r.kind} {r.provider}"
            # (a tracker's or a backend's answer: one line, with no terminal control in it)
            click.echo(logs.one_line(masked(f"{mark}  {who:<{width}}  {r.name}: {r.detail}")))
        click.echo(summary(rows))
    if any(r.status == FAILED for r in rows):
        sys.exit(1)
