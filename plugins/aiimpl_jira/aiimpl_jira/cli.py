"""``aiimpl jira``: operator commands for the Jira connection."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from .provider import JiraProvider


def _none_empty(ctx: click.Context, param: click.Parameter, keys: tuple[str, ...]) -> tuple[str, ...]:
    """A project key given empty (a script's unset variable) is refused, not looked up."""
    if any(not key.strip() for key in keys):
        raise click.BadParameter("must not be empty")
    return keys


@click.group("jira")
def jira_group() -> None:
    """Jira connection commands."""


@jira_group.command("check")
@click.option(
    "--project",
    "projects",
    callback=_none_empty,
    multiple=True,
    help="Project key to check (default: the mapped Jira projects). Repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@with_appcontext
def check(projects: tuple[str, ...], as_json: bool) -> None:
    """Check the credentials and that each project's workflow has the lifecycle's statuses.

    Exits with status 1 when something is missing.
    """
    provider = current_app.extensions["aiimpl"].ticketing(JiraProvider.id)
    assert isinstance(provider, JiraProvider)
    provider.require_configured()
    if not projects:
        projects = tuple(
            m.team_key
            for m in provider.context.mappings()
            if (m.ticketing or {}).get("provider") == JiraProvider.id
        )
    report = provider.check_setup(list(projects))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(f"Signed in as {report['account']['displayName'] or report['account']['accountId']}")
        if not projects:
            click.echo("No Jira project to check: pass --project or add a mapping.")
        for key, entry in report["projects"].items():
            if entry["error"]:
                click.echo(f"{key}: {entry['error']}")
                continue
            problems = [f"missing status '{name}'" for name in entry["missing"]]
            if not entry["done"]:
                problems.append("no status in the done category")
            click.echo(f"{key}: " + ("; ".join(problems) if problems else "ok"))
    if not report["ok"]:
        raise SystemExit(1)
