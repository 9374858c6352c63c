"""``aiimpl linear``: operator commands for the Linear connection."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from .config import API_KEY_SECRET, PROVIDER_ID
from .provider import LinearProvider


def _none_empty(ctx: click.Context, param: click.Parameter, keys: tuple[str, ...]) -> tuple[str, ...]:
    """A team key given empty (a script's unset variable) is refused, not looked up."""
    if any(not key.strip() for key in keys):
        raise click.BadParameter("must not be empty")
    return keys


@click.group("linear")
def linear_group() -> None:
    """Linear connection commands."""


@linear_group.command("check")
@click.option(
    "--team",
    "teams",
    callback=_none_empty,
    multiple=True,
    help="Team key to check (default: the teams of the Linear mappings). Repeat for several.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@with_appcontext
def check(teams: tuple[str, ...], as_json: bool) -> None:
    """Check the credentials and that each team exists, has a completed workflow state and can
    use the trigger label AI-Implement.

    Stage labels the team does not have yet are listed; they are created on first use (those it
    has only retired are restored then).
    Exits with status 1 when something is wrong.
    """
    provider = current_app.extensions["aiimpl"].ticketing(PROVIDER_ID)
    assert isinstance(provider, LinearProvider)
    settings = provider.settings
    if not (settings.api_key or settings.oauth_token):
        # the key may be the stored secret: a database that cannot be read (no schema yet, not
        # reachable) is said as such here, not as "Linear is not configured"
        provider.context.secret(API_KEY_SECRET, None)
    provider.require_configured()
    if not teams:
        teams = tuple(
            m.team_key
            for m in provider.context.mappings()
            if (m.ticketing or {}).get("provider") == PROVIDER_ID
        )
    report = provider.check_setup(list(teams))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        viewer = report["viewer"]
        click.echo(f"Signed in as {viewer.get('name') or viewer.get('email') or 'unknown'}")
        if not teams:
            click.echo("No Linear team to check: pass --team or add a mapping.")
        for key, entry in report["teams"].items():
            if not entry["found"]:
                click.echo(f"{key}: {'; '.join(entry['problems'])}")
                continue
            line = f"{key} ({entry['name']}): done state {entry['done'] or '-'}"
            if entry["missing"]:
                line += f"; labels created on first use: {', '.join(entry['missing'])}"
            if entry["retired"]:
                line += f"; retired labels restored on first use: {', '.join(entry['retired'])}"
            if entry["problems"]:
                line += f"; {'; '.join(entry['problems'])}"
            click.echo(line)
    if not report["ok"]:
        raise SystemExit(1)
