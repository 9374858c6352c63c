"""CLI: ``aiimpl demo``."""
from __future__ import annotations

import math
import shutil
import signal
import subprocess
import sys

import click

from . import WholeNumber, cli


def _a_number(ctx: click.Context, param: click.Parameter, value: float) -> float:
    # (a range lets NaN through, and a demo that waits NaN seconds never gives up)
    if math.isnan(value):
        raise click.BadParameter("not a number", ctx, param)
    return value


@cli.command("demo", with_appcontext=False)
@click.option("--dir", "workdir", default="aiimpl-demo", show_default=True,
              help="Working directory of the demo: a new or empty one, or one an earlier demo made "
                   "(emptied first); any other is refused.")
@click.option("--port", default=8000, show_default=True, type=WholeNumber(1, 65535),
              help="Port of the orchestrator and its UI.")
@click.option("--exit-when-done", is_flag=True,
              help="Exit once the demo job has ended (status 0 if it opened a PR).")
@click.option("--timeout", default=300.0, show_default=True, callback=_a_number,
              type=click.FloatRange(min=0, min_open=True),
              help="Give up on the job after this many seconds: its session is stopped, and the exit "
                   "status is 1.")
def demo(workdir: str, port: int, exit_when_done: bool, timeout: float) -> None:
    """Run the whole loop locally with no external account.

    Starts the orchestrator on SQLite with its admin UI, a sandbox tracker, a sandbox GitHub and a
    local runner that executes `aiimpl session run` with a scripted stand-in agent against a local
    git repository; then triggers one issue and shows it go Triggered -> Implementing -> PR opened.
    Needs git.

    Of the environment, only AIIMPL_LOG_LEVEL, AIIMPL_LOG_FORMAT and AIIMPL_TRACE_PLUGINS apply: the
    demo sets everything else itself. Ctrl-C, SIGTERM or SIGHUP (its terminal closed) stops the
    sessions and servers it started; before the job ended, it then exits with status 130 (Ctrl-C),
    143 (SIGTERM) or 129 (SIGHUP).
    """
    from ..demo.stopping import STOP_SIGNALS, GaveUp, Interrupted, StopSignals

    # the sandbox repository, and the session's clone and push, are made with git
    if shutil.which("git") is None:
        raise click.ClickException("the demo needs git: install it or put it on PATH")
    try:
        with StopSignals() as signals:
            from ..demo.run import run_demo

            status = run_demo(workdir, port, exit_when_done=exit_when_done, timeout=timeout,
                              echo=lambda line: click.echo(line), signals=signals)
    except GaveUp as exc:  # (on standard error, as the other ways the demo ends before its job)
        raise click.ClickException(str(exc)) from None
    except Interrupted as exc:  # before the job ended: what the demo started is stopped by now
        for sig in STOP_SIGNALS:  # (all that is left is to say so and exit)
            signal.signal(sig, signal.SIG_IGN)
        try:
            click.echo(f"aiimpl demo: interrupted ({exc.signal_name}) before the demo job ended; "
                       "its sessions and servers are stopped", err=True)
        except OSError:  # the terminal is gone (SIGHUP): nobody to tell
            pass
        sys.exit(exc.exit_status)
    except subprocess.CalledProcessError as exc:  # setting up the sandbox repository
        said = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        command = " ".join(str(word) for word in exc.cmd[:2]) if isinstance(exc.cmd, list) else "git"
        raise click.ClickException(f"{command} failed" + (f": {said[-1]}" if said else "")) from None
    except OSError as exc:  # a working directory that cannot be made or written
        where = f"{exc.filename}: " if exc.filename else ""
        raise click.ClickException(f"{where}{exc.strerror or exc}") from None
    sys.exit(status)
