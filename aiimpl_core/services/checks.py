"""Pre-flight checks (``aiimpl check``): does every service accept our credentials, and does it know
what the mappings name?

Read-only. Each installed tracker and runner backend is checked with its provider's
:meth:`~aiimpl_core.providers.Provider.check`, given the mappings that use it; GitHub, which every
runner's sessions push to, is checked for each mapped repository. A provider that is not
configured is a failure when a mapping uses it, and skipped otherwise.

The remote checks run side by side, and the report waits for them :data:`BUDGET` seconds at most:
a service that accepts connections and never answers costs the HTTP client's timeout and retries
(about 45 seconds a request), which would hold ``GET /api/checks`` past gunicorn's graceful
timeout (a deploy then cuts the answer) and a proxy's read timeout, and would hide the others'
results until then. A check still waiting for its answer from an earlier report is not started
again by the next one: within that report's budget, the next one waits for the same answer (two
reports at once report the same); past it, the next one reports it failed at once, so repeated
reports against a service that never answers do not pile up waiting threads.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from flask import current_app
from sqlalchemy import select

from .. import logs
from ..errors import PluginContractError, describe_plugin_error
from ..extensions import db
from ..github import from_app as github_from_app
from ..orm import Mapping as MappingRow
from ..types import CheckResult, MappingView
from . import poller, redaction, settings
from .launch import choose_backend, mapping_env
from .mappings import set_tracker_command

log = logging.getLogger(__name__)

#: a result's status: passed, failed, or not checked (a provider nobody uses, not configured)
OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True)
class CheckRow:
    """One line of the report: what was checked, of which connection, and how it went."""

    kind: str  # ticketing | runner | github | model | secrets | settings | database
    provider: str
    name: str
    status: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "provider": self.provider, "name": self.name, "status": self.status,
                "detail": self.detail}


def _failure(exc: Exception, log_foreign: Callable[[BaseException], object] | None = None) -> str:
    # our errors' messages may quote a remote answer: masked (the redactor built only then, as it reads
    # every plugin's settings); anything else is named by its class only
    return describe_plugin_error(
        exc, mask=lambda message: redaction.config_redactor().text(message), log_foreign=log_foreign
    )


def _provider_rows(kind: str, provider_id: str, mappings: Sequence[MappingView]) -> list[CheckRow]:
    facade = current_app.extensions["aiimpl"]
    used_by = ", ".join(m.team_key for m in mappings)
    try:
        # a setting the plugin finds wrong is said as `aiimpl config` says it (naming the setting),
        # not as whatever its first call then fails with
        problem = facade.classes[kind][provider_id].settings_problem(current_app.config)
    except Exception as exc:  # noqa: BLE001 - reported as the connection's failure
        return [CheckRow(kind, provider_id, "configured", FAILED, _failure(exc))]
    if problem:
        return [CheckRow(kind, provider_id, "configured", FAILED, logs.masked(str(problem)))]
    try:
        provider = facade.runner(provider_id) if kind == "runner" else facade.ticketing(provider_id)
        configured = provider.is_configured()
    except Exception as exc:  # noqa: BLE001 - reported as the connection's failure
        return [CheckRow(kind, provider_id, "configured", FAILED, _failure(exc))]
    if not configured:
        if mappings:
            hint = f" ({provider.setup_hint})" if provider.setup_hint else ""
            return [CheckRow(kind, provider_id, "configured", FAILED,
                             f"not configured, but mappings use it: {used_by}{hint}")]
        return [CheckRow(kind, provider_id, "configured", SKIPPED, "not configured; no mapping uses it")]
    try:
        results: Sequence[CheckResult] = _results(provider.check(mappings))
    except Exception as exc:  # noqa: BLE001 - one connection's failure must not hide the others
        failure = _failure(exc, lambda e: log.warning("checking %s failed", provider_id, exc_info=e))
        return [CheckRow(kind, provider_id, "connection", FAILED, failure)]
    if not results:
        if not mappings:  # (a plugin may check only what mappings use)
            return [CheckRow(kind, provider_id, "configured", OK,
                             "configured; no mapping uses it, so nothing further was checked")]
        return [CheckRow(kind, provider_id, "configured", OK,
                         "configured (the plugin offers no further check)")]
    # a plugin's detail is remote text too: the orchestrator's own secrets are masked in it all the same
    mask = redaction.config_redactor()
    return [CheckRow(kind, provider_id, r.name, OK if r.ok else FAILED, mask.text(r.detail)) for r in results]


def _results(answer: Any) -> list[CheckResult]:
    """``check``'s answer, refused (as the connection's failure) unless it is a sequence of
    :class:`CheckResult`; ``None`` (a ``check`` that returns nothing, as the author guide puts
    the default) is no result."""
    if answer is None:
        return []
    if isinstance(answer, (str, bytes, dict)) or not hasattr(answer, "__iter__"):
        raise PluginContractError(f"check() answered {type(answer).__name__}, not a list of CheckResult")
    results = list(answer)
    for result in results:
        if not isinstance(result, CheckResult):
            raise PluginContractError(f"check() answered a {type(result).__name__}, not a CheckResult")
    return results


def _github_rows(rows: Sequence[MappingRow], make: Callable[[], Any]) -> list[CheckRow | _Check]:
    """GitHub for every mapped repository (one check each): the App's installation and a
    session's token (App), or the personal token's access to the repository."""
    github = make()
    if not github.is_configured():
        if rows:
            return [CheckRow("github", "github", "configured", FAILED,
                             "not configured (AIIMPL_GITHUB_APP_ID and AIIMPL_GITHUB_PRIVATE_KEY, or "
                             "AIIMPL_GITHUB_TOKEN), but sessions of every mapping push to GitHub")]
        return [CheckRow("github", "github", "configured", SKIPPED, "not configured; no mapping yet")]
    out: list[CheckRow | _Check] = [
        _Check("github", "github", f"repository {full_name}",
               lambda full_name=full_name: [_github_row(github, full_name)])
        for full_name in sorted({f"{r.owner}/{r.repo}" for r in rows})
    ]
    return out or [CheckRow("github", "github", "configured", OK,
                            f"configured ({github.mode}); no mapping yet")]


def _github_row(github: Any, full_name: str) -> CheckRow:
    owner, repo = full_name.split("/", 1)
    try:
        if github.mode == "app":
            # the installation is read afresh (a minted token may be cached for the hour), then
            # what a session is given: a token limited to the repository, with its permissions
            github.installation_id(owner, repo)
            github.repository_token(owner, repo)
            detail = "the App is installed and grants a session's permissions"
        else:
            github.repo(owner, repo).list_workflow_runs(per_page=1)
            detail = "the personal token reads the repository"
        return CheckRow("github", "github", f"repository {full_name}", OK, detail)
    except Exception as exc:  # noqa: BLE001 - reported per repository
        return CheckRow("github", "github", f"repository {full_name}", FAILED, _failure(exc))


# -- running the remote checks side by side, within the budget ---------------------------------

#: seconds the report waits for the remote checks, all together; one not done by then is reported
#: failed (its check goes on in the background until its own timeouts end it). Well within
#: gunicorn's graceful timeout (30 s), so that a deploy does not cut ``GET /api/checks``' answer.
BUDGET = 20.0
#: remote checks run at once at most (GitHub asks its clients not to send many requests at once)
CONCURRENCY = 8


@dataclass(frozen=True)
class _Check:
    """A remote check, run in a thread of its own; ``kind``, ``provider`` and ``name`` make the
    line reported when it fails unexpectedly or does not end in time."""

    kind: str
    provider: str
    name: str
    run: Callable[[], list[CheckRow]]

    def failed(self, detail: str) -> list[CheckRow]:
        return [CheckRow(self.kind, self.provider, self.name, FAILED, detail)]

    def outcome(self) -> list[CheckRow]:
        """Its rows, or its failure's (run in an app context)."""
        try:
            return self.run()
        except Exception as exc:  # noqa: BLE001 - reported as its line's failure
            return self.failed(_failure(exc, lambda e: log.warning("checking %s failed", self.provider,
                                                                   exc_info=e)))


