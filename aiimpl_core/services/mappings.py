"""Project mappings: validation and storage, shared by the admin API, the UI and the CLI.

A mapping is written through the API as camelCase JSON (``maxInProgressAiIssues`` …) and stored in
:class:`~aiimpl_core.orm.Mapping` (snake_case columns). :func:`validate` applies the reference's
rules of ``POST /api/mappings`` and answers the *first* failing one, in the order of the
reference's tables:

1. ``teamKey, owner, and repo are required``, ``defaultBranch is required`` (missing, null or
   blank; a value that is there but no string: ``owner must be a string``);
2. the model provider: its id among the installed ones, then the provider's own
   ``validate_mapping`` (bedrock: ``awsRegion`` required, refused with ``fly-machines``);
3. ``executionMode`` among the selectable runner backends, ``machineCpus``, ``machineMemoryMb``,
   ``sessionMode``;
4. ``branchPrefix`` (git ref-name rules), ``extraEnv``, ``maxInProgressAiIssues``,
   ``planningWorkflowFile``, then the runner backend's and the ticketing provider's own
   ``validate_mapping``.

Allowed values in messages come from the installed plugins, so with the standard plugins they read
exactly as the reference: ``provider must be 'anthropic' or 'bedrock'``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from flask import current_app
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from ..database import advisory_locks, serialized
from ..errors import NotFound, ProviderConfigError, ValidationError, describe_plugin_error
from ..extensions import db
from ..orm import Mapping, Secret, iso_z
from ..plugins import Plugins
from ..schemas.common import is_given, require_strings
from ..session.env import SESSION_MODES

log = logging.getLogger(__name__)

MAX_INT = 2**31 - 1  # the database's INTEGER
MIN_MEMORY_MB = 256

#: API field → ORM column, in the order the API shows them.
FIELDS: dict[str, str] = {
    "teamKey": "team_key",
    "owner": "owner",
    "repo": "repo",
    "defaultBranch": "default_branch",
    "provider": "provider",
    "awsRegion": "aws_region",
    "executionMode": "execution_mode",
    "machineCpus": "machine_cpus",
    "machineMemoryMb": "machine_memory_mb",
    "sessionMode": "session_mode",
    "branchPrefix": "branch_prefix",
    "extraEnv": "extra_env",
    "maxInProgressAiIssues": "max_in_progress",
    "planningEnabled": "planning_enabled",
    "planningWorkflowFile": "planning_workflow_file",
    "ticketing": "ticketing",
    "paused": "paused",
}

DEFAULTS: dict[str, Any] = {
    "awsRegion": None,
    "machineCpus": None,
    "machineMemoryMb": None,
    "sessionMode": "autonomous",
    "branchPrefix": "ai/",
    "extraEnv": {},
    "maxInProgressAiIssues": None,
    "planningEnabled": False,
    "planningWorkflowFile": None,
    "paused": False,
}

TEAM_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
OWNER_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
REPO_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Linux's MAX_ARG_STRLEN: the bytes of one ``NAME=value`` variable a process is given, its NUL included
ENV_VARIABLE_MAX = 128 * 1024
BRANCH_PREFIX_MAX = 100
REF_FORBIDDEN = "~^:?*[\\"


#: The standard providers, in the order the reference names them; others follow alphabetically,
#: so messages read the same whatever order the plugins happened to load in.
STANDARD_ORDER: dict[str, tuple[str, ...]] = {
    "model": ("anthropic", "bedrock"),
    "runner": ("github-actions", "fly-machines", "local-docker"),
    "ticketing": ("linear", "jira"),
}


def _facade() -> Plugins:
    return current_app.extensions["aiimpl"]


def ordered(kind: str, ids: Sequence[str]) -> list[str]:
    """``ids`` with the standard providers first, in the reference's order, then the others by id."""
    standard = STANDARD_ORDER.get(kind, ())
    rank = {pid: n for n, pid in enumerate(standard)}
    return sorted(ids, key=lambda pid: (rank.get(pid, len(standard)), pid))


def model_ids() -> list[str]:
    return ordered("model", _facade().ids("model"))


#: the reference's values of ``executionMode``, which a mapping may name while no installed plugin
#: offers one: an install running only local Docker (chosen by the runner mode ``local``, never by
#: a mapping) could otherwise save no mapping at all
REFERENCE_EXECUTION_MODES = ("github-actions", "fly-machines")


