"""The ``aiimpl`` command line: one click group built on Flask's ``FlaskGroup``.

Plugins add commands through ``aiimpl_register_commands``. Commands that need the database or
the providers run inside the app context; ``aiimpl session run`` needs neither.
"""
from __future__ import annotations

import contextlib
import copy
import errno
import functools
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click
from click.exceptions import Exit, NoArgsIsHelpError
from flask.cli import FlaskGroup, ScriptInfo, routes_command, shell_command, with_appcontext

from .. import __version__, logs
from ..config import access_code_warning, not_utf8
from ..errors import AiimplError


def _create_app():  # noqa: ANN202
    from .. import create_app
    from ..app import SIGNS_NOTHING

    # Every command builds the app, and with AIIMPL_SCHEDULER set the app would start poll cycles in
    # the command's own process: dispatching from `aiimpl jobs list`, polling while `aiimpl db upgrade`
    # migrates, a second loop beside `aiimpl poll`, a cycle cut short when the command exits. Only
    # `aiimpl serve`, a web process, runs the scheduler (see `serve`).
    # `aiimpl db` reads no secret and signs nothing: a key missing is no concern of its own. (The
    # app is built as the command's name is looked up: Flask-Migrate's `db` is the app's command.)
    ctx = click.get_current_context(silent=True)
    migrating = ctx is not None and ctx.find_root().meta.get(_COMMAND) == "db"
    return create_app({"AIIMPL_SCHEDULER": False, **({SIGNS_NOTHING: True} if migrating else {})})


#: ``ctx.meta`` key (of the root context) of the name of the command being run
_COMMAND = "aiimpl.command"


#: ``ctx.meta`` key of the project error that kept the help from loading the app
_APP_FAILURE = "aiimpl.app_failure"
#: ``ctx.meta`` key of the command line's arguments, as given
_ARGS = "aiimpl.args"


#: what a command prints may quote a remote answer, a failed request's credentials and all
masked = logs.masked


def echo_json(data: object, *, lines: bool = False) -> None:
    """``data`` as JSON on standard output, masked; ``lines``: on one line (JSON Lines, for a
    command that prints one object after another, as ``aiimpl poll --json`` does per cycle)."""
    if lines:
        click.echo(json.dumps(masked(data), sort_keys=True, default=str, separators=(",", ":")))
    else:
        click.echo(json.dumps(masked(data), indent=2, sort_keys=True, default=str))


def aligned(lines: list[tuple[str, ...]], *, right: tuple[int, ...] = ()) -> list[str]:
    """Text table rows: each column as wide as its longest cell (left-aligned, or right-aligned for
    the columns in ``right``), two spaces between, no trailing space."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
            for line in lines]


class _CommandLineError(click.ClickException):
    """A value of the command line refused in one line, with a usage error's exit status (2)."""

    exit_code = 2


def _not_utf8_argument(ctx: click.Context) -> str | None:
    """The first argument of the command line with bytes that are no UTF-8 (Python keeps them as
    lone surrogates), or ``None``."""
    return next((arg for arg in ctx.meta.get(_ARGS, ()) if not_utf8(arg)), None)


def not_utf8_error() -> click.ClickException:
    """The error of a value with bytes that are no UTF-8, which no request can carry: the argument
    that holds them quoted, or, read from standard input or a file (it may be a secret), not."""
    given = _not_utf8_argument(click.get_current_context())
    return _CommandLineError(f"{given!r} is not UTF-8 text" if given else "a value given is not UTF-8 text")


class WholeNumber(click.IntRange):
    """A number on the command line as the API takes one, in its paths and its queries: ASCII
    digits, a minus before them (click's int takes what ``int()`` takes, ``1_0``, `` 5`` and other
    scripts' digits too); optionally within ``min`` and ``max``, said as ``click.IntRange`` says it."""

    def __init__(self, min: int | None = None, max: int | None = None) -> None:  # noqa: A002
        super().__init__(min, max)
        if min is None and max is None:
            self.name = "integer"  # (an id: no range to show in the help)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str) or (
                isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value)):
            self.fail(f"{value!r} is not a valid integer.", param, ctx)
        return super().convert(value, param, ctx)

    def _describe_range(self) -> str:
        return super()._describe_range() if self.min is not None or self.max is not None else ""


