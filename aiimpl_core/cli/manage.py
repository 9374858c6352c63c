"""Management commands mirroring the admin UI's actions, for scripting.

Each command goes through the same HTTP API the UI uses (in-process, with an admin session minted
for the call), so validation, messages and side effects are exactly the API's. Errors print the
API's message and exit with status 1; ``--json`` prints the API's answer.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
from typing import IO, Any
from urllib.parse import quote, urlencode

import click
from flask import current_app
from flask.cli import with_appcontext

from .. import logs
from ..config import not_utf8
from ..schemas.admin import LIST_MAX, OUTBOX_STATES
from . import WholeNumber, aligned, cli, echo_json, masked, not_empty, not_utf8_error


def _on_a_terminal() -> bool:
    """Whether standard input is a terminal (not a pipe, a file, nothing, or closed)."""
    return sys.stdin is not None and sys.stdin.isatty()


class _InputFile(click.File):
    """click's file to read, ``-`` for standard input, which may be closed (``<&-``)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "-" and sys.stdin is None:
            self.fail("standard input is closed", param, ctx)
        return super().convert(value, param, ctx)


class ApiCall:
    """One in-process request to the admin API."""

    def __init__(self) -> None:
        from ..auth import admin
        from ..database import schema_problem, schema_revision

        # The API answers a database error with a bare 500 (and logs its traceback): the schema is
        # checked first, so that a command says what to do instead. A database that does not answer
        # raises here, and the group's handler says so in one line.
        problem = schema_problem(schema_revision())
        if problem:
            raise click.ClickException(problem)
        self.client = current_app.test_client()
        self.headers = {"Authorization": f"Bearer {admin.issue_session()}"}

    def __call__(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = ()) -> Any:
        if body is not None:
            # bytes that are no UTF-8 in a value (Python keeps them as lone surrogates) are escaped
            # by JSON and the API refuses the whole body, "Invalid request body": said of the value
            try:
                json.dumps(body, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise not_utf8_error() from None
        resp = self.client.open(path, method=method, json=body, headers=self.headers)
        data = resp.get_json(silent=True)
        if resp.status_code >= 400 and resp.status_code not in ok:
            message = data.get("error") if isinstance(data, dict) and data.get("error") else None
            if message == NO_SESSION_BACKEND:  # the reference's words, which name Fly alone
                message += f" ({NO_SESSION_BACKEND_HINT})"
            raise click.ClickException(message or f"HTTP {resp.status_code}")
        return data


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> None:
    """``rows`` as a text table: each cell one line, with no terminal control in it (a tracker's or
    a backend's text, an outbox item's error, a session's state), and masked."""
    if not rows:
        click.echo("(none)")
        return
    header = tuple(title for _, title in columns)
    lines = [tuple(logs.one_line(masked(str(r.get(key) if r.get(key) is not None else "")))
                   for key, _ in columns) for r in rows]
    click.echo("\n".join(aligned([header, *lines])))


def _as_list(body: Any, *keys: str) -> list[dict[str, Any]]:
    if isinstance(body, list):
        return body
    for key in keys:
        if isinstance(body, dict) and isinstance(body.get(key), list):
            return body[key]
    return []


json_option = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")

#: the API's answers for a team, secret or session it does not know
TEAM_NOT_FOUND = "Team not found"
SECRET_NOT_FOUND = "Secret not found"
SESSION_NOT_FOUND = "Session not found"
#: the API's 503 for secrets and sessions while no runner backend keeps them, and what it means
NO_SESSION_BACKEND = "Fly sessions config not set"
NO_SESSION_BACKEND_HINT = ("no configured runner backend keeps secrets and sessions, as Fly Machines "
                           "and local Docker do")


def _segment(value: str, not_found: str) -> str:
    """``value`` as one segment of an API path. An empty value, or one with a ``/`` (which the router
    takes as a separator even quoted), would reach another route or none: it names nothing, and
    ``not_found`` says so as the API does."""
    if not value or "/" in value:
        raise click.ClickException(not_found)
    return quote(value, safe="")


def _json_constant(name: str) -> Any:
    """Refuses ``NaN`` and ``Infinity``, which Python's parser takes but JSON (and so the API) does not."""
    raise ValueError(f"{name} is not a JSON value")


# -- what the API would refuse as "Invalid request body", said with what is wrong ---------------------

def _request_limit() -> int:
    """The API's request size limit (bytes)."""
    return int(current_app.config["MAX_CONTENT_LENGTH"])


def _bytes(size: int) -> str:
    mib = 1024 * 1024
    return f"{size:,} bytes" + (f" ({size // mib} MiB)" if size and size % mib == 0 else "")


def _read_within_limit(source: IO[str], name: str) -> str:
    """The text of ``--from-json``'s file, refused when it is larger than a request may be: a regular
    file by its size, before it is read; standard input or a pipe once more than that has come."""
    limit = _request_limit()
    try:
        info = os.fstat(source.fileno())
        size = info.st_size if stat.S_ISREG(info.st_mode) else None
    except (AttributeError, OSError, ValueError):  # (no file descriptor: a stream of text)
        size = None
    if size is not None and size > limit:
        raise click.ClickException(f"--from-json: {name} is {_bytes(size)}, over the API's request size "
                                   f"limit of {_bytes(limit)}")
    text = source.read(limit + 1)  # (characters: each is a byte at least)
    if size is None and len(text.encode("utf-8", "surrogatepass")) > limit:
        raise click.ClickException(f"--from-json: {name} holds more than {_bytes(limit)}, the API's "
                                   f"request size limit")
    return text


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _field_name(path: tuple[str | int, ...]) -> str:
    """A field's place in a JSON value (``ticketing.settings.teamId``, ``labels[2]``); a name that
    is not plain is quoted as JSON (``extraEnv["A\\u0000"]``), so no character in it is printed raw."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_NAME.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _unstorable(value: Any, path: tuple[str | int, ...] = ()) -> str | None:
    """What in ``value`` the API would refuse as ``Invalid request body`` though it is valid JSON, naming
    the field: a NUL character (PostgreSQL refuses it in text), a lone surrogate (no UTF-8 can encode
    it), or nesting deeper than the API reads. None when there is nothing."""
    from ..schemas.common import MAX_DEPTH

    stack: list[tuple[Any, tuple[str | int, ...], bool]] = [(value, path, False)]
    while stack:
        item, where, is_name = stack.pop()
        if isinstance(item, str):
            what = "the name of the field" if is_name else "the field"
            if "\x00" in item:
                return (f"{what} {_field_name(where)} holds a NUL character (\\u0000), which the database "
                        f"cannot store")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return (f"{what} {_field_name(where)} holds a lone surrogate (\\ud800-\\udfff), "
                        f"which is not a Unicode character")
        elif isinstance(item, dict | list):
            if len(where) >= MAX_DEPTH:  # (as deep as it would be in the request)
                return f"the field {_field_name(where)} nests deeper than the API reads ({MAX_DEPTH} levels)"
            children = list(item.items()) if isinstance(item, dict) else list(enumerate(item))
            for key, child in reversed(children):  # (the first one in the file is said)
                stack.append((child, (*where, key), False))
                if isinstance(key, str):
                    stack.append((key, (*where, key), True))
    return None


# -- mappings ---------------------------------------------------------------------------------------

@cli.group("mappings")
def mappings() -> None:
    """Project mappings (tracker team -> repository)."""


MAPPING_COLUMNS = [("teamKey", "TEAM"), ("owner", "OWNER"), ("repo", "REPO"), ("defaultBranch", "BRANCH"),
                   ("executionMode", "RUNNER"), ("provider", "MODEL"), ("maxInProgressAiIssues", "CAP"),
                   ("paused", "PAUSED")]


@mappings.command("list")
@json_option
@with_appcontext
def mappings_list(as_json: bool) -> None:
    """List mappings."""
    body = ApiCall()("GET", "/api/mappings")
    if as_json:
        echo_json(body)
    else:
        _table(_as_list(body, "mappings", "items"), MAPPING_COLUMNS)


@mappings.command("show")
@click.argument("team_key")
@json_option
@with_appcontext
def mappings_show(team_key: str, as_json: bool) -> None:
    """Show one mapping."""
    body = ApiCall()("GET", f"/api/mappings/{_segment(team_key, TEAM_NOT_FOUND)}")
    if as_json:
        echo_json(body)
    else:
        mapping = body.get("mapping", body) if isinstance(body, dict) else body
        for key, value in mapping.items():
            # as the API writes each value (null, false, {}), not as Python does (None, False); text as it is
            # (one line each, no terminal control: any API client may have written the text)
            click.echo(f"{key:<24} {logs.one_line(value) if isinstance(value, str) else json.dumps(value)}")


#: ``--cap none``: what the API takes as "no cap" (``null``)
NO_CAP = "none"


class CapType(click.ParamType):
    """A concurrency cap: a positive integer (the API checks it), or ``none`` for no cap."""

    name = "integer|none"

    def __init__(self, *, options_as_arguments: bool = False) -> None:
        #: the command takes unknown options as arguments (for a negative cap): one that is no
        #: number (--jsn, a typo) is said as the unknown option it is
        self.options_as_arguments = options_as_arguments

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value.strip().lower() == NO_CAP:
            return NO_CAP
        if self.options_as_arguments and ctx is not None:
            _not_an_option(ctx, param, value)
        return WholeNumber().convert(value, param, ctx)


def _mapping_options(func):  # noqa: ANN001, ANN202
    options = [
        click.option("--owner", help="GitHub owner (user or organisation); required by create."),
        click.option("--repo", help="GitHub repository name; required by create."),
        click.option("--default-branch", "defaultBranch",
                     help="Base branch for the work; required by create."),
        click.option("--provider", help="Model provider id (anthropic, bedrock, …)."),
        click.option("--aws-region", "awsRegion", help="AWS region (provider bedrock)."),
        click.option("--execution-mode", "executionMode",
                     help="Runner backend id (github-actions, fly-machines, …); local Docker is not "
                          "named here: the runner mode local selects it."),
        click.option("--machine-cpus", "machineCpus", type=WholeNumber(), help="CPUs of a session machine."),
        click.option("--machine-memory-mb", "machineMemoryMb", type=WholeNumber(),
                     help="Memory of a session machine (MB)."),
        click.option("--session-mode", "sessionMode", help="autonomous, interactive or hybrid."),
        click.option("--branch-prefix", "branchPrefix", help="Prefix of the work branch (default ai/)."),
        click.option("--cap", "maxInProgressAiIssues", type=CapType(),
                     help="Max issues in progress at once (none: no cap)."),
        click.option("--planning/--no-planning", "planningEnabled", default=None,
                     help="Plan before implementing."),
        click.option("--planning-workflow-file", "planningWorkflowFile",
                     help="Workflow file of planning runs."),
        click.option("--env", "extraEnv", multiple=True, metavar="KEY=VALUE",
                     help="Extra session environment, one --env per variable. On update it replaces "
                          "the mapping's whole set: give every variable to keep. Not for secrets: shown "
                          "in plain text, and a GitHub Actions workflow input (use `aiimpl secrets`)."),
        click.option("--ticketing", help='Ticketing settings as JSON, e.g. {"provider": "linear"}.'),
        click.option("--from-json", "from_json", type=_InputFile("r"),
                     help="Read the mapping from a JSON file (- for stdin)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


#: fields of a stored mapping (``mappings show --json``) that a saved one sets itself
READ_ONLY_FIELDS = ("createdAt", "updatedAt")


def _mapping_body(team_key: str, values: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    source = values.pop("from_json", None)
    if source is not None:
        name = "standard input" if source.name == "<stdin>" else source.name
        try:
            loaded = json.loads(_read_within_limit(source, name), parse_constant=_json_constant)
        except ValueError as exc:
            raise click.ClickException(f"--from-json: not valid JSON ({exc})") from None
        if not isinstance(loaded, dict):
            raise click.ClickException(f"--from-json: {name} must hold a JSON object (the mapping's fields)")
        if problem := _unstorable(loaded):
            raise click.ClickException(f"--from-json: {name}: {problem}")
        # the API ignores a field it does not read: a misspelt one would be saved as "updated"
        # while the mapping kept its value (the times a stored mapping shows are taken, and ignored)
        from ..services.mappings import FIELDS

        unknown = sorted(key for key in loaded if key not in FIELDS and key not in READ_ONLY_FIELDS)
        if unknown:
            raise click.ClickException(
                f"--from-json: {name} has fields a mapping does not have: {', '.join(unknown)} "
                f"(a mapping's fields: {', '.join(FIELDS)})")
        body.update(loaded)
    env = values.pop("extraEnv", ())
    if env:
        pairs = {}
        for item in env:
            key, sep, value = item.partition("=")
            if not sep:
                raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
            if key in pairs:
                raise click.BadParameter(f"{key} is given twice", param_hint="--env")
            pairs[key] = value
        body["extraEnv"] = pairs
    ticketing = values.pop("ticketing", None)
    if ticketing is not None:
        try:
            body["ticketing"] = json.loads(ticketing, parse_constant=_json_constant)
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON ({exc})", param_hint="--ticketing") from None
        if problem := _unstorable(body["ticketing"], ("ticketing",)):
            raise click.BadParameter(problem, param_hint="--ticketing")
    body.update({k: v for k, v in values.items() if v is not None})
    if body.get("maxInProgressAiIssues") == NO_CAP:
        body["maxInProgressAiIssues"] = None
    body["teamKey"] = team_key
    # as the request will carry it: a file within the limit can still grow past it (each character
    # beyond ASCII is sent as an escape of 6 or 12 bytes)
    sent = len(current_app.json.dumps(body).encode("utf-8"))
    if sent > _request_limit():
        raise click.ClickException(f"the mapping is {_bytes(sent)} as JSON, over the API's request size "
                                   f"limit of {_bytes(_request_limit())}")
    return body


@mappings.command("create")
@click.argument("team_key")
@_mapping_options
@json_option
@with_appcontext
def mappings_create(team_key: str, as_json: bool, **values: Any) -> None:
    """Create a mapping for TEAM_KEY (or update it when it exists)."""
    sent = _mapping_body(team_key, values)
    body = _saved(ApiCall(), sent)
    echo_json(body) if as_json else click.echo(f"Mapping {team_key} saved.")
    _warn_uninstalled_backend(body)
    _warn_secret_names(sent)


@mappings.command("update")
@click.argument("team_key")
@_mapping_options
@json_option
@with_appcontext
def mappings_update(team_key: str, as_json: bool, **values: Any) -> None:
    """Change the given fields of TEAM_KEY's mapping; the others keep their values."""
    call = ApiCall()
    # 404 "Team not found" when it does not exist
    call("GET", f"/api/mappings/{_segment(team_key, TEAM_NOT_FOUND)}")
    sent = _mapping_body(team_key, values)
    body = _saved(call, sent)
    echo_json(body) if as_json else click.echo(f"Mapping {team_key} updated.")
    _warn_uninstalled_backend(body)
    _warn_secret_names(sent)


def _saved(call: Any, sent: dict[str, Any]) -> Any:
    """``POST /api/mappings``; an ``executionMode`` naming an installed backend that a runner mode
    selects instead (local Docker: ``local``) is refused with the API's message and how to use it."""
    try:
        return call("POST", "/api/mappings", sent)
    except click.ClickException as exc:
        mode = sent.get("executionMode")
        runners = current_app.extensions["aiimpl"].classes["runner"]
        runner = runners.get(mode) if isinstance(mode, str) else None
        selected_by = getattr(runner, "runner_mode", None)
        if (selected_by and not getattr(runner, "mapping_selectable", True)
                and exc.message.startswith("executionMode must be")):
            exc.message += (f" ({mode} is not named by a mapping: it runs every mapping's sessions while "
                            f"the runner mode is {selected_by}: aiimpl runner-mode set {selected_by})")
        raise


#: a variable's name that says it holds a secret (a word of it, ``_``-separated)
_SECRET_NAME = re.compile(r"(?i)(?:^|_)(?:KEY|APIKEY|TOKEN|SECRET|PASSWORD|PASSWD|PWD|CREDENTIALS?)(?:_|$)")


def _warn_secret_names(sent: Any) -> None:
    """``extraEnv`` variables given now whose names say they hold a secret (``DB_PASSWORD``):
    said, as extraEnv is no secret (a value that is one of the orchestrator's secrets is refused)."""
    env = sent.get("extraEnv") if isinstance(sent, dict) else None
    if not isinstance(env, dict):
        return
    names = sorted(n for n in env if isinstance(n, str) and _SECRET_NAME.search(n))
    if names:
        from ..services.mappings import EXTRA_ENV_NOT_SECRET

        click.echo(f"Warning: extraEnv {', '.join(names)} {'looks' if len(names) == 1 else 'look'} like "
                   f"{'a secret' if len(names) == 1 else 'secrets'}: {EXTRA_ENV_NOT_SECRET}.", err=True)


def _warn_uninstalled_backend(body: Any) -> None:
    """A mapping saved with the reference's default ``executionMode`` (``github-actions``) while no
    runner backend a mapping can name is installed: said, as its issues will wait."""
    from ..services.blockers import BACKEND_UNAVAILABLE, no_backend

    mode = body.get("executionMode") if isinstance(body, dict) else None
    if mode and mode not in current_app.extensions["aiimpl"].ids("runner"):
        click.echo(f"Warning: {no_backend('default', mode).message} Until then its issues wait, blocked "
                   f"({BACKEND_UNAVAILABLE}).", err=True)


def _patch(team_key: str, body: dict[str, Any], as_json: bool, done: str) -> None:
    result = ApiCall()("PATCH", f"/api/mappings/{_segment(team_key, TEAM_NOT_FOUND)}", body)
    echo_json(result) if as_json else click.echo(done)


@mappings.command("pause")
@click.argument("team_key")
@json_option
@with_appcontext
def mappings_pause(team_key: str, as_json: bool) -> None:
    """Pause a mapping: its issues are not dispatched."""
    _patch(team_key, {"paused": True}, as_json, f"Mapping {team_key} paused.")


@mappings.command("resume")
@click.argument("team_key")
@json_option
@with_appcontext
def mappings_resume(team_key: str, as_json: bool) -> None:
    """Resume a paused mapping."""
    _patch(team_key, {"paused": False}, as_json, f"Mapping {team_key} resumed.")


def _not_an_option(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """An argument of ``set-cap`` that looks like an option and is no negative number is the
    option that does not exist it is (the command takes unknown options as arguments, for -5)."""
    if isinstance(value, str) and value.startswith("-") and not re.fullmatch(r"-\d+", value):
        raise click.NoSuchOption(value, ctx=ctx)
    return value


# a negative CAP is taken as the argument it is (said wrong by the API, as --cap -1 is), not as an
# option that does not exist
@mappings.command("set-cap", context_settings={"ignore_unknown_options": True})
@click.argument("team_key", callback=_not_an_option)
@click.argument("cap", type=CapType(options_as_arguments=True))
@json_option
@with_appcontext
def mappings_set_cap(team_key: str, cap: int | str, as_json: bool) -> None:
    """Set the concurrency cap (max issues in progress) of a mapping; CAP `none` removes it (the
    global AIIMPL_GLOBAL_CAP still applies)."""
    if cap == NO_CAP:
        _patch(team_key, {"maxInProgressAiIssues": None}, as_json, f"Cap of {team_key} removed.")
    else:
        _patch(team_key, {"maxInProgressAiIssues": cap}, as_json, f"Cap of {team_key} set to {cap}.")


@mappings.command("delete")
@click.argument("team_key")
@click.option("--yes", is_flag=True,
              help="Delete without asking (needed where no terminal can confirm, as in a script).")
@json_option
@with_appcontext
def mappings_delete(team_key: str, yes: bool, as_json: bool) -> None:
    """Delete a mapping, once confirmed on the terminal, or at once with --yes."""
    if not yes:
        # a script's typo must not delete a mapping unasked: without a terminal, --yes says it
        if not _on_a_terminal():
            raise click.UsageError("not deleted: give --yes to delete without a terminal to confirm on")
        click.confirm(f"Delete the mapping of {team_key}?", abort=True)
    body = ApiCall()("DELETE", f"/api/mappings/{_segment(team_key, TEAM_NOT_FOUND)}", ok=(404,))
    if isinstance(body, dict) and body.get("deleted") is False:
        raise click.ClickException(TEAM_NOT_FOUND)
    echo_json(body) if as_json else click.echo(f"Mapping {team_key} deleted.")


@mappings.command("sync-workflows")
@click.argument("team_key", required=False)
@click.option("--all", "all_", is_flag=True,
              help="Sync every mapping whose runner backend uses workflow files; the others are "
                   "listed as skipped (with a progress bar).")
@json_option
@with_appcontext
def mappings_sync(team_key: str | None, all_: bool, as_json: bool) -> None:
    """Create or update the workflow templates in the mapping's repository.

    With --all it exits 1 only when a sync failed: a mapping whose runner backend uses no workflow
    files (or is not installed) is skipped, so the command fits a deploy script."""
    call = ApiCall()
    if bool(team_key) == all_:
        raise click.UsageError("give a TEAM_KEY or --all, not both" if all_ else "give a TEAM_KEY or --all")
    if team_key:
        result = call("POST", f"/api/mappings/{_segment(team_key, TEAM_NOT_FOUND)}/sync-workflows")
        echo_json({team_key: result}) if as_json else click.echo(f"{team_key}: ok")
        _warn(result, about=f"{team_key}: ")
        return
    facade = current_app.extensions["aiimpl"]
    installed = set(facade.ids("runner"))
    results: dict[str, Any] = {}
    teams: list[str] = []
    for mapping in _as_list(call("GET", "/api/mappings"), "mappings", "items"):
        team, mode = mapping["teamKey"], mapping.get("executionMode")
        if mode not in installed:
            results[team] = {"skipped": f"executionMode '{mode}' is not an installed runner backend"}
        elif not facade.runner(mode).supports_workflow_sync:
            results[team] = {"skipped": f"executionMode '{mode}' does not use workflow files"}
        else:
            teams.append(team)
    failures = 0
    # (a bar on a terminal only: in a script's log, its label alone, even with nothing to sync)
    shown = bool(teams) and sys.stderr is not None and sys.stderr.isatty()
    progress = (click.progressbar(teams, label="Syncing workflows", show_pos=True, file=sys.stderr)
                if shown else contextlib.nullcontext(teams))
    with progress as bar:
        for team in bar:
            try:
                results[team] = call("POST", f"/api/mappings/{_segment(team, TEAM_NOT_FOUND)}/sync-workflows")
            except click.ClickException as exc:
                results[team] = {"error": exc.message}
                failures += 1
    results = dict(sorted(results.items()))
    if as_json:
        echo_json(results)
    else:
        for team, result in results.items():
            said = result.get("error") if isinstance(result, dict) and "error" in result else "ok"
            if isinstance(result, dict) and "skipped" in result:
                said = f"skipped ({result['skipped']})"
            click.echo(logs.one_line(masked(f"{team}: {said}")))  # (GitHub's or a backend's text)
    for team, result in results.items():
        _warn(result, about=f"{team}: ")
    if failures:
        raise click.ClickException(f"{failures} of {len(teams)} mappings failed to sync")


# -- secrets -----------------------------------------------------------------------------------------

def _secrets_path(team: str | None) -> str:
    if team is None:
        return "/api/global-secrets"
    # (`--team ""` is a team that does not exist, never the global secrets)
    return f"/api/mappings/{_segment(team, TEAM_NOT_FOUND)}/secrets"


team_option = click.option("--team", help="A team's secrets (default: global secrets).")


@cli.group("secrets")
def secrets() -> None:
    """Team and global secrets (names only; values are never shown)."""


@secrets.command("list")
@team_option
@json_option
@with_appcontext
def secrets_list(team: str | None, as_json: bool) -> None:
    """List secret names and update times."""
    body = ApiCall()("GET", _secrets_path(team))
    echo_json(body) if as_json else _table(
        _as_list(body, "secrets", "items"),
        [("name", "NAME"), ("updatedAt", "UPDATED")],
    )


@secrets.command("set")
@click.argument("name")
@team_option
@json_option
@with_appcontext
def secrets_set(name: str, team: str | None, as_json: bool) -> None:
    """Set a secret. The value is read from standard input, or asked for (never an argument)."""
    path = _secrets_path(team)  # a team that cannot exist is said before the value is asked for
    call = ApiCall()
    # so are a team without a mapping, a database without the schema, and a secret store no runner
    # backend reads (503): the value is not typed, or read from a pipe, for nothing
    call("GET", path)
    _check_secret_name(name, team)
    if sys.stdin is None:  # (closed: `<&-`)
        raise click.ClickException("standard input is closed: the value is read from it, or asked for "
                                   "on a terminal")
    if _on_a_terminal():
        value = click.prompt(f"Value of {name}", hide_input=True)
    else:
        try:
            value = sys.stdin.read().rstrip("\r\n")  # (a file's last line ending, CRLF included)
        except UnicodeDecodeError:
            value = None
        if value is None or not_utf8(value):  # (the value itself is never said)
            raise click.ClickException(
                f"the value on standard input is not {(sys.stdin.encoding or 'UTF-8').upper()} text")
        # said of the value, not as the API's "name and value are required" / "Invalid request body"
        if not value.strip():
            raise click.ClickException("the value on standard input is empty: a secret needs one")
        if "\0" in value:
            raise click.ClickException("the value on standard input holds a NUL character, which no "
                                       "secret can hold")
    from ..services.secrets import MAX_VALUE

    if len(value) > MAX_VALUE:
        # said as the API says it, before a value over the request size limit is sent at all
        raise click.ClickException(f"value must be at most {MAX_VALUE:,} characters")
    body = call("POST", path, {"name": name, "value": value})
    echo_json(body) if as_json else click.echo(f"Secret {name} set.")


def _check_secret_name(name: str, team: str | None) -> None:
    """Refuse a name the API would refuse (its characters, its length, a global one that starts with
    a team's prefix), by the API's own rules and words, before the value is typed or read."""
    from ..api.admin_secrets import MAX_NAME
    from ..errors import ValidationError
    from ..services.secrets import GLOBAL, validate

    try:
        # (a value stands in for the one not asked for yet: only the name is checked here)
        validate(name, "-", scope=GLOBAL if team is None else team)
    except ValidationError as exc:
        raise click.ClickException(exc.message) from None
    if len(name) > MAX_NAME:
        raise click.ClickException(f"name must be at most {MAX_NAME} characters")


@secrets.command("delete")
@click.argument("name")
@team_option
@json_option
@with_appcontext
def secrets_delete(name: str, team: str | None, as_json: bool) -> None:
    """Delete a secret."""
    body = ApiCall()("DELETE", f"{_secrets_path(team)}/{_segment(name, SECRET_NOT_FOUND)}")
    echo_json(body) if as_json else click.echo(f"Secret {name} deleted.")


@secrets.command("rekey")
@json_option
@with_appcontext
def secrets_rekey(as_json: bool) -> None:
    """Encrypt with AIIMPL_SECRET_KEY every stored secret a key of AIIMPL_SECRET_KEY_FALLBACKS
    encrypted (the last step of changing the key, before the fallback is removed). Exits 1 when a
    secret no key decrypts is left (set it again)."""
    from ..database import schema_problem, schema_revision
    from ..errors import ConfigError
    from ..services import secrets as secrets_service

    problem = schema_problem(schema_revision())
    if problem:
        raise click.ClickException(problem)
    try:
        done, lost = secrets_service.rekey()
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None
    names = [f"{name} ({scope or 'global'})" for scope, name in lost]
    if as_json:
        echo_json({"rekeyed": done, "undecryptable": [{"scope": scope or None, "name": name}
                                                       for scope, name in lost]})
    else:
        click.echo(f"{done} secret(s) encrypted with the current key.")
    if lost:
        why, what = secrets_service.undecryptable(len(lost))
        raise click.ClickException(f"{len(lost)} stored secret(s) cannot be decrypted {why}: "
                                   f"{', '.join(names)}; {what}")


# -- runner mode ---------------------------------------------------------------------------------------

@cli.group("runner-mode")
def runner_mode() -> None:
    """The global runner mode (default, gha, fly, local, shadow)."""


@runner_mode.command("get")
@json_option
@with_appcontext
def runner_mode_get(as_json: bool) -> None:
    """Show the saved and the effective runner mode."""
    body = ApiCall()("GET", "/api/runner-mode")
    if as_json:
        echo_json(body)
        return
    click.echo(f"mode: {body.get('mode')}")
    click.echo(f"effective: {body.get('effective', body.get('mode'))}")
    if body.get("envOverride"):
        click.echo(f"RUNNER_MODE env var overrides it: {body['envOverride']}")
    _warn(body)


def _warn(body: Any, *, about: str = "") -> None:
    """An answer's ``warnings`` (a sync whose runs will fail, a runner mode whose backend is not
    installed) on standard error, masked and one line each, each after ``about`` (``ENG: ``); with
    ``--json`` too, whose output keeps them in the answer."""
    warnings = body.get("warnings") if isinstance(body, dict) else None
    for warning in warnings if isinstance(warnings, list) else ():
        click.echo(logs.one_line(masked(f"Warning: {about}{warning}")), err=True)


@runner_mode.command("set")
@click.argument("mode")
@json_option
@with_appcontext
def runner_mode_set(mode: str, as_json: bool) -> None:
    """Save the runner mode. While the RUNNER_MODE environment variable forces a mode, the value is
    saved all the same (it takes effect once RUNNER_MODE is unset) and a warning says so."""
    call = ApiCall()
    body = call("POST", "/api/runner-mode", {"mode": mode}, ok=(409,))
    if isinstance(body, dict) and body.get("error"):  # 409: saved, but the env var overrides it
        body = call("GET", "/api/runner-mode")
        click.echo(f"Warning: runner mode {mode} saved, but the RUNNER_MODE environment variable forces "
                   f"{body.get('envOverride')}: {mode} takes effect once RUNNER_MODE is unset.", err=True)
        if as_json:
            echo_json(body)
        _warn(body)
        return
    echo_json(body) if as_json else click.echo(f"Runner mode set to {mode}.")
    _warn(body)


# -- sessions ----------------------------------------------------------------------------------------

@cli.group("sessions")
def sessions() -> None:
    """Active session machines and containers."""


@sessions.command("list")
@json_option
@with_appcontext
def sessions_list(as_json: bool) -> None:
    """List active sessions."""
    body = ApiCall()("GET", "/api/sessions")
    echo_json(body) if as_json else _table(
        _as_list(body, "sessions", "items"),
        [
            ("id", "SESSION"),
            ("backend", "BACKEND"),
            ("state", "STATE"),
            ("jobId", "JOB"),
            ("issueKey", "ISSUE"),
        ],
    )


@sessions.command("destroy")
@click.argument("session_id")
@json_option
@with_appcontext
def sessions_destroy(session_id: str, as_json: bool) -> None:
    """Destroy a session."""
    body = ApiCall()("DELETE", f"/api/sessions/{_segment(session_id, SESSION_NOT_FOUND)}")
    echo_json(body) if as_json else click.echo(f"Session {session_id} destroyed.")


# -- outbox ------------------------------------------------------------------------------------------

@cli.group("outbox")
def outbox() -> None:
    """Tracker writes (comments, stage changes) in the outbox; re-queue the ones given up on."""


OUTBOX_COLUMNS = [("id", "ITEM"), ("issueKey", "ISSUE"), ("write", "WRITE"), ("state", "STATE"),
                  ("attempts", "ATTEMPTS"), ("createdAt", "CREATED"), ("lastError", "LAST ERROR")]
#: a longer last error is cut in the table (``--json`` prints it whole)
ERROR_WIDTH = 60


def _outbox_row(item: dict[str, Any]) -> dict[str, Any]:
    write = item.get("op") or ""
    if item.get("stage") or item.get("kind"):
        write += f" {item.get('stage') or item.get('kind')}"
    # (escaped before it is cut: the table's width counts what the terminal shows)
    error = logs.one_line(" ".join(str(item.get("lastError") or "").split()))
    if len(error) > ERROR_WIDTH:
        error = error[: ERROR_WIDTH - 1] + "…"
    return {**item, "write": write, "lastError": error}


@outbox.command("list")
@click.option("--state", type=click.Choice(OUTBOX_STATES), default="dead", show_default=True,
              help="Only the items in this state.")
@click.option("--issue", callback=not_empty, help="Only this issue's items.")
@click.option("--limit", type=WholeNumber(1, LIST_MAX),
              help="At most this many, newest first (default 100).")
@json_option
@with_appcontext
def outbox_list(state: str, issue: str | None, limit: int | None, as_json: bool) -> None:
    """List outbox items, newest first (by default the dead ones, given up on)."""
    params = {"state": state, "issueKey": issue, "limit": limit}
    body = ApiCall()("GET", "/api/outbox?" + urlencode({k: v for k, v in params.items() if v is not None}))
    if as_json:
        echo_json(body)
        return
    _table([_outbox_row(i) for i in _as_list(body, "items")], OUTBOX_COLUMNS)
    counts = body.get("counts") if isinstance(body, dict) else None
    if isinstance(counts, dict):  # the API's states first (a JSON object's keys come sorted)
        order = {name: n for n, name in enumerate(OUTBOX_STATES)}
        names = sorted(counts, key=lambda name: (order.get(name, len(order)), name))
        click.echo("counts: " + ", ".join(f"{name} {counts[name]}" for name in names))


@outbox.command("retry")
@click.argument("item_id", type=WholeNumber())
@json_option
@with_appcontext
def outbox_retry(item_id: int, as_json: bool) -> None:
    """Re-queue a dead outbox item (ITEM_ID, the number outbox list shows): the next delivery (poll
    cycle) sends it."""
    body = ApiCall()("POST", f"/api/outbox/{item_id}/retry")
    echo_json(body) if as_json else click.echo(
        f"Outbox item {item_id} re-queued; the next poll cycle sends it.")
