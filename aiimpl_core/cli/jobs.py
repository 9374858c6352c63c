"""CLI: the poller (``aiimpl poll``), manual dispatch (``aiimpl dispatch``), ``aiimpl jobs`` and
``aiimpl prune``."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from .. import logs
from ..config import MAX_RETENTION_DAYS
from ..errors import AiimplError, NotFound
from ..extensions import db
from ..orm import Job, iso_z
from ..types import ACTIVE_STATUSES, JobStatus, Phase
from . import WholeNumber, aligned, cli, echo_json, masked, not_empty, say, stop_without_this_schema


def job_dict(job: Job, *, details: bool = False) -> dict[str, Any]:
    """A job as ``aiimpl jobs`` prints it (``--json``). Never includes credentials."""
    data: dict[str, Any] = {
        "id": job.id,
        "issueKey": job.issue_key,
        "teamKey": job.team_key,
        "phase": job.phase,
        "status": job.status,
        "timeoutReason": job.timeout_reason,
        "backend": job.backend,
        "runnerMode": job.runner_mode,
        "shadow": job.shadow,
        "repository": f"{job.owner}/{job.repo}" if job.owner else None,
        "branch": job.branch,
        "runId": job.run_id,
        "runUrl": job.run_url,
        "prNumber": job.pr_number,
        "prUrl": job.pr_url,
        "createdAt": iso_z(job.created_at),
        "dispatchedAt": iso_z(job.dispatched_at),
        "finishedAt": iso_z(job.finished_at),
    }
    if details:
        data.update(
            {
                "baseBranch": job.base_branch,
                "runName": job.run_name,
                "logUrl": job.log_url,
                "mergeSha": job.merge_sha,
                "error": job.error,
                "launchAfter": iso_z(job.launch_after),
                "logLabel": job.log_label,
                "forced": job.forced,
                "plan": job.plan,
                "transitions": [
                    {"from": t.from_status, "to": t.to_status, "reason": t.reason, "at": iso_z(t.at)}
                    for t in job.transitions
                ],
                "steps": [
                    {
                        "id": s.step_id,
                        "type": s.type,
                        "status": s.status,
                        "startedAt": s.started_at,
                        "finishedAt": s.finished_at,
                        "source": s.source,
                    }
                    for s in job.steps
                ],
            }
        )
    return data


# -- poll -----------------------------------------------------------------------------------


def _require_shared_key() -> None:
    """A poller or dispatcher signs the run tokens and the nonces the server checks: a key made up
    for this process alone would fail every session's first call, so it is refused at once."""
    from flask import current_app

    from ..services.secrets import KEY_MADE_UP

    if current_app.config.get(KEY_MADE_UP):
        raise click.ClickException(
            "AIIMPL_SECRET_KEY is not set: the server could not check the run tokens this process "
            "signs; set the key the server has"
        )