@dataclass
class _UnderWay:
    """A check a report started, until it ends (times on the monotonic clock)."""

    started: float
    #: the end of the budget of the report that started it, which waits for it until then
    deadline: float
    ended: threading.Event = field(default_factory=threading.Event)
    #: its rows once it ended; ``None`` when it was not run (that report's budget ran out first)
    rows: list[CheckRow] | None = None


@dataclass(frozen=True)
class _Awaited:
    """A check under way for an earlier report: this one takes its rows instead of starting it."""

    check: _Check
    under_way: _UnderWay


#: guards each app's record of the checks under way (``app.extensions[_UNDER_WAY]``: a check's
#: kind, provider and name -> its :class:`_UnderWay`)
_UNDER_WAY = "aiimpl.checks_under_way"
_under_way_lock = threading.Lock()


def _start_checks(
    app: Any, items: Sequence[CheckRow | _Check], deadline: float
) -> list[CheckRow | _Check | _Awaited]:
    """``items`` with each check that is still under way from an earlier report replaced by an
    :class:`_Awaited`; the others are recorded as under way until ``deadline`` (the end of this
    report's budget; :func:`_ended` takes them off)."""
    now = time.monotonic()
    out: list[CheckRow | _Check | _Awaited] = []
    with _under_way_lock:
        under_way: dict[tuple[str, str, str], _UnderWay] = app.extensions.setdefault(_UNDER_WAY, {})
        for item in items:
            if isinstance(item, _Check):
                key = (item.kind, item.provider, item.name)
                earlier = under_way.get(key)
                if earlier is not None:
                    out.append(_Awaited(item, earlier))
                    continue
                under_way[key] = _UnderWay(now, deadline)
            out.append(item)
    return out


