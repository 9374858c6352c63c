"""``aiimpl openapi``: print the OpenAPI description of the HTTP API."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import with_appcontext

from . import WholeNumber, cli


@cli.command("openapi")
@click.option("--indent", default=2, show_default=True, type=WholeNumber(0, 16),
              help="JSON indentation (0: one line).")
@click.option(
    "--output", "-o", type=click.File("w"), default="-", help="Write to this file instead of stdout."
)
@with_appcontext
def openapi_cmd(indent: int, output) -> None:  # noqa: ANN001
    """Print the OpenAPI 3 document (every endpoint, including the installed plugins')."""
    from ..openapi import get_spec

    spec = get_spec(current_app._get_current_object())  # type: ignore[attr-defined]
    output.write(json.dumps(spec, indent=indent or None, sort_keys=True) + "\n")