def _a_number(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    # (a range lets NaN through, and a wait of NaN seconds is no wait at all)
    if value is not None and math.isnan(value):
        raise click.BadParameter("not a number", ctx, param)
    return value


@contextmanager
def _stopped_by_signals(ask: Callable[[], None], asked: Callable[[], bool], what: str) -> Iterator[None]:
    """SIGTERM and SIGINT, while in the block: the first calls ``ask`` (the cycle ends after its
    current step, and the loop with it) and says so with ``what``; a second one ends the process at
    once, by that signal. The previous handlers are put back afterwards."""

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if asked():
            # a second signal: the cycle is cut where it is, as a crash would cut it (its job is
            # left to the reconciler, its tracker writes are taken again once their leases run out);
            # the process ends by the signal itself, so its status says so (130, 143)
            say(f"signal {name} again: stopping at once, in the middle of the cycle")
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        ask()  # (first: a second signal may come while the line is written)
        say(f"signal {name}: {what} (again to stop at once)")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command("poll")
@click.option("--once", is_flag=True, help="Run one cycle, print a summary and exit.")
@click.option(
    # (a longer wait than the platform's threads can do would end the loop with a traceback)
    "--interval", type=click.FloatRange(min=0, min_open=True, max=threading.TIMEOUT_MAX), default=None,
    callback=_a_number, help="Seconds between cycles (default AIIMPL_POLL_INTERVAL, 60).",
)
@click.option("--json", "as_json", is_flag=True,
              help="Print each cycle's report as JSON (without --once: one line a cycle, JSON Lines).")
@with_appcontext
def poll(once: bool, interval: float | None, as_json: bool) -> None:
    """Poll the trackers, dispatch eligible issues, reconcile jobs and deliver comments.

    Without --once it runs until SIGTERM or SIGINT. The first SIGTERM or SIGINT (with --once too)
    ends the cycle after the step it is in (a tracker's listing page, a dispatch, a backend's
    reconcile, a tracker write the outbox sends), leaving the rest to the next cycle, and the command with it
    (exit status 0); a second one stops it at once, in the middle of the step (130, 143).
    """
    from ..services.dispatch import run_cycle
    from ..services.poller import Poller, housekeep, stoppable
    from ..services.scheduler import give_back_leases

    _require_shared_key()

    def show(report: Any) -> None:
        if as_json:
            echo_json(report.as_dict(), lines=not once)  # a loop's reports: one line each
            return
        # (a tracker's or backend's error may quote the request's credentials: masked, as in the log;
        # and it may hold a terminal's control characters: each line is one, with none in it)
        lines = [f"[{report.started_at:%Y-%m-%d %H:%M:%S}] {report.summary()}"]
        for key, blocked in sorted(report.blocked.items()):
            lines.append(f"  blocked {key}: {blocked['message']}")
        for provider_id, why in sorted(report.providers_skipped.items()):
            lines.append(f"  skipped {provider_id}: {why}")
        # a runner backend that could not be asked about its runs (its poll failed, it backs off)
        for backend_id, why in sorted(((report.reconciled or {}).get("skipped") or {}).items()):
            lines.append(f"  skipped {backend_id}: {why}")
        for error in report.errors:
            lines.append(f"  error: {error}")
        click.echo("\n".join(logs.one_line(line) for line in masked(lines)))

    # a cycle on an older schema would write with this version's statements (a cycle from cron as
    # well as a service, which would fail every cycle: it stops at once, and a service manager
    # restarts it); a database that does not answer yet is waited for, cycle after cycle (by the
    # loop: the one cycle of --once fails with what the database said)
    stop_without_this_schema(waits=not once)
    if once:
        from ..services import shadow

        stop = threading.Event()
        with _stopped_by_signals(stop.set, stop.is_set, "stopping after the current step of the cycle"):
            # as a poll loop's first cycle: a cycle run from cron is the only poller some installs have
            shadow.leave()
            with stoppable(stop):
                # an operator's explicit cycle reads every tracker, whatever the leases of running
                # pollers (so it takes none, and has none to give back when it is stopped)
                report = run_cycle()
            show(report)
            if not stop.is_set():
                # a cycle run from cron is the only poller some installs have: without it, what
                # only guards against repeats (delivered writes, handled deliveries, used tokens)
                # would never be removed (at most hourly over all the pollers, as a loop does)
                housekeep()
        return
    poller = Poller(interval)
    #: the reader of the reports went away (`aiimpl poll | head`): the loop ends, as any command ends
    #: whose output is cut (the poller's own handler would log it as a failed cycle, every cycle)
    cut: list[BrokenPipeError] = []

    def show_while_read(report: Any) -> None:
        try:
            show(report)
        except BrokenPipeError as exc:
            cut.append(exc)
            poller.stop()

    with _stopped_by_signals(poller.stop, lambda: poller.stopping,
                             "stopping after the current step of the cycle"):
        say(f"polling every {poller.interval:g}s (SIGTERM or Ctrl-C stops it after the current step "
            "of the cycle)")
        poller.run_forever(on_cycle=show_while_read)
        # the process that takes over (a deploy's next, another host's) need not wait them out
        give_back_leases(poller.holder)
    say(f"stopped after {poller.cycles} cycle(s)")
    if cut:
        raise cut[0]  # click ends the command as it ends any whose output is cut (status 1)


# -- prune ----------------------------------------------------------------------------------


@cli.command("prune")
@click.option(
    "--older-than", "days", type=WholeNumber(min=0, max=MAX_RETENTION_DAYS), default=None,
    help="Retention in days (default AIIMPL_RETENTION_DAYS, 90; at least 7, 0 keeps the writes, "
         "deliveries and tokens).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@with_appcontext
def prune_cmd(days: int | None, as_json: bool) -> None:
    """Remove delivered tracker writes, handled webhook deliveries and used run tokens older than
    the retention (the poller does it hourly), expired admin sign-in failures and sign-outs, and
    kept session program wheels no workflow sync pinned for 90 days (but the 5 newest). Jobs and
    their history are kept."""
    from ..config import MIN_RETENTION_DAYS
    from ..services import housekeeping

    stop_without_this_schema(waits=False)
    if days is not None and 0 < days < MIN_RETENTION_DAYS:
        raise click.BadParameter(f"0 or at least {MIN_RETENTION_DAYS} days", param_hint="--older-than")
    removed = housekeeping.prune(days=days)
    if as_json:
        echo_json(removed)
        return
    kept = housekeeping.retention_days(days)
    if kept <= 0:
        click.echo("Retention is 0: tracker writes, webhook deliveries and used tokens are kept. Removed "
                   f"(expired): auth_failures {removed['auth_failures']}, "
                   f"ended_admin_sessions {removed['ended_admin_sessions']}, "
                   f"session_packages {removed['session_packages']}")
        return
    click.echo(f"Removed (older than {kept} days): "
               + ", ".join(f"{table} {n}" for table, n in removed.items()))


# -- dispatch -------------------------------------------------------------------------------


@cli.command("dispatch")
@click.argument("issue_key", callback=not_empty)
@click.option(
    "--phase",
    type=click.Choice([Phase.PLANNING.value, Phase.IMPLEMENTATION.value]),
    default=None,
    help="Run this phase instead of the one the dispatch rules choose.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Dispatch past the blockers and without the trigger "
    "(a paused project and a job already in flight still hold it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def dispatch_cmd(issue_key: str, phase: str | None, force: bool, as_json: bool) -> None:
    """Dispatch one issue now, with the same checks as the poller unless --force."""
    from ..services.dispatch import dispatch_issue

    # before the tracker is read, a job made and a run started: an older schema fails only when the
    # job's history is written, after its run is under way
    stop_without_this_schema(waits=False)
    _require_shared_key()

    try:
        report = dispatch_issue(issue_key, phase=Phase(phase) if phase else None, force=force)
    except NotFound as exc:  # the tracker's own words (`Could not find referenced Issue.`) said whose
        raise click.ClickException(f"{issue_key}: its tracker has no such issue ({exc.message})") from None
    except AiimplError as exc:
        raise click.ClickException(exc.message) from None
    if as_json:
        echo_json(report.as_dict())

    def shown(text: object) -> str:
        """What the tracker, a backend or a blocker said: masked, one line, no terminal control in it."""
        return logs.one_line(masked(str(text)))

    for entry in report.dispatched:
        if not as_json:
            state = f"{entry.status}" + (f" ({shown(entry.error)})" if entry.error else "")
            what = (f"job {entry.job_id}, {entry.phase} on "
                    f"{entry.backend or '-'}{' (shadow)' if entry.shadow else ''}: {state}")
            if entry.deferred_until is not None:  # the job was made, and waits for its backend
                click.echo(f"Dispatch of {entry.issue_key} was rate-limited: {what}; the poller tries it "
                           f"again from {iso_z(entry.deferred_until)}", err=True)
            elif entry.error:  # the job was made, and ended at its dispatch
                click.echo(f"Dispatch of {entry.issue_key} failed: {what}", err=True)
            else:
                click.echo(f"Dispatched {entry.issue_key}: {what}")
        if entry.error:
            sys.exit(1)
    if report.dispatched:
        return
    if issue_key in report.blocked:
        blocked = report.blocked[issue_key]
        if not as_json:
            click.echo(f"Not dispatched ({blocked['reason']}): {shown(blocked['message'])}", err=True)
    elif not as_json:
        click.echo(f"Not dispatched: {shown(report.skipped.get(issue_key, 'nothing to do'))}", err=True)
    sys.exit(1)


# -- jobs -----------------------------------------------------------------------------------


@cli.group("jobs")
def jobs_group() -> None:
    """The dispatch log: jobs and their history."""


@jobs_group.command("list")
@click.option(
    "--status",
    type=click.Choice([s.value for s in JobStatus] + ["active"]),
    default=None,
    help="Only jobs with this status (active: every non-terminal status).",
)
@click.option("--issue", "issue_key", default=None, callback=not_empty, help="Only this issue's jobs.")
@click.option("--team", "team_key", default=None, callback=not_empty, help="Only this team's jobs.")
@click.option("--limit", type=WholeNumber(1, 10000), default=50, show_default=True, help="Newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def jobs_list(
    status: str | None, issue_key: str | None, team_key: str | None, limit: int, as_json: bool
) -> None:
    """List jobs, newest first."""
    stop_without_this_schema(waits=False)
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status == "active":
        query = query.where(Job.status.in_([s.value for s in ACTIVE_STATUSES]))
    elif status:
        query = query.where(Job.status == status)
    if issue_key:
        query = query.where(Job.issue_key == issue_key)
    if team_key:
        query = query.where(Job.team_key == team_key)
    rows = [job_dict(j) for j in db.session.scalars(query).all()]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("(no jobs)")
        return
    lines = [(str(r["id"]), r["issueKey"], r["phase"],
              r["status"] + (f"/{r['timeoutReason']}" if r["timeoutReason"] else ""),
              (r["backend"] or "-") + (" (shadow)" if r["shadow"] else ""), (r["createdAt"] or "")[:19])
             for r in rows]
    lines = [tuple(logs.one_line(cell) for cell in line) for line in lines]  # (a tracker's issue key too)
    header = ("ID", "ISSUE", "PHASE", "STATUS", "BACKEND", "CREATED")
    # columns as wide as their longest value (timed_out/machine_timeout ran into BACKEND)
    click.echo("\n".join(aligned([header, *lines], right=(0,))))


def _may_exist(job_id: int) -> bool:
    """Whether the id column can hold ``job_id`` (a database refuses a larger one in a query, where
    it simply names no job)."""
    from sqlalchemy import BigInteger

    from ..database import is_sqlite

    wide = is_sqlite() or isinstance(Job.__table__.c.id.type, BigInteger)
    return 0 < job_id <= (2**63 - 1 if wide else 2**31 - 1)


def _not_found(job_id: int) -> click.ClickException:
    """A job id that names no job, said as every ``jobs`` command says its errors: the id, then the
    API's message (``job 7: job not found``, as ``job 7: job already ended``)."""
    from ..services.cancel import JOB_NOT_FOUND

    return click.ClickException(f"job {job_id}: {JOB_NOT_FOUND}")


@jobs_group.command("show")
@click.argument("job_id", type=WholeNumber())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def jobs_show(job_id: int, as_json: bool) -> None:
    """Show one job with its transitions and steps."""
    stop_without_this_schema(waits=False)
    job = db.session.get(Job, job_id) if _may_exist(job_id) else None
    if job is None:
        raise _not_found(job_id)
    data = job_dict(job, details=True)
    if as_json:
        echo_json(data)
        return
    status_text = data["status"] + (f" ({data['timeoutReason']})" if data["timeoutReason"] else "")
    shown = logs.one_line  # a runner's and a backend's text, one line each, no terminal control in it
    out = [f"Job {data['id']}: {data['issueKey']} {data['phase']}, {status_text}"]
    for label, key in (
        ("Repository", "repository"),
        ("Branch", "branch"),
        ("Backend", "backend"),
        ("Runner mode", "runnerMode"),
        ("Run", "runUrl"),
        ("Pull request", "prUrl"),
        ("Merge commit", "mergeSha"),
        ("Error", "error"),
        ("Tried again", "launchAfter"),  # (a rate-limited dispatch)
        ("Log label", "logLabel"),
    ):
        if data.get(key):
            out.append(f"  {label + ':':<14}{shown(str(data[key]))}")
    if data["shadow"]:
        out.append("  Shadow:       yes (no runner started, nothing written to the tracker)")
    out.append("Transitions:")
    for t in data["transitions"]:
        arrow = f"{t['from'] or '(new)'} -> {t['to']}"
        why = f"  ({shown(t['reason'])})" if t["reason"] else ""
        out.append(f"  {(t['at'] or '')[:19]}  {arrow}{why}")
    out.append("Steps:" if data["steps"] else "Steps: (none reported)")
    for s in data["steps"]:
        started, kind, status, step_id = (shown(s[k]) for k in ("startedAt", "type", "status", "id"))
        out.append(f"  {started}  {kind:<20} {status:<10} {step_id}")
    click.echo("\n".join(out))


@jobs_group.command("cancel")
@click.argument("job_id", type=WholeNumber())
@click.option("--json", "as_json", is_flag=True, help="Print the ended job as JSON.")
@with_appcontext
def jobs_cancel(job_id: int, as_json: bool) -> None:
    """Stop a job in flight: it ends failed ("cancelled by an operator"), with the failure comment
    and stage on its issue, and its run is stopped through its backend (best effort)."""
    from ..services.cancel import cancel_job

    stop_without_this_schema(waits=False)
    if not _may_exist(job_id):
        raise _not_found(job_id)
    try:
        job = cancel_job(job_id)
    except AiimplError as exc:
        raise click.ClickException(f"job {job_id}: {exc.message}") from None
    if as_json:
        echo_json(job_dict(job))
        return
    click.echo(f"Job {job.id} ({job.issue_key}) cancelled: it ended {job.status}.")