def _ended(app: Any, check: _Check, rows: list[CheckRow] | None) -> None:
    """Take ``check`` off the checks under way, handing its ``rows`` to the reports awaiting it."""
    with _under_way_lock:
        entry = app.extensions.get(_UNDER_WAY, {}).pop((check.kind, check.provider, check.name), None)
    if entry is not None:
        entry.rows = rows
        entry.ended.set()


def _awaited_rows(item: _Awaited, budget: float) -> list[CheckRow]:
    """The rows of a check an earlier report started: its own, or why there are none."""
    under_way = item.under_way
    if under_way.rows is not None:
        return under_way.rows
    if under_way.ended.is_set():
        return item.check.failed(f"not checked: the checks ran out of their {budget:g} s")
    return item.check.failed(f"still waiting for the answer to an earlier check (started "
                             f"{time.monotonic() - under_way.started:.0f} s ago); not checked again "
                             "until it ends")


def _run_side_by_side(items: Sequence[CheckRow | _Check], budget: float) -> list[CheckRow]:
    """``items``' rows in order, each :class:`_Check` run in a thread (:data:`CONCURRENCY` at
    most, each in an app context of its own), waited for ``budget`` seconds at most in all. One
    still under way from an earlier report is not started again: its answer is waited for as long
    as that report waits for it too (within this one's budget), else it is reported failed."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    deadline = time.monotonic() + budget
    planned = _start_checks(app, items, deadline)
    checks = [item for item in planned if isinstance(item, _Check)]
    waiting: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(checks)):
        waiting.put(index)
    results: dict[int, list[CheckRow]] = {}
    started: set[int] = set()
    changed = threading.Condition()

    def work() -> None:
        while time.monotonic() < deadline:
            try:
                index = waiting.get_nowait()
            except queue.Empty:
                return
            with changed:
                started.add(index)
            rows = None
            try:
                with app.app_context():
                    rows = checks[index].outcome()
            finally:
                _ended(app, checks[index], rows)
            with changed:
                results[index] = rows
                changed.notify_all()

    try:
        for _ in range(min(CONCURRENCY, len(checks))):
            threading.Thread(target=work, name="aiimpl-check", daemon=True).start()
        with changed:
            changed.wait_for(lambda: len(results) == len(checks), timeout=budget)
    finally:
        # the checks left unstarted (the budget ran out, or a thread could not start) are not
        # started now, nor under way
        while True:
            try:
                _ended(app, checks[waiting.get_nowait()], None)
            except queue.Empty:
                break
    for item in planned:
        if isinstance(item, _Awaited):
            item.under_way.ended.wait(max(0.0, min(deadline, item.under_way.deadline) - time.monotonic()))
    with changed:
        done, begun = dict(results), set(started)
    out: list[CheckRow] = []
    index = 0
    for item in planned:
        if isinstance(item, CheckRow):
            out.append(item)
            continue
        if isinstance(item, _Awaited):
            out += _awaited_rows(item, budget)
            continue
        if index in done:
            out += done[index]
        elif index in begun:
            out += item.failed(f"no answer within {budget:g} s (the time the checks are given)")
        else:
            out += item.failed(f"not checked: the checks ran out of their {budget:g} s")
        index += 1
    return out


def summary(rows: Sequence[CheckRow]) -> str:
    """The report's last line: how many checks passed, failed and were skipped; when none ran
    (nothing is configured), that is said rather than "all passed". ``aiimpl check`` prints it and
    ``GET /api/checks`` answers it for the admin UI."""
    statuses = [row.status for row in rows]
    passed, failed, skipped = (statuses.count(status) for status in (OK, FAILED, SKIPPED))
    parts = [f"{passed} passed"]
    if failed:
        parts.append(f"{failed} failed")
    if skipped:
        parts.append(f"{skipped} skipped")
    line = f"{len(statuses)} check{'' if len(statuses) == 1 else 's'}: {', '.join(parts)}"
    if not passed and not failed:
        line += " (nothing is configured to check yet)"
    return line


def report(rows: Sequence[CheckRow]) -> dict[str, Any]:
    """The checks as one document: ``GET /api/checks`` answers it and ``aiimpl check --json``
    prints it, so one parser reads both."""
    return {"checks": [row.as_dict() for row in rows], "failed": sum(row.status == FAILED for row in rows),
            "summary": summary(rows)}


def run_checks(github: Callable[[], Any] = github_from_app, *, budget: float | None = None) -> list[CheckRow]:
    """Check every installed tracker and runner backend, and GitHub for each mapped repository;
    the remote checks side by side, waited for ``budget`` seconds at most (default :data:`BUDGET`)."""
    facade = current_app.extensions["aiimpl"]
    rows = list(db.session.scalars(select(MappingRow).order_by(MappingRow.team_key)))
    mode = settings.effective_runner_mode()
    db.session.commit()  # no transaction held across the remote calls
    report: list[CheckRow | _Check] = []
    trackers = facade.ids("ticketing")
    for provider_id in sorted(trackers):
        used = [r.view() for r in rows if (r.ticketing or {}).get("provider") == provider_id]
        report.append(_provider_check("ticketing", provider_id, used))
    report += _missing_rows("ticketing", {
        r.team_key: str(tracker) for r in rows
        if (tracker := (r.ticketing or {}).get("provider")) and tracker not in trackers
    })
    report += _trackerless_rows([r.team_key for r in rows if not (r.ticketing or {}).get("provider")])
    backend_of = {r.team_key: choose_backend(r, mode).backend_id for r in rows}
    for provider_id in sorted(facade.ids("runner")):
        used = [r.view() for r in rows if backend_of[r.team_key] == provider_id]
        report.append(_provider_check("runner", provider_id, used))
    # a forced runner mode whose backend is missing is named by the mode, else the mapping's backend
    report += _missing_rows("runner", {
        r.team_key: r.execution_mode if mode in ("default", "shadow") else f"runner mode {mode}"
        for r in rows if backend_of[r.team_key] is None
    })
    report += _github_rows(rows, github)
    checked = _run_side_by_side(report, BUDGET if budget is None else budget)
    report = (checked + _model_rows(rows, backend_of) + _clock_rows() + _secret_rows()
              + _cap_rows(facade.ids("runner")) + _webhook_rows(rows))
    # what a provider read meanwhile (a stored secret holding its credentials) and a service
    # quoted back in a refusal is masked too, not only the settings each row was masked of
    return [replace(r, name=logs.masked(r.name), detail=logs.masked(r.detail)) for r in report]


def _model_rows(rows: Sequence[MappingRow], backend_of: dict[str, str | None]) -> list[CheckRow]:
    """Whether the sessions of the mappings run by a backend that hands them the orchestrator's
    environment (one that keeps secrets: Fly, Docker) get what their model provider requires
    (:meth:`~aiimpl_core.providers.ModelProvider.required_env_names`, Anthropic's API key), from the
    provider's settings or the team's and global secrets: without it every session fails at its
    agent. A GitHub Actions session reads the repository's Actions secrets, which are not checked."""
    facade = current_app.extensions["aiimpl"]
    runners = facade.classes["runner"]
    # provider -> what was found -> the teams: None (all there), a variable they lack, or a
    # failure of the provider's ("!" and its message)
    found: dict[str, dict[str | None, list[str]]] = {}
    for row in rows:
        backend = runners.get(backend_of[row.team_key] or "")
        if backend is None or not getattr(backend, "supports_secrets", False):
            continue
        if row.provider not in facade.ids("model"):
            continue
        view, provider_id = row.view(), row.provider
        try:
            model = facade.model(provider_id)
            required = model.required_env_names(view)
            if not required:
                continue
            env, _secret_names = mapping_env(row, keeps_secrets=True)  # as the launch makes it
            lacked = [name for name in sorted(required) if not env.get(name)] or [None]
        except Exception as exc:  # noqa: BLE001 - a plugin's failure is this line's, not the report's
            lacked = ["!" + _failure(exc, lambda e, p=provider_id: log.warning(
                "checking the model provider %s failed", p, exc_info=e))]
        for what in lacked:
            found.setdefault(provider_id, {}).setdefault(what, []).append(row.team_key)
    db.session.commit()
    out = []
    for provider_id, outcomes in sorted(found.items()):
        hint = getattr(facade.classes["model"].get(provider_id), "setup_hint", "")
        for what, teams in sorted(outcomes.items(), key=lambda item: item[0] or ""):
            said = ", ".join(teams)
            if what is None:
                out.append(CheckRow("model", provider_id, "session environment", OK,
                                    f"the sessions of {said} get what the model provider needs"))
            elif what.startswith("!"):
                out.append(CheckRow("model", provider_id, "session environment", FAILED,
                                    f"the sessions of {said} could not be checked: {what[1:]}"))
            else:
                out.append(CheckRow("model", provider_id, "session environment", FAILED,
                                    f"the sessions of {said} would get no {what}, so their agent cannot "
                                    f"start{f' ({hint})' if hint else ''}"))
    return out


def _webhook_rows(rows: Sequence[MappingRow]) -> list[CheckRow]:
    """Said, not failed, for mappings without ``AIIMPL_GITHUB_WEBHOOK_SECRET``: GitHub's delivery log
    shows only ``401 Invalid signature`` for every delivery, which sends an operator to rotate a
    secret that was never set."""
    if not rows or current_app.config.get("AIIMPL_GITHUB_WEBHOOK_SECRET"):
        return []
    return [CheckRow("github", "webhook", "secret", SKIPPED,
                     "AIIMPL_GITHUB_WEBHOOK_SECRET is not set: every delivery to /api/github/webhook is "
                     "refused (401 Invalid signature), so a merged pull request does not move its issue "
                     "to done")]


def _clock_rows() -> list[CheckRow]:
    """A failure when this host's clock is off the database server's (see :func:`.poller.clock_problem`)."""
    problem = poller.clock_problem()
    return [CheckRow("database", "database", "clock", FAILED, problem)] if problem else []


def _provider_check(kind: str, provider_id: str, mappings: Sequence[MappingView]) -> _Check:
    return _Check(kind, provider_id, "connection", lambda: _provider_rows(kind, provider_id, mappings))


def _missing_rows(kind: str, provider_of: dict[str, str]) -> list[CheckRow]:
    """A failure for each tracker or runner backend that mappings use (``provider_of``: team key ->
    provider) but no installed, enabled plugin provides: their issues can be neither read nor run."""
    teams_of: dict[str, list[str]] = {}
    for team, provider_id in sorted(provider_of.items()):
        teams_of.setdefault(provider_id, []).append(team)
    return [CheckRow(kind, provider_id, "installed", FAILED,
                     f"no installed plugin provides it (not installed, or disabled), but mappings use it: "
                     f"{', '.join(teams)}")
            for provider_id, teams in sorted(teams_of.items())]


def _trackerless_rows(teams: Sequence[str]) -> list[CheckRow]:
    """A failure for the mappings saved without a tracker (possible before a tracker plugin was
    installed): none of their issues is read, and a dispatch finds no mapping for them."""
    if not teams:
        return []
    return [CheckRow("ticketing", "mappings", "tracker", FAILED,
                     f"mappings name no tracker, so none of their issues is read: {', '.join(teams)}; "
                     f"set one with {set_tracker_command(teams[0])}")]


def _cap_rows(installed: Sequence[str]) -> list[CheckRow]:
    """``AIIMPL_BACKEND_CAPS`` naming a backend no plugin provides: a typo, and that cap never holds."""
    caps = current_app.config.get("AIIMPL_BACKEND_CAPS") or {}
    unknown = sorted(set(caps) - set(installed))
    if not unknown:
        return []
    return [CheckRow("settings", "AIIMPL_BACKEND_CAPS", "backends", FAILED,
                     f"names no installed runner backend: {', '.join(unknown)} (installed: "
                     f"{', '.join(sorted(installed)) or 'none'}); that cap never applies")]


def _secret_rows() -> list[CheckRow]:
    """Stored secrets no key (``AIIMPL_SECRET_KEY`` or a fallback) can decrypt: each a failure (they
    are left out of sessions and of the trackers' credentials until set again); those only a
    fallback decrypts are said on a passing row (to re-encrypt before the fallback is removed)."""
    from . import secrets as secrets_service

    read_by = secrets_service.by_key()
    lost = [(scope, name) for scope, name, key in read_by if key is None]
    earlier = [(scope, name) for scope, name, key in read_by if key == "fallback"]
    colliding = secrets_service.colliding_global_names()
    db.session.commit()
    out: list[CheckRow] = []
    if lost:
        names = ", ".join(f"{name} ({scope or 'global'})" for scope, name in lost)
        why, what = secrets_service.undecryptable(len(lost))
        out.append(CheckRow("secrets", "secrets", "decryptable", FAILED,
                            f"{len(lost)} stored secret(s) cannot be decrypted {why}: {names}; {what}"))
    if earlier:
        names = ", ".join(f"{name} ({scope or 'global'})" for scope, name in earlier)
        status, advice = OK, ": {names}; run `aiimpl secrets rekey` before removing it"
        if current_app.config.get(secrets_service.KEY_MADE_UP):
            # (a process without the key: what it stores, and the run tokens it signs, no other reads)
            status, advice = FAILED, (" while AIIMPL_SECRET_KEY is not set: {names}; set AIIMPL_SECRET_KEY "
                                      "(the same for every process), then run `aiimpl secrets rekey`")
        out.append(CheckRow("secrets", "secrets", "current key", status,
                            f"{len(earlier)} stored secret(s) are read with a key of "
                            f"AIIMPL_SECRET_KEY_FALLBACKS" + advice.format(names=names)))
    if colliding:
        names = ", ".join(f"{name} ({prefix})" for name, prefix in colliding)
        out.append(CheckRow("secrets", "secrets", "global names", FAILED,
                            f"global secret(s) named with a team key prefix, stored before that team's "
                            f"mapping was made: {names}; they can be deleted but not set again: store "
                            f"them under another name"))
    return out
