"""CLI: ``aiimpl demo``."""
from __future__ import annotations

import sys

import click

from . import cli


@cli.command("demo", with_appcontext=False)
@click.option("--dir", "workdir", default="aiimpl-demo", show_default=True,
              help="Working directory of the demo: a new or empty one, or one an earlier demo made "
                   "(emptied first); any other is refused.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the orchestrator and its UI.")
@click.option("--exit-when-done", is_flag=True,
              help="Exit once the demo job has ended (status 0 if it opened a PR).")
@click.option("--timeout", default=300.0, show_default=True, help="Give up after this many seconds.")
def demo(workdir: str, port: int, exit_when_done: bool, timeout: float) -> None:
    """Run the whole loop locally with no external account.

    Starts the orchestrator on SQLite with its admin UI, a sandbox tracker, a sandbox GitHub and a
    local runner that executes `aiimpl session run` with a scripted stand-in agent against a local
    git repository; then triggers one issue and shows it go Triggered -> Implementing -> PR opened.
    """
    from ..demo.run import run_demo

    sys.exit(run_demo(workdir, port, exit_when_done=exit_when_done, timeout=timeout,
                      echo=lambda line: click.echo(line)))