def execution_modes() -> list[str]:
    """Runner backends a mapping may name in ``executionMode``: the installed ones it can select,
    or the reference's values (:data:`REFERENCE_EXECUTION_MODES`) while none is installed."""
    return ordered("runner", _facade().selectable_execution_modes()) or list(REFERENCE_EXECUTION_MODES)


def _missing_backend(value: Any, stored: dict[str, Any] | None) -> str:
    """`` ('github-actions' is not installed, or is disabled)`` where ``value`` names a backend a
    mapping could run on were its plugin installed: one of the reference's values, or the one the
    stored mapping names (its plugin removed or disabled since it was saved). Any other value gets
    nothing, and its message stays the reference's."""
    if not isinstance(value, str) or value in _facade().ids("runner"):
        return ""
    if value in REFERENCE_EXECUTION_MODES or (stored is not None and stored.get("executionMode") == value):
        return f" ('{value}' is not installed, or is disabled)"
    return ""


def tracker_ids() -> list[str]:
    return ordered("ticketing", _facade().ids("ticketing"))


def one_of(values: Sequence[str]) -> str:
    """``'a'``, ``'a' or 'b'``, ``'a', 'b', or 'c'`` (the reference's wording)."""
    quoted = [f"'{v}'" for v in values]
    if not quoted:
        return "the id of an installed plugin, and none is installed (`aiimpl plugins list` shows them)"
    if len(quoted) == 1:
        return quoted[0]
    if len(quoted) == 2:
        return f"{quoted[0]} or {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", or {quoted[-1]}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: Any, minimum: int, field: str, message: str) -> None:
    """Check an optional whole-number field: ``message`` (the reference's) when it is no integer or
    below ``minimum``; one past what the database stores is said as such, not as "below"."""
    if value is None:
        return
    if not _is_int(value) or value < minimum:
        raise ValidationError(message)
    if value > MAX_INT:
        raise ValidationError(f"{field} must be at most {MAX_INT}")


def branch_prefix_problem(prefix: Any) -> str | None:
    """Why ``prefix`` cannot start a git branch name (git's ref-name rules), or ``None``."""
    if not isinstance(prefix, str):
        return "must be a string"
    if len(prefix) > BRANCH_PREFIX_MAX:
        return f"must be at most {BRANCH_PREFIX_MAX} characters"
    if ".." in prefix:
        return "must not contain '..'"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in prefix):
        return "must not contain spaces or control characters"
    for ch in REF_FORBIDDEN:
        if ch in prefix:
            return f"must not contain '{ch}'"
    if prefix.startswith("-"):
        return "must not start with '-'"
    if prefix.startswith("/"):
        return "must not start with '/'"
    if "//" in prefix:
        return "must not contain '//'"
    if "@{" in prefix:
        return "must not contain '@{'"
    components = prefix.split("/")
    # every component but the last is complete; the last is continued by the issue key
    for component in components[:-1]:
        if component.endswith(".lock"):
            return "a path component must not end with '.lock'"
    if prefix.endswith(".lock"):
        return "must not end with '.lock'"
    if any(c.startswith(".") for c in components):
        return "a path component must not start with '.'"
    return None