def not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A filter given empty (a script's unset variable) is refused, not read as no filter."""
    if value is not None and not value.strip():
        raise click.BadParameter("must not be empty")
    return value


def say(message: str) -> None:
    """A long-running command's line about itself (started, a signal, stopped) on standard error:
    with ``AIIMPL_LOG_FORMAT=json`` as a log record of its own (one JSON object), as the lines of
    its log around it are."""
    if logs.from_environ("INFO")[1] != "json":
        click.echo(message, err=True)
        return
    record = logging.LogRecord("aiimpl_core.cli", logging.INFO, __file__, 0, "%s", (message,), None)
    click.echo(logs.json_formatter().format(record), err=True)


def _own_env_file_help(param: click.Parameter) -> click.Parameter:
    """Flask's ``-e/--env-file`` with a help of its own: Flask's speaks of ``.env`` and
    ``.flaskenv`` files, which aiimpl never reads. (A copy: the option is one object that every
    Flask command group shares.)"""
    if param.name != "env_file" or not isinstance(param, click.Option):
        return param
    param = copy.copy(param)
    param.help = ("Load environment variables (KEY=VALUE lines) from this file first; a variable "
                  "already set in the environment keeps its value. Needs python-dotenv.")
    flasks_callback = param.callback

    def load(ctx: click.Context, option: click.Parameter, value: str | None) -> Any:
        try:
            return flasks_callback(ctx, option, value) if flasks_callback else value
        except UnicodeDecodeError:  # (UTF-16, as PowerShell's `>` writes, say)
            raise click.BadParameter(f"{value} is not UTF-8 text", ctx=ctx, param=option) from None

    param.callback = load
    return param


@contextlib.contextmanager
def _start_up_warnings_hidden() -> Iterator[None]:
    """While the help builds the app only to list or find commands: its start-up warnings (a
    made-up secret key, say) are about running, not about the help; errors are still shown."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


class AiimplGroup(FlaskGroup):
    """Turns the project's errors into clean messages and exit codes instead of tracebacks.

    Flask's ``run`` (its development server, which logs query strings and offers werkzeug's
    interactive debugger) and the ``--debug`` option that serves it are left out: ``aiimpl serve``
    runs the app, never in debug mode. So is ``--app``: the app is always the project's own.

    The help, which loads the app for the commands it adds, still lists the core's and the plugins'
    commands when the app cannot be built from a project error (two plugins that collide, a refused
    setting), then ends with that error in one line and exit status 1 (Flask would print the
    traceback and succeed).
    """

    def __init__(self, **extra: Any) -> None:
        super().__init__(add_default_commands=False, set_debug_flag=False, **extra)
        self.params = [_own_env_file_help(param) for param in self.params
                       if param.name not in ("debug", "app")]
        self.add_command(shell_command)
        self.add_command(routes_command)
        #: the message of a project error :func:`main` has printed already (not printed twice)
        self.reported: str | None = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        if _APP_FAILURE not in ctx.meta:
            try:
                with _start_up_warnings_hidden():
                    ctx.ensure_object(ScriptInfo).load_app()
            except AiimplError as exc:
                ctx.meta[_APP_FAILURE] = exc.message
            except Exception:  # noqa: BLE001 - a bug: Flask's list_commands shows its traceback
                pass
        if _APP_FAILURE in ctx.meta:  # the commands that need no app (the app's own are Flask's)
            self._load_plugin_commands()
            return sorted(click.Group.list_commands(self, ctx))
        return super().list_commands(ctx)

    def resolve_command(self, ctx: click.Context, args: list[str]):  # noqa: ANN201
        # a command the app adds (`db`, a plugin's group) builds the app to be found, its help too
        ctx.find_root().meta.setdefault(_COMMAND, args[0] if args else None)
        if "--help" not in args[1:]:
            return super().resolve_command(ctx, args)
        with _start_up_warnings_hidden():
            return super().resolve_command(ctx, args)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGS] = list(args)
        # `--help` (and `aiimpl` alone) print the help while the arguments are parsed
        try:
            return super().parse_args(ctx, args)
        except Exit:
            if _APP_FAILURE in ctx.meta:
                self._fail(ctx.meta[_APP_FAILURE])
            raise
        except NoArgsIsHelpError as usage:
            if _APP_FAILURE in ctx.meta:
                usage.show()
                self._fail(ctx.meta[_APP_FAILURE])
            raise

    def _fail(self, message: str) -> NoReturn:
        """End with ``Error: message`` and exit status 1, the message said once."""
        if message == self.reported:
            raise Exit(1) from None
        raise click.ClickException(message) from None

    def invoke(self, ctx: click.Context):  # noqa: ANN201
        try:
            return self._invoke(ctx)
        except click.ClickException as exc:
            # (a project error may quote a remote answer, a failed request's credentials and all, and
            # the terminal's control characters: shown escaped, as a log line shows them)
            exc.message = "\n".join(logs.one_line(line) for line in masked(exc.message).split("\n"))
            raise
        except KeyboardInterrupt:
            # as before a command starts, and as the demo's: a script tells an interrupt from a failure
            if ctx.meta.get(_MIGRATING):
                # (a migration's schema change is undone with its transaction; an index built
                # outside one, on PostgreSQL, is taken up where it stands)
                click.echo("Aborted: the migration was interrupted; run the command again to finish it.",
                           err=True)
            else:
                click.echo("Aborted.", err=True)
            raise Exit(130) from None
        except click.Abort as exc:
            # click's prompts turn Ctrl-C into Abort (exit 1, as a "no" to a confirmation): 130 too
            if not isinstance(exc.__context__, KeyboardInterrupt):
                raise
            click.echo("\nAborted.", err=True)
            raise Exit(130) from None
        except UnicodeEncodeError as exc:
            # an argument with bytes that are no UTF-8 (Python keeps them as lone surrogates), which
            # no request, path or query can carry
            given = _not_utf8_argument(ctx)
            if given is None or "surrogates" not in str(exc.reason):
                raise
            raise click.UsageError(f"{given!r} is not UTF-8 text") from None

    def _invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return super().invoke(ctx)
        except AiimplError as exc:
            self._fail(exc.message)
        except SQLAlchemyError as exc:  # a database that does not answer, or has no schema yet
            if _interrupted(exc):
                # Ctrl-C inside a statement: the driver's connection is then left unusable, and
                # what failed after it ("Can't reconnect until invalid transaction is rolled back")
                # is the interrupt's doing, not the database's
                raise KeyboardInterrupt from None
            from ..database import failure_message, failure_reason, migration_failure_message

            try:
                app = ctx.ensure_object(ScriptInfo).load_app()
            except Exception:  # noqa: BLE001 - the app itself did not start: say what the database said
                reason = failure_reason(exc)
                raise click.ClickException(f"the database could not be reached: {reason}") from None
            # (the command's app context has ended by now: the schema is read in a new one)
            # a migration that failed is not fixed by running it again
            describe = migration_failure_message if ctx.meta.get(_MIGRATING) else failure_message
            with app.app_context():
                raise click.ClickException(describe(exc)) from None


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while handling a :class:`KeyboardInterrupt` (or by one)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


@click.group(cls=AiimplGroup, create_app=_create_app, add_version_option=False, load_dotenv=False)
@click.version_option(__version__, prog_name="aiimpl")
def cli() -> None:
    """AI-Implement: turns tracker issues into pull requests written by a coding agent."""


def stop_without_this_schema(*, waits: bool = True) -> None:
    """Stop a long-running command on a database without this version's schema, with `aiimpl db
    upgrade` to say (every request or cycle would fail until it runs). A database that does not
    answer yet is only said: the command waits for it, as gunicorn's workers do; one that does not
    wait (``waits`` false) fails with the database's answer."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..database import failure_reason, schema_problem, schema_revision

    try:
        problem = schema_problem(schema_revision())
    except SQLAlchemyError as exc:
        if not waits:
            raise
        click.echo(f"the database does not answer yet: {failure_reason(exc)}", err=True)
        return
    if problem:
        raise click.ClickException(problem)


def _a_host(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """``--host``: an empty one listened on every interface, and the banner said ``http://:8000``."""
    if not value.strip():
        raise click.BadParameter("must not be empty (0.0.0.0 listens on every interface)")
    return value.strip()


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, callback=_a_host,
              help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=WholeNumber(1, 65535),
              help="Port to listen on.")
@with_appcontext
def serve(host: str, port: int) -> None:
    """Run the orchestrator's web server for local use (use gunicorn in production).

    Refuses a database without this version's schema (run `aiimpl db upgrade` first), as the
    production configuration does. With AIIMPL_SCHEDULER set it runs the poller too, the only
    command that does. SIGTERM or Ctrl-C stops it (exit status 0), after the poller's current
    cycle; a second one stops it at once."""
    import signal

    from flask import current_app

    from .devserver import make_dev_server

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    stop_without_this_schema()
    # FLASK_DEBUG reaches the app's config: debug mode is for Flask's own server, never this one
    app.debug = False
    server = make_dev_server(host, port, app)
    click.echo(f"AI-Implement {__version__} on http://{host}:{port}  (database: {_safe_url(app)})")
    if warning := access_code_warning(app.config.get("AIIMPL_ADMIN_ACCESS_CODE")):
        click.echo(f"Warning: {warning}", err=True)
    if warning := public_url_warning(str(app.config.get("AIIMPL_PUBLIC_URL") or ""), port):
        click.echo(f"Warning: {warning}", err=True)
    scheduled = _scheduler_wanted()
    if scheduled:
        from ..services.scheduler import start_scheduler

        # (the CLI's app never starts it itself: started here, once the schema and the address
        # are known to be good)
        start_scheduler(app)

    def on_term(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # a service manager's stop, as Ctrl-C: the server stops serving

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    if scheduled:
        _stop_scheduler_of(app)


def public_url_warning(public_url: str, port: int) -> str | None:
    """``AIIMPL_PUBLIC_URL`` naming this host on another port than ``serve`` listens on (its
    default is port 8000): the sessions this orchestrator starts would call back to nothing."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(public_url)
        theirs = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None  # (refused at start-up already)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or theirs == port:
        return None
    return (f"AIIMPL_PUBLIC_URL is {_hide_password(public_url)}, port {theirs} of this host, but this server "
            f"listens on port {port}: the sessions it starts would call back there (set "
            f"AIIMPL_PUBLIC_URL=http://127.0.0.1:{port})")


def _stop_scheduler_of(app) -> None:  # noqa: ANN001
    """Stop ``serve``'s poller after its current cycle (one cut in the middle can leave a dispatch
    to end ``run_not_found``); a second SIGTERM or Ctrl-C meanwhile ends the process at once."""
    import signal

    from ..services.scheduler import stop_scheduler

    def cut(signum: int, _frame: Any) -> None:
        click.echo(f"signal {signal.Signals(signum).name}: stopping at once, in the middle of the poll "
                   "cycle", err=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the status says the process was stopped by the signal

    previous = {sig: signal.signal(sig, cut) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not stop_scheduler(app, timeout=0.5, warn=False):
            click.echo("stopping: waiting for the current poll cycle to end (SIGTERM or Ctrl-C again "
                       "stops at once)", err=True)
            stop_scheduler(app, timeout=None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _scheduler_wanted() -> bool:
    """Whether ``AIIMPL_SCHEDULER`` asks for the poller in the web process (the CLI's app is built
    without it, so the environment is read again)."""
    from ..config import load

    return bool(load()["AIIMPL_SCHEDULER"])


def _safe_url(app) -> str:  # noqa: ANN001
    return _hide_password(app.config["SQLALCHEMY_DATABASE_URI"])


#: query parameters of a database URL whose values are not shown (a driver takes the password
#: there too, e.g. ``?password=`` or ``?sslpassword=``)
SECRET_QUERY_WORDS = ("password", "passwd", "pwd", "secret", "token")


#: a URL wherever it stands in a value (pip's arguments, a package's git URL): from its scheme to
#: the next space or quote. (A scheme is short: unbounded, every word of a long dotted run was
#: tried against the rest of it, quadratic on the value.)
_URL_IN_TEXT = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{0,31}://[^\s\"'<>`]*")
#: a value that is a URL (from its start)
_URL_AT_START = re.compile(r"(?i)[a-z][a-z0-9+.-]*://")
#: a URL's user-info: all of its authority before the last ``@`` (a password may hold an ``@``)
_USER_INFO = re.compile(r"^([^:/?#]+://)([^/?#]*)@")
#: a query's parameter, its name from the start of the query or after ``&``, ``;`` or ``=`` (from
#: anywhere, each character of a long name without ``=`` was tried against the rest of it)
_QUERY_PARAMETER = re.compile(r"(?<![^&;=])([^&;=]+)=([^&;]*)")