def branch_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a whole git branch name, or ``None``: a prefix's rules, and no
    ending a prefix may have (``/``, ``.``), nor ``@`` alone."""
    problem = branch_prefix_problem(name)
    if problem:
        return problem
    if name.endswith(("/", ".")):
        return f"must not end with '{name[-1]}'"
    if name == "@":
        return "must not be '@'"
    return None


# -- representation ----------------------------------------------------------------------------




def to_api(row: Mapping) -> dict[str, Any]:
    """A stored mapping as the API shows it (camelCase)."""
    out: dict[str, Any] = {api: getattr(row, column) for api, column in FIELDS.items()}
    out["extraEnv"] = dict(row.extra_env or {})
    out["ticketing"] = dict(row.ticketing or {})
    out["paused"] = bool(row.paused)
    out["planningEnabled"] = bool(row.planning_enabled)
    out["createdAt"] = iso_z(row.created_at)
    out["updatedAt"] = iso_z(row.updated_at)
    return out


# -- validation ----------------------------------------------------------------------------------


def default_provider() -> str | None:
    """The model provider of a mapping that names none: ``anthropic`` when installed."""
    ids = model_ids()
    return "anthropic" if "anthropic" in ids else (ids[0] if ids else None)


def default_execution_mode() -> str | None:
    """``github-actions`` (the reference's default) when installed, else the one runner backend a
    mapping can name; with several and none of them ``github-actions``, none: the mapping must name
    one (``executionMode must be …``), rather than get whichever sorts first."""
    modes = execution_modes()
    if "github-actions" in modes:  # (also the default while no selectable backend is installed)
        return "github-actions"
    return modes[0] if len(modes) == 1 else None


def _provider_check(kind: str, provider_id: str, merged: dict[str, Any]) -> None:
    """Run one provider's ``validate_mapping``; its :class:`ProviderConfigError` is the answer."""
    facade = _facade()
    getter = {"model": facade.model, "runner": facade.runner, "ticketing": facade.ticketing}[kind]
    provider = getter(provider_id)
    try:
        provider.validate_mapping(merged)
    except ProviderConfigError as exc:
        raise ValidationError(exc.message) from None
    except Exception as exc:  # noqa: BLE001 - a plugin's failure is said, never a 500
        what = describe_plugin_error(
            exc,
            foreign="unexpected error ({cls}); the orchestrator's log has the details",
            log_foreign=lambda e: log.error("%s provider %s failed to check a mapping", kind, provider_id,
                                            exc_info=e),
        )
        raise ValidationError(
            f"the {kind} provider '{provider_id}' could not check the mapping: {what}"
        ) from None


def validate(body: Any, stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a ``POST /api/mappings`` body merged over the stored mapping (when updating).

    Returns the complete mapping (camelCase, defaults filled in). Raises
    :class:`~aiimpl_core.errors.ValidationError` with the first failing rule's message.
    Fields the body omits keep their stored values; an explicit ``null`` clears an optional field.
    """
    if not isinstance(body, dict):
        raise ValidationError("Invalid request body")
    merged: dict[str, Any] = dict(DEFAULTS)
    if stored:
        merged.update({k: stored[k] for k in FIELDS if k in stored})
    merged.update({k: v for k, v in body.items() if k in FIELDS})
    if merged.get("provider") is None:
        merged["provider"] = default_provider()
    if merged.get("executionMode") is None:
        merged["executionMode"] = default_execution_mode()

    # -- group 1: identity --------------------------------------------------------------------
    if not all(is_given(merged.get(k)) for k in ("teamKey", "owner", "repo")):
        raise ValidationError("teamKey, owner, and repo are required")
    require_strings({k: merged[k] for k in ("teamKey", "owner", "repo")})
    if not TEAM_KEY_RE.fullmatch(merged["teamKey"]):
        raise ValidationError(
            "teamKey must be at most 64 letters, digits, '_' or '-', starting with a letter or digit"
        )
    if not OWNER_RE.fullmatch(merged["owner"]):
        raise ValidationError("owner must be a GitHub user or organization name")
    if not REPO_RE.fullmatch(merged["repo"]) or merged["repo"] in (".", ".."):
        raise ValidationError("repo must be a GitHub repository name")
    if not is_given(merged.get("defaultBranch")):
        raise ValidationError("defaultBranch is required")
    require_strings({"defaultBranch": merged["defaultBranch"]})
    if len(merged["defaultBranch"]) > 255 or branch_name_problem(merged["defaultBranch"]):
        raise ValidationError("defaultBranch must be a valid branch name")

    # -- group 2: the model provider ------------------------------------------------------------
    models = model_ids()
    if merged["provider"] not in models:
        raise ValidationError(f"provider must be {one_of(models)}")
    region = merged.get("awsRegion")
    if region is not None and (not isinstance(region, str) or len(region) > 64):
        raise ValidationError("awsRegion must be a string of at most 64 characters")
    if isinstance(region, str):
        # a blank region is none (bedrock's rule then asks for one); spaces around it are dropped
        merged["awsRegion"] = region.strip() or None
    _provider_check("model", merged["provider"], merged)

    # -- group 3: where sessions run ------------------------------------------------------------
    modes = execution_modes()
    if merged["executionMode"] not in modes:
        missing = _missing_backend(merged["executionMode"], stored)
        raise ValidationError(f"executionMode must be {one_of(modes)}{missing}")
    _whole(merged.get("machineCpus"), 1, "machineCpus", "machineCpus must be a positive integer")
    _whole(merged.get("machineMemoryMb"), MIN_MEMORY_MB, "machineMemoryMb",
           f"machineMemoryMb must be an integer >= {MIN_MEMORY_MB}")
    if merged.get("sessionMode") is None:
        merged["sessionMode"] = DEFAULTS["sessionMode"]
    if merged["sessionMode"] not in SESSION_MODES:
        raise ValidationError(f"sessionMode must be {one_of(SESSION_MODES)}")

    # -- group 4: the work itself ---------------------------------------------------------------
    if merged.get("branchPrefix") is None:
        merged["branchPrefix"] = DEFAULTS["branchPrefix"]
    problem = branch_prefix_problem(merged["branchPrefix"])
    if problem:
        raise ValidationError(f"branchPrefix invalid: {problem}")
    env = merged.get("extraEnv")
    if env is None:
        env = merged["extraEnv"] = {}
    if not isinstance(env, dict):
        raise ValidationError("extraEnv must be a plain object")
    if not all(isinstance(v, str) for v in env.values()):
        raise ValidationError("extraEnv values must all be strings")
    if not all(ENV_NAME_RE.fullmatch(k) for k in env):
        raise ValidationError("extraEnv keys must be environment variable names (letters, digits, '_')")
    for name, value in env.items():
        # what a process can be given: the kernel takes a variable of at most MAX_ARG_STRLEN bytes
        # (``NAME=value`` and its NUL); refused here, not at every dispatch (the API refuses a NUL)
        if len(name.encode()) + 1 + len(value.encode("utf-8", "surrogatepass")) >= ENV_VARIABLE_MAX:
            raise ValidationError(f"extraEnv {name} is too long: a variable takes at most "
                                  f"{ENV_VARIABLE_MAX - 1:,} bytes with its name")
    kept = (stored or {}).get("extraEnv") or {}
    held = _secret_held({k: v for k, v in env.items() if kept.get(k) != v}, merged["teamKey"])
    if held is not None:
        raise ValidationError(f"extraEnv {held[0]} holds the value of {held[1]}: {EXTRA_ENV_NOT_SECRET}")
    _whole(merged.get("maxInProgressAiIssues"), 1, "maxInProgressAiIssues",
           "maxInProgressAiIssues must be a positive integer")
    planning = merged.get("planningEnabled")
    if planning is None:
        planning = merged["planningEnabled"] = False
    if not isinstance(planning, bool):
        raise ValidationError("planningEnabled must be true or false")
    workflow = merged.get("planningWorkflowFile")
    if workflow is not None and (not isinstance(workflow, str) or len(workflow) > 255):
        raise ValidationError("planningWorkflowFile must be a string of at most 255 characters")
    if isinstance(workflow, str) and not workflow.strip():
        workflow = merged["planningWorkflowFile"] = None
    if planning and not workflow:
        raise ValidationError("planningWorkflowFile is required when planningEnabled is true")
    paused = merged.get("paused")
    if paused is None:
        paused = merged["paused"] = False
    if not isinstance(paused, bool):
        raise ValidationError("paused must be true or false")
    if merged["executionMode"] in _facade().ids("runner"):  # (not a reference value none installs)
        _provider_check("runner", merged["executionMode"], merged)
    merged["ticketing"] = _validate_ticketing(merged.get("ticketing"), merged)
    return {k: merged[k] for k in FIELDS}


def set_tracker_command(team_key: str) -> str:
    """The command that gives a mapping saved without a tracker (by a version that allowed it) one:
    what ``aiimpl check`` and a dispatch of its issue say to run."""
    return f"""`aiimpl mappings update {team_key} --ticketing '{{"provider": "<id>"}}'`"""


def _validate_ticketing(ticketing: Any, merged: dict[str, Any]) -> dict[str, Any]:
    """``ticketing`` is ``{"provider": "<id>", ...that provider's settings}``.

    Omitted with a single ticketing provider installed, it defaults to that provider, and so does
    its ``provider`` alone (``{"jql": "labels = backend"}``). With none installed the mapping is
    refused: saved without a tracker, none of its team's issues would ever be read, and a dispatch
    of one would find no mapping.
    """
    trackers = tracker_ids()
    if not trackers:
        raise ValidationError("ticketing.provider must name an installed tracker, and none is installed "
                              "(install a tracker plugin such as aiimpl-linear or aiimpl-jira; "
                              "`aiimpl plugins list` shows what is installed)")
    if ticketing is None or ticketing == {}:
        if len(trackers) == 1:
            ticketing = {"provider": trackers[0]}
        else:
            raise ValidationError(f"ticketing.provider must be {one_of(trackers)}")
    if not isinstance(ticketing, dict):
        raise ValidationError("ticketing must be a plain object")
    if "provider" not in ticketing and len(trackers) == 1:
        ticketing = {"provider": trackers[0], **ticketing}
    given = ticketing.get("provider")
    if given not in trackers:
        # (a stored mapping whose tracker plugin was removed or disabled says so on any update)
        # (cut short: a value the size of the body is not sent back whole)
        shown = given if not isinstance(given, str) or len(given) <= 64 else given[:64] + "…"
        named = f" ('{shown}' is not installed, or is disabled)" if isinstance(given, str) and given else ""
        raise ValidationError(f"ticketing.provider must be {one_of(trackers)}{named}")
    merged = {**merged, "ticketing": ticketing}
    _provider_check("ticketing", ticketing["provider"], merged)
    return dict(ticketing)


# -- storage -------------------------------------------------------------------------------------


def get_row(team_key: str) -> Mapping | None:
    return db.session.scalar(select(Mapping).where(Mapping.team_key == team_key))


def require(team_key: str) -> Mapping:
    row = get_row(team_key)
    if row is None:
        raise NotFound("Team not found")
    return row


def list_mappings() -> list[dict[str, Any]]:
    return [to_api(r) for r in db.session.scalars(select(Mapping).order_by(Mapping.team_key))]


def get(team_key: str) -> dict[str, Any]:
    return to_api(require(team_key))


def save(body: Any) -> tuple[dict[str, Any], bool]:
    """Create the mapping of ``body["teamKey"]``, or update it; returns it and whether it was created.

    Two requests creating the same team at once: the database's unique team key refuses the
    second insert, which is then applied as an update of the row the first one created.
    """
    try:
        return _save(body)
    except IntegrityError:
        db.session.rollback()
        return _save(body)


#: times a save validates against a fresh read before it validates under the writer's lock
_SAVE_TRIES = 3


def _save(body: Any) -> tuple[dict[str, Any], bool]:
    # Validated outside the writer's lock: a plugin's check may ask its service (Jira parses the
    # JQL clause, with retries), and on SQLite the lock would hold every other writer (runner
    # callbacks, the poller) meanwhile. The write then goes ahead only if the stored mapping is
    # still the one validated against; one changed meanwhile is validated again, and after a few
    # such changes under the lock. The row is read and written in one writer's transaction: on
    # SQLite a read in an ordinary transaction, then a write after another connection's commit,
    # fails at once as "database is locked".
    team_key = body.get("teamKey") if isinstance(body, dict) else None
    for attempt in range(_SAVE_TRIES + 1):
        last = attempt == _SAVE_TRIES
        if not last:
            seen = _stored(team_key)
            db.session.commit()  # no transaction stays open while the plugins are asked
            values = validate(body, seen)
        with serialized() as session:
            lock_mapping(team_key)
            row = _row_of(team_key)
            stored = to_api(row) if row else None
            if not last and stored != seen:
                continue  # changed since it was read: validate against what is stored now
            if last:
                values = validate(body, stored)
            created = row is None
            if row is None:
                row = Mapping(team_key=values["teamKey"])
                session.add(row)
            for api, column in FIELDS.items():
                setattr(row, column, values[api])
        return to_api(row), created
    raise AssertionError("unreachable: the last try returns or raises")


def team_of_key(provider_id: str, issue_key: str) -> str:
    """The team ``issue_key`` names as its installed tracker ``provider_id`` reads it (``ENG-12`` is
    ``ENG`` unless the tracker says otherwise); a tracker whose ``team_of`` raises (one that cannot
    be set up, a plugin's bug) is not let fail the caller: the key then names its team before its
    last dash."""
    try:
        return current_app.extensions["aiimpl"].ticketing(provider_id).team_of(issue_key)
    except Exception:  # noqa: BLE001 - one tracker's trouble must not fail the others, nor the caller
        log.warning("the tracker %r could not say the team of %s; its keys are taken to name their "
                    "team before the dash", provider_id, issue_key, exc_info=True)
        return issue_key.rsplit("-", 1)[0]


def lock_mapping(team_key: Any) -> None:
    """Hold the team's mapping, and its secrets, for the rest of the transaction (PostgreSQL; SQLite's
    :func:`~aiimpl_core.database.serialized` holds every writer already): at READ COMMITTED two saves
    each validated against the stored mapping, and each wrote its own change over the other's (one
    enabling planning, one removing its workflow file: stored, a mapping no validation passes), and
    a team secret saved as the mapping was deleted outlived it, for the next mapping of that team
    to receive. The lock covers a mapping not created yet, which no row lock could.

    The team's own lock (``team:``, which a dispatch claim holds as it reads the mapping) is taken
    too: a pause, a lower cap or a deletion answered while a claim that had read the mapping before
    it was still open let that claim start a run after the operator saw the project paused."""
    if isinstance(team_key, str) and team_key:
        advisory_locks([f"mapping:{team_key}", f"team:{team_key}"])


def _row_of(team_key: Any) -> Mapping | None:
    return get_row(team_key) if isinstance(team_key, str) and team_key else None


def _stored(team_key: Any) -> dict[str, Any] | None:
    row = _row_of(team_key)
    return to_api(row) if row else None


#: a PATCH with neither field (``{"machineCpus": 2}`` included: a field it does not read is ignored)
NEITHER = ("Specify either paused or maxInProgressAiIssues: PATCH changes only these "
           "(POST /api/mappings saves the other fields)")


def patch(team_key: str, body: Any) -> dict[str, Any]:
    """Set a mapping's pause state or its concurrency cap (one of them per request)."""
    if not isinstance(body, dict):
        raise ValidationError("Invalid request body")
    has_paused, has_cap = "paused" in body, "maxInProgressAiIssues" in body
    if has_paused and has_cap:
        raise ValidationError("Specify either paused or maxInProgressAiIssues, not both")
    if not has_paused and not has_cap:  # (other fields are ignored, as by every admin endpoint)
        raise ValidationError(NEITHER)
    if has_cap:
        _whole(body["maxInProgressAiIssues"], 1, "maxInProgressAiIssues",
               "maxInProgressAiIssues must be a positive integer")
    elif not isinstance(body["paused"], bool):
        raise ValidationError("paused must be true or false")
    with serialized():
        lock_mapping(team_key)
        row = require(team_key)
        if has_cap:
            row.max_in_progress = body["maxInProgressAiIssues"]
        else:
            row.paused = body["paused"]
    return to_api(row)


def delete_mapping(team_key: str) -> bool:
    """Delete a mapping and its team secrets; false when there was none."""
    with serialized() as session:
        lock_mapping(team_key)
        row = get_row(team_key)
        if row is None:
            return False
        session.execute(delete(Secret).where(Secret.scope == team_key))
        session.delete(row)
    return True


#: why a secret's value is refused in ``extraEnv``, and where it belongs
EXTRA_ENV_NOT_SECRET = (
    "extraEnv is kept and shown in plain text and passed as a workflow input anyone who reads the "
    "repository's runs sees; a session gets the team's and global secrets on a backend that keeps them "
    "(aiimpl secrets set, POST /api/mappings/{teamKey}/secrets or /api/global-secrets), and a GitHub "
    "Actions workflow reads the repository's Actions secrets"
)


def _secret_held(env: dict[str, str], team_key: str) -> tuple[str, str] | None:
    """The first of these ``extraEnv`` variables (those a save adds or changes: a secret stored
    later with the value of one already saved does not make every later save of the mapping fail)
    whose value is one of the orchestrator's secrets (a sensitive setting's, a stored secret's of
    the team or global; as the redactor reads them, spaces around it aside), with what it is, by
    name; ``None`` when none is."""
    from ..session.redact import MIN_LENGTH
    from . import redaction
    from . import secrets as secrets_service

    given = {value.strip(): name for name, value in env.items() if len(value.strip()) >= MIN_LENGTH}
    if not given:
        return None
    known: dict[str, str] = {}
    for name, value in redaction.sensitive_settings():
        known.setdefault(value.strip(), f"the setting {name}")
    for scope, name, value in secrets_service.stored_values(team_key):
        known.setdefault(value.strip(), f"the {'global' if scope == secrets_service.GLOBAL else 'team'} "
                                        f"secret {name}")
    for value, name in sorted(given.items(), key=lambda item: item[1]):
        if value in known:
            return name, known[value]
    return None


def team_keys() -> list[str]:
    return list(db.session.scalars(select(Mapping.team_key).order_by(Mapping.team_key)))


def views_by_tracker() -> dict[str, list[str]]:
    """Team keys per ticketing provider id."""
    out: dict[str, list[str]] = {}
    for row in db.session.scalars(select(Mapping).order_by(Mapping.team_key)):
        provider_id = (row.ticketing or {}).get("provider")
        if provider_id:
            out.setdefault(str(provider_id), []).append(row.team_key)
    return out


__all__ = [
    "FIELDS",
    "SESSION_MODES",
    "branch_prefix_problem",
    "delete_mapping",
    "get",
    "list_mappings",
    "one_of",
    "patch",
    "save",
    "to_api",
    "validate",
]