def _credentials_hidden(text: str) -> str:
    """``text`` with the credentials of every URL in it, whole value or not, shown as ``***``: the
    password of ``user:password@``, a user standing alone (a token is put there: ``https://TOKEN@``)
    and the values of query parameters named like a password, secret or token (a tracker's or
    GitHub's API URL can carry one, though it should not)."""

    def user_info(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:***@" if colon else f"{match.group(1)}***@"

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"{name}=***" if any(word in name.lower() for word in SECRET_QUERY_WORDS) else match.group()

    def hidden(url: str) -> str:
        url = _USER_INFO.sub(user_info, url, count=1)
        base, question, rest = url.partition("?")
        query, hash_, fragment = rest.partition("#")
        return base + question + _QUERY_PARAMETER.sub(parameter, query) + hash_ + fragment

    if "://" not in text:
        return text
    if _URL_AT_START.match(text):
        # the value is a URL: its user-info runs to its last "@" whatever the password holds (a
        # space or a quote, which end a URL found inside longer text)
        return hidden(text)
    return _URL_IN_TEXT.sub(lambda match: hidden(match.group()), text)


def _hide_password(url: str) -> str:
    """``url`` without its secrets: the password of ``user:password@`` and the values of query
    parameters named like a password, secret or token show as ``***``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # (ValueError: a port that is no number)
        return "(unparsable URL)"
    hidden = {name: ("***",) * len(value) if isinstance(value, tuple) else "***"
              for name, value in parsed.query.items()
              if any(word in name.lower() for word in SECRET_QUERY_WORDS)}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    return shown.replace("=%2A%2A%2A", "=***")  # as the password of user:password@ shows


@cli.group("plugins")
def plugins_group() -> None:
    """Installed plugins."""


@plugins_group.command("list", with_appcontext=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a plugin failed to load too (the server starts without it), or "
                   "AIIMPL_DISABLED_PLUGINS names a plugin that is not installed.")
def plugins_list(as_json: bool, strict: bool) -> None:
    """List plugins: name, distribution, version, status, what each provides, load errors and
    warnings. Exits 1 when two plugins collide (the server would refuse to start), and with
    --strict when a plugin failed to load."""
    from ..app import probe_registrations
    from ..config import load, secret_strings, sensitive_names
    from ..plugins import Plugins

    settings = load()
    facade = Plugins(disabled=settings["AIIMPL_DISABLED_PLUGINS"] or (), strict=False)
    facade.log_refusals = False  # the listing says them
    probe_registrations(facade)  # a plugin the server would refuse at start is shown failed
    # a plugin's error may quote a setting (its exception's message): the sensitive ones are
    # masked, as in the server's log, though no app is made here
    logs.mask(*(value for name in sensitive_names(facade.config_vars())
                for value in secret_strings(name, settings.get(name, os.environ.get(name)))))
    rows = facade.listing()
    if as_json:
        echo_json(rows)
    else:
        click.echo(masked(plugins_table(rows)))
    unknown = facade.unknown_disabled_said()
    if unknown and not strict:
        click.echo(f"Warning: {unknown}", err=True)
    if facade.conflicts:
        raise click.ClickException("; ".join(facade.conflicts) + " (the server will not start)")
    failed = sorted(row["name"] for row in rows if row.get("status") == "failed")
    if strict and failed:
        raise click.ClickException(f"plugins that failed to load: {', '.join(failed)}")
    if strict and unknown:
        raise click.ClickException(unknown)


def plugins_table(rows: list[dict[str, Any]]) -> str:
    """``aiimpl plugins list`` as text: one row per plugin, columns as wide as their longest value,
    a plugin's error and warnings on indented lines under it."""
    table = [("NAME", "DISTRIBUTION", "VERSION", "STATUS", "PROVIDES")]
    for row in rows:
        provides = ", ".join(f"{p['kind']}:{p['id']}" for p in row["provides"]) or "-"
        dist, version = row["distribution"] or "?", row["version"] or "?"
        table.append((row["name"], dist, version, row["status"], provides))
    out = []
    for n, text in enumerate(aligned(table)):
        out.append(text)
        row = rows[n - 1] if n else None
        if row and row["error"]:
            out.append(f"    error: {row['error']}")
        for warning in row["warnings"] if row else ():
            out.append(f"    warning: {warning}")
    return "\n".join(text.rstrip() for text in out)


@cli.command("config", with_appcontext=False)
@click.option("--markdown", is_flag=True, help="Print the configuration table as Markdown.")
def config_cmd(markdown: bool) -> None:
    """Show the configuration variables (values of sensitive ones are never shown, nor a
    password or token within a URL)."""
    from ..config import SETTINGS, _list, markdown_table, secret_strings, sensitive_names
    from ..plugins import Plugins

    # the plugins as the other commands load them (disabled ones left out, a collision listed, not
    # raised: main() has said it); read leniently, as this command shows a configuration that may
    # not be valid
    disabled = _list(os.environ.get("AIIMPL_DISABLED_PLUGINS") or "")
    facade = Plugins(disabled=disabled, strict=False)
    extra = facade.config_vars()
    if markdown:
        click.echo(markdown_table(extra))
        return
    # each name once, sensitive when any declaration says so (two providers of one plugin may
    # share a variable; one that declared a core setting's name again is refused at its loading)
    sensitive = sensitive_names(extra)
    names: dict[str, tuple[bool, Any]] = {}
    for name, default in [(s.name, s.default) for s in SETTINGS] + [(v.name, v.default) for _, v in extra]:
        names.setdefault(name, (name in sensitive, default))
    # what is shown of the values set, masked as a log line is (the sensitive values, should another
    # setting quote one) and with a GitHub token's shape masked: such a token is put in a package's
    # git URL, and the value of no setting that is shown is meant to hold one
    from ..services.redaction import github_tokens_masked

    logs.mask(*(value for name in sensitive for value in secret_strings(name, os.environ.get(name))))
    for name, (secret, default) in names.items():
        value = os.environ.get(name)
        if value and not secret:
            value = _hide_password(value) if name == "AIIMPL_DATABASE_URL" else _credentials_hidden(value)
            value = github_tokens_masked(masked(value))
        if value:
            shown = "(set)" if secret else value
        else:
            # unset: what applies instead (a default that is a list or a flag is said as such)
            # (0 is a default as any number is: 0 == False in Python)
            unsaid = default is None or default is False or default in ("", [])
            shown = "-" if unsaid else f"- (default {default})"
        click.echo(f"{name:<40} {shown}")
    # the whole table is shown, then the exit status says whether the configuration is valid (for
    # a deployment's check): main() has said a setting that is not; a database URL the app cannot
    # use is said here (the settings' own check does not read it)
    from ..app import check_database_url

    invalid = getattr(cli, "reported", None)
    url = os.environ.get("AIIMPL_DATABASE_URL")
    if url and not invalid:
        try:
            check_database_url(url)
        except AiimplError as exc:
            raise click.ClickException(exc.message) from None
    if invalid:
        sys.exit(1)
    # the plugins' own settings, as each reads them (the server starts on one that is not valid, and
    # every call of that plugin fails with its message)
    problems = _plugin_settings_problems(facade, {name: os.environ.get(name) for name in names})
    if problems:
        for problem in problems:
            click.echo(masked(f"Error: {problem}"), err=True)
        sys.exit(1)


def _plugin_settings_problems(facade: Any, config: dict[str, str | None]) -> list[str]:
    """What each installed provider finds wrong with its own settings (``settings_problem``); a
    provider whose check raises is said by its class, not let through."""
    from ..errors import describe_plugin_error
    from ..plugins import KINDS

    problems = []
    for kind in KINDS:
        for provider_id, cls in sorted(facade.classes[kind].items()):
            try:
                problem = cls.settings_problem(config)
            except Exception as exc:  # noqa: BLE001 - a plugin's bug, said as such
                problem = f"{provider_id}: checking its settings failed: {describe_plugin_error(exc)}"
            if problem:
                problems.append(str(problem))
    return problems


def _add_subcommands() -> None:
    from . import commands  # noqa: F401 - registers the core's other command groups


#: Flask-Migrate's commands that write or compare migration scripts: the project's own, run in a
#: checkout of its source; an operator's would write into the installed package. Still there,
#: not listed.
AUTHORING_COMMANDS = ("init", "list-templates", "revision", "migrate", "edit", "merge", "check")


def _operator_db_commands() -> None:
    """``aiimpl db`` as an operator needs it: the authoring commands hidden, and the script
    directory's default said as it is (the migrations installed with the core)."""
    from flask_migrate.cli import db as db_group

    for name in AUTHORING_COMMANDS:
        command = db_group.commands.get(name)
        if command is not None:
            command.hidden = True
    # (each command has the option too, whose help said "migrations", a folder of the working one)
    for param in [*db_group.params, *(p for c in db_group.commands.values() for p in c.params)]:
        if param.name == "directory" and isinstance(param, click.Option):
            param.help = "Migration script directory (default: the migrations installed with aiimpl-core)"
    current = db_group.commands.get("current")
    if current is not None and current.callback is not None:
        current.callback = _said_when_empty(current.callback)
    for name in ("upgrade", "downgrade"):
        command = db_group.commands.get(name)
        if command is not None and command.callback is not None:
            command.callback = _marked_migrating(_online_only(command.callback))
            for param in command.params:
                if param.name == "sql" and isinstance(param, click.Option):
                    param.hidden = True  # refused: see _online_only
    downgrade = db_group.commands.get("downgrade")
    if downgrade is not None and downgrade.callback is not None:
        downgrade.params.append(click.Option(
            ["--yes"], is_flag=True,
            help="Downgrade to base (every table and its data removed) without asking."))
        downgrade.callback = _confirmed_to_base(downgrade.callback)
    stamp = db_group.commands.get("stamp")
    if stamp is not None and stamp.callback is not None:
        stamp.callback = _marked_migrating(stamp.callback)  # (writes the revision: under the lock too)
    for name in ("upgrade", "downgrade", "stamp", "show", "history"):
        command = db_group.commands.get(name)
        if command is not None and command.callback is not None:
            command.callback = _unresolved_revision_said(command.callback)
    from ..extensions import migrate

    if _whether_it_migrates not in migrate.configure_callbacks:
        migrate.configure(_whether_it_migrates)


#: set in the command line's context meta once a migration (``upgrade``, ``downgrade``, ``stamp``)
#: has started: an interrupt is then said as the migration's, a database error as its failure, and
#: the run takes the migration lock
_MIGRATING = "aiimpl.migrating"


def _whether_it_migrates(config: Any) -> Any:
    """Flask-Migrate's configure callback: tells env.py (:data:`~aiimpl_core.database.MIGRATING`)
    whether an ``aiimpl db`` command changes the schema. ``db current`` and the others that only
    read took the migration lock too: on SQLite they waited out a long upgrade's write lock and then
    said "the migration failed …: database is locked", on PostgreSQL they queued behind it. A run
    that no ``aiimpl db`` command started (``flask_migrate.upgrade()`` from the demo, a test) is
    told nothing, and env.py takes it as migrating."""
    from ..database import MIGRATING

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.parent is not None and ctx.parent.info_name == "db":
        config.attributes[MIGRATING] = bool(ctx.meta.get(_MIGRATING))
    return config


def _marked_migrating(migrate: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(migrate)
    def run(*args: Any, **kwargs: Any) -> Any:
        click.get_current_context().meta[_MIGRATING] = True
        return migrate(*args, **kwargs)

    return run


#: where Alembic reads a revision the command line gave (the revision map, and its commands before
#: they run a migration): an error raised there is the revision's, not a migration's
_ALEMBIC_RESOLVING = (os.path.join("alembic", "script", "revision.py"), os.path.join("alembic", "command.py"))
#: what Alembic says of a history range it cannot read (``db history -r``)
HISTORY_RANGE_FORM = "History range requires [start]:[end], [start]:, or :[end]"


def _unresolved_revision_said(command: Callable[..., Any]) -> Callable[..., Any]:
    """A revision Alembic cannot resolve is said as Alembic says an unknown one (``Error: Can't
    locate revision identified by '…'``, exit status 1). Some it does not say but fails on with an
    ``assert``, an ``AttributeError`` or a ``ValueError`` of its own, which was a traceback: an
    empty revision or one whose branch label names none (``''``, ``'@'``, ``'0001@'``), a relative
    step past the ends (``head+1``, ``0005+99``; ``db show -99``), a history range of more than two
    ends (``a:b:c``). Those raised elsewhere (a migration's) are not taken for it."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (AssertionError, AttributeError, ValueError) as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            if not frames or not frames[-1].filename.endswith(_ALEMBIC_RESOLVING):
                raise
            if "rev_range" in kwargs and isinstance(exc, ValueError):
                raise click.ClickException(HISTORY_RANGE_FORM) from None
            revision = kwargs.get("rev_range") if "rev_range" in kwargs else kwargs.get("revision")
            raise click.ClickException(f"Can't locate revision identified by {revision!r}") from None

    return run


def _confirmed_to_base(downgrade: Callable[..., Any]) -> Callable[..., Any]:
    """``aiimpl db downgrade base`` removes every table and all its data, jobs, secrets and
    mappings included: it goes ahead once confirmed on the terminal, or with ``--yes`` (a script
    has no terminal to confirm on). Any other downgrade removes only what its revisions added."""

    @functools.wraps(downgrade)
    def run(*args: Any, yes: bool = False, **kwargs: Any) -> Any:
        if not yes and _reaches_base(str(kwargs.get("revision") or ""), kwargs.get("directory")):
            from .manage import _on_a_terminal

            if not _on_a_terminal():
                raise click.UsageError("not downgraded: base removes every table and all its data; give "
                                       "--yes to downgrade without a terminal to confirm on")
            click.confirm("Downgrade to base? Every table of AI-Implement and all its data (jobs, "
                          "mappings, secrets) will be removed", abort=True)
        return downgrade(*args, **kwargs)

    return run


#: a relative downgrade target: ``-N`` steps below the database's revision, or ``REV-N`` below REV
_RELATIVE = re.compile(r"(?P<start>[^+-]+)?-(?P<steps>[0-9]+)")


def _reaches_base(revision: str, directory: str | None) -> bool:
    """Whether a downgrade to ``revision`` ends at base: ``base``, or as many steps down (``-N``,
    ``REV-N``) as there are revisions up to where it starts. (A start that cannot be read, a
    database not reached: ``False``, and alembic says what is wrong.)"""
    revision = revision.strip()
    if revision.lower() == "base":
        return True
    relative = _RELATIVE.fullmatch(revision)
    if relative is None:
        return False
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from ..extensions import db, migrate

    try:
        start = relative["start"]
        if start is None:
            with db.engine.connect() as connection:
                start = MigrationContext.configure(connection).get_current_revision()
        if start is None:
            return False  # no schema: nothing to remove
        script = ScriptDirectory.from_config(migrate.get_config(directory))
        depth = sum(1 for _ in script.iterate_revisions(start, "base"))
    except (SQLAlchemyError, CommandError, RevisionError):
        return False
    return int(relative["steps"]) >= depth


#: why ``aiimpl db upgrade --sql`` (and ``downgrade --sql``) are refused
OFFLINE_REFUSED = (
    "--sql (a script to run later) is not supported: the migrations read the database as they go; "
    "run `aiimpl db upgrade` against the database, as a user that may change its schema"
)


def _online_only(migrate: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse Alembic's offline mode (``--sql``) before anything is written: some migrations read
    the database to decide what to write (0006 the highest outbox id, 0007 SQLite's sequence,
    the index migrations whether an interrupted build left an index invalid), which a script
    written without a database cannot, and SQLite's table changes are copies made from the table
    as the database has it. The script stopped with a traceback halfway through."""

    @functools.wraps(migrate)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("sql"):
            raise click.ClickException(OFFLINE_REFUSED)
        return migrate(*args, **kwargs)

    return run


def _said_when_empty(show_current: Callable[..., Any]) -> Callable[..., Any]:
    """``aiimpl db current`` on a database without a schema: Alembic prints nothing, which cannot
    be told from a command that never ran. Its output (stdout) stays empty for a script; stderr
    says why."""
    from ..database import schema_problem, schema_revision

    @functools.wraps(show_current)
    @with_appcontext
    def current(*args: Any, **kwargs: Any) -> Any:
        shown = show_current(*args, **kwargs)
        if schema_revision() is None:
            click.echo(f"no revision: {schema_problem(None)}", err=True)
        return shown

    return current


_operator_db_commands()


def main() -> None:
    try:
        try:
            _main()
        except SystemExit:
            # what was written past click.echo (Alembic's `db current`) fails here, not in the
            # interpreter's exit as an ignored exception and status 120
            with _output_errors_said():
                if sys.stdout is not None:
                    sys.stdout.flush()
            raise
    except KeyboardInterrupt:  # Ctrl-C before a command started: nothing to stop yet
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except OSError as exc:
        # output that cannot be written (a full disk under `> out.json`): one line, not a traceback
        # (click itself ends quietly on a closed pipe, `| head`)
        if not _in_echo(exc):
            raise
        with _output_errors_said():
            raise


@contextlib.contextmanager
def _output_errors_said() -> Iterator[None]:
    """An OSError writing the output ends the command with one line and exit status 1."""
    try:
        yield
    except OSError as exc:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # (the exit's flush would fail)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if exc.errno != errno.EPIPE:  # a reader that stopped (`| head`) ends it quietly, as click does
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.write(f"Error: the output could not be written: {exc.strerror or exc}\n")
        sys.exit(1)


def _in_echo(exc: BaseException) -> bool:
    """Whether ``exc`` was raised writing a command's output (by ``click.echo``)."""
    import click.utils

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code if tb is not None else None
    return code is not None and code.co_name == "echo" and code.co_filename == click.utils.__file__


def _group_args(argv: list[str]) -> tuple[str | None, str | None]:
    """The ``-e/--env-file`` given before the command's name, and that name (or the first option
    after the group's, ``--help``, ``--version``), each ``None`` when not given."""
    env_file = None
    args = iter(argv)
    for arg in args:
        if arg in ("-e", "--env-file"):
            env_file = next(args, None)
        elif arg.startswith("--env-file="):
            env_file = arg.split("=", 1)[1]
        elif arg.startswith("-e") and len(arg) > 2:
            env_file = arg[2:]
        else:
            return env_file, arg  # the command (its own options are not the group's)
    return env_file, None


def _load_env_file_first(argv: list[str]) -> None:
    """Load ``-e/--env-file`` before the settings are checked and the plugins' commands added
    (the option itself loads it only once click parses it): a value from the file is then checked
    as the same value in the environment is, and its AIIMPL_DISABLED_PLUGINS leaves out the same
    commands. A file that cannot be read is left to the option, which says why."""
    path = _group_args(argv)[0]
    if not path:
        return
    try:
        import dotenv
    except ImportError:
        return
    try:
        dotenv.load_dotenv(path, override=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return


def _migration_errors_said_plainly() -> None:
    """Flask-Migrate says a failed ``aiimpl db`` command as a log record (``… ERROR flask_migrate:
    Error: Can't locate revision …``): in text it is written as every other command's error is,
    ``Error: …`` alone (under ``AIIMPL_LOG_FORMAT=json`` it stays a JSON record, as the lines
    around it are)."""
    if logs.from_environ("WARNING")[1] == "json":
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    migrate_log = logging.getLogger("flask_migrate")
    migrate_log.addHandler(logs.guard(handler))
    migrate_log.propagate = False


def _main() -> None:
    _load_env_file_first(sys.argv[1:])
    command = _group_args(sys.argv[1:])[1]
    if command != "session":
        # the session program sets up its own logging, in text always (a runner's log shows it)
        logs.configure(*logs.from_environ("WARNING"))
        _migration_errors_said_plainly()
    _add_subcommands()
    # the session program reads none of the orchestrator's settings (nor needs a plugin's commands):
    # a runner's environment is not the operator's, and a value there must not stop a session; the
    # demo builds its own settings, whatever the shell holds
    if command not in ("session", "demo"):
        try:
            from ..config import load
            from ..errors import DuplicateProviderError
            from ..plugins import Plugins

            # Nothing is logged here: the app factory logs each plugin's failure once when the
            # command needs the app, and `aiimpl plugins list` prints them (with a collision too).
            facade = Plugins(disabled=load()["AIIMPL_DISABLED_PLUGINS"] or (), strict=False)
            facade.log_refusals = False
            facade.add_commands(cli)
            if facade.conflicts and command != "plugins":
                raise DuplicateProviderError("; ".join(facade.conflicts))
        except AiimplError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            cli.reported = exc.message
            if command is not None and command not in ("plugins", "--help", "--version", "config"):
                sys.exit(1)
    cli(prog_name="aiimpl")
