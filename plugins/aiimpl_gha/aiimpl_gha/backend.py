"""The ``github-actions`` runner backend: sessions run as GitHub Actions workflow runs.

Dispatch sends ``workflow_dispatch`` to the mapping's repository on its default branch with the
inputs of :data:`~aiimpl_gha.config.WORKFLOW_INPUTS` and asks for the run it makes
(``return_run_details``), so the job is linked to its run at once. A server without that parameter
(GitHub Enterprise Server before it) names no run, nor does a dispatch whose answer was lost; such
a run is found by name: the workflow sets ``run-name`` to the job's ``run_name`` (it contains the
job id). :meth:`GitHubActionsBackend.poll_runs` lists each repository's dispatched runs once per
cycle for all of that repository's in-flight jobs and maps each run's status and conclusion to a
:class:`~aiimpl_core.types.RunPhase`.

Workflow inputs are public to anyone who can read the repository's Actions: the backend never
sends secret values other than the session's own short-lived, single-use credentials (which the
workflow masks first), hence ``supports_secrets = False``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiimpl_core import session_package
from aiimpl_core.errors import DispatchError, ProviderConfigError, ProviderError
from aiimpl_core.github import (
    ORCHESTRATOR_PERMISSIONS,
    DispatchUnanswered,
    GitHub,
    ListingIncomplete,
    Repo,
    github_message,
)
from aiimpl_core.http import host_only_address, is_transient
from aiimpl_core.providers import RunnerBackend
from aiimpl_core.types import (
    CheckResult,
    DispatchRequest,
    DispatchResult,
    InFlightRun,
    LogLabel,
    MappingView,
    Phase,
    RunPhase,
    RunState,
    SyncResult,
    TimeoutReason,
)

from . import config, workflows

#: statuses of a run that has not started its job yet
PENDING_STATUSES = frozenset({"queued", "requested", "waiting", "pending"})
#: runs are listed back to a little before the oldest dispatch: GitHub stamps ``created_at`` with
#: its own clock
CLOCK_SLACK = timedelta(minutes=2)
#: how a failed run's conclusion reads in the failure comment
CONCLUSION_TEXT = {
    "failure": "failed",
    "cancelled": "was cancelled",
    "startup_failure": "failed to start",
    "action_required": "is waiting for approval",
    "skipped": "was skipped",
    "stale": "went stale",
    "neutral": "ended without a result",
}
#: how a workflow's ``state`` other than ``active`` reads in ``aiimpl check``
WORKFLOW_STATE_TEXT = {
    "disabled_manually": "disabled by hand",
    "disabled_inactivity": "disabled for inactivity",
    "disabled_fork": "disabled (a fork's workflows start disabled)",
}
WORKFLOW_FILE_RE = re.compile(r"[A-Za-z0-9_.-]+\.ya?ml")


def _workflow_file_problem(name: str, value: Any, example: str = config.DEFAULT_WORKFLOW_FILE) -> str | None:
    """What is wrong with the workflow file ``value`` of the setting or field ``name`` (unset or
    empty: its default)."""
    if value in (None, "") or (isinstance(value, str) and WORKFLOW_FILE_RE.fullmatch(value)):
        return None
    return (f"{name} must be a workflow file name in .github/workflows (letters, digits, '.', '_', '-', "
            f"ending in .yml or .yaml), e.g. {example}")


#: what a run needs of an App's installation: dispatch, read and cancel workflow runs
RUN_PERMISSIONS: Mapping[str, str] = {"actions": "write"}
#: what the check reads: the workflow files and the repository's runs
CHECK_PERMISSIONS: Mapping[str, str] = {"actions": "read", "contents": "read"}


def _outage(exc: ProviderError) -> bool:
    """Whether GitHub's failure concerns it all (no answer, a 5xx, a rate limit: one worth waiting
    out; credentials it refuses), not one repository (a 404, a 403 without a wait, a 422)."""
    return is_transient(exc) or exc.status == 401


class GitHubActionsBackend(RunnerBackend):
    """Runs sessions as GitHub Actions workflow runs in the mapping's repository."""

    id = "github-actions"
    display_name = "GitHub Actions"
    setup_hint = "set AIIMPL_GITHUB_APP_ID and AIIMPL_GITHUB_PRIVATE_KEY, or AIIMPL_GITHUB_TOKEN"
    runner_mode: ClassVar[str | None] = "gha"
    mapping_selectable = True
    supports_sessions = False
    supports_secrets = False
    supports_workflow_sync = True
    supports_gap_fill = True
    config_vars = config.CONFIG_VARS

    @classmethod
    def settings_problem(cls, config_values: Mapping[str, Any]) -> str | None:
        for name in (config.WORKFLOW_FILE, config.GAP_FILL_WORKFLOW_FILE):
            if problem := _workflow_file_problem(name, config_values.get(name)):
                return problem
        return None

    # -- configuration --

    def github(self) -> GitHub:
        return GitHub.from_config(self.context.config, http=self.context.http)

    def is_configured(self) -> bool:
        return self.github().is_configured()

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:
        value = mapping.get("planningWorkflowFile")
        example = config.DEFAULT_PLANNING_WORKFLOW_FILE
        if problem := _workflow_file_problem("planningWorkflowFile", value, example):
            raise ProviderConfigError(problem, provider=self.id)
        others = {self._setting_file(config.WORKFLOW_FILE, config.DEFAULT_WORKFLOW_FILE),
                  self._setting_file(config.GAP_FILL_WORKFLOW_FILE, config.DEFAULT_GAP_FILL_WORKFLOW_FILE)}
        if isinstance(value, str) and value in others:
            # one file cannot hold two templates: each sync would write one over the other
            raise ProviderConfigError(
                f"planningWorkflowFile must not be {value}, the implementation or gap-fill workflow: "
                "planning runs a workflow file of its own, e.g. ai-implement-planning.yml",
                provider=self.id,
            )

    def _setting_file(self, name: str, default: str) -> str:
        value = str(self.context.setting(name, default))
        if problem := _workflow_file_problem(name, value):
            # a path is no workflow: `../../README.md` was read and overwritten by the sync
            raise ProviderConfigError(problem, provider=self.id)
        return value

    def _repo(self, mapping: MappingView, permissions: Mapping[str, str] = RUN_PERMISSIONS) -> Repo:
        """The mapping's repository, with a token limited to ``permissions`` (an App's): those of a
        run (dispatch, poll, cancel) by default. Every token asked for the sync's as well (contents
        and workflows write) failed every dispatch and poll of an installation without them."""
        return self.github().repo(mapping.owner, mapping.repo, permissions)

    def workflow_file(self, phase: Phase, mapping: MappingView) -> str:
        """Which workflow runs a phase: the mapping's planning workflow, the gap-fill workflow,
        or the implementation workflow."""
        if phase is Phase.PLANNING:
            return mapping.planning_workflow_file or config.DEFAULT_PLANNING_WORKFLOW_FILE
        if phase is Phase.GAP_ANALYSIS:
            return self._setting_file(config.GAP_FILL_WORKFLOW_FILE, config.DEFAULT_GAP_FILL_WORKFLOW_FILE)
        return self._setting_file(config.WORKFLOW_FILE, config.DEFAULT_WORKFLOW_FILE)

    def installs(self) -> workflows.Installs:
        """What the workflows install before the session: ``AIIMPL_GHA_SESSION_PACKAGE`` (by
        default the wheel of ``aiimpl-core`` this orchestrator serves, pinned to its sha256:
        :func:`workflows.core_requirement`, which ``pinned`` names) and ``AIIMPL_GHA_AGENT_PACKAGE``
        (``none``: no agent).

        :raises ProviderConfigError: when a setting is not a safe line of package specs, or no
            package is set and this orchestrator cannot serve its own (``AIIMPL_PUBLIC_URL`` unset
            or not a URL a workflow can install from, no installed distribution).
        """
        # (spaces alone are unset too, as an empty variable is)
        session = str(self.context.setting(config.SESSION_PACKAGE, "")).strip(" ")
        agent = str(self.context.setting(config.AGENT_PACKAGE, "")).strip(" ") or config.DEFAULT_AGENT_PACKAGE
        pinned = None
        if session:
            words = workflows.install_words(config.SESSION_PACKAGE, session)
        else:
            requirement, pinned = workflows.core_install(self.context.setting(config.PUBLIC_URL))
            words = (requirement,)
        return workflows.Installs(
            session=words,
            agent=() if agent.lower() == config.NO_AGENT
            else workflows.install_words(config.AGENT_PACKAGE, agent),
            pinned=pinned,
        )

    def templates(
        self, mapping: MappingView, installs: workflows.Installs | None = None
    ) -> list[workflows.WorkflowTemplate]:
        """The templates a mapping's repository holds, installing :meth:`installs` (unless given),
        each job's timeout from the session lifetime (``AIIMPL_SESSION_LIFETIME_SECONDS``).

        :raises ProviderConfigError: when two templates would be installed under one file name
            (each sync would write one over the other, and the repository never be up to date), or
            as :meth:`installs`.
        """
        lifetime = int(self.context.config.get("AIIMPL_SESSION_LIFETIME_SECONDS") or 3600)
        minutes = workflows.timeout_minutes(lifetime)
        phases = [("ai-implement.yml", Phase.IMPLEMENTATION),
                  ("ai-implement-gap-fill.yml", Phase.GAP_ANALYSIS)]
        if mapping.planning_enabled or mapping.planning_workflow_file:
            phases.append(("ai-implement-planning.yml", Phase.PLANNING))
        installs = installs or self.installs()
        out = [workflows.WorkflowTemplate(name, self.workflow_file(phase, mapping), installs, minutes)
               for name, phase in phases]
        files = [t.file for t in out]
        shared = sorted({f for f in files if files.count(f) > 1})
        if shared:
            raise ProviderConfigError(
                f"two workflows of {mapping.team_key} would be installed as {', '.join(shared)}: give each "
                f"phase a file of its own ({config.WORKFLOW_FILE}, {config.GAP_FILL_WORKFLOW_FILE}, the "
                "mapping's planningWorkflowFile)",
                provider=self.id,
            )
        return out

    # -- dispatch --

    def workflow_inputs(self, request: DispatchRequest) -> dict[str, str]:
        """The ``workflow_dispatch`` inputs for a request (exactly :data:`config.WORKFLOW_INPUTS`).

        Secret values other than the session's own credentials are dropped: inputs are public.
        """
        env = dict(request.env)
        inputs = {"run_name": request.run_name}
        for name, var in {**config.IDENTITY_INPUTS, **config.CREDENTIAL_INPUTS}.items():
            inputs[name] = env.pop(var, "")
        inputs["job_id"] = inputs["job_id"] or str(request.job_id)
        inputs["phase"] = inputs["phase"] or request.phase.value
        inputs["issue_key"] = inputs["issue_key"] or request.issue_key
        dropped = sorted(k for k in env if k in request.secret_names)
        if dropped:
            self.log.info(
                "job %s: not passing secret variables %s as workflow inputs (they are public); "
                "the workflow reads model keys from the repository's Actions secrets",
                request.job_id,
                ", ".join(dropped),
            )
        public = {k: v for k, v in sorted(env.items()) if k not in request.secret_names}
        inputs["env"] = json.dumps(public, separators=(",", ":"))
        return inputs

    def _dispatch(self, request: DispatchRequest) -> DispatchResult:
        mapping = request.mapping
        workflow = self.workflow_file(request.phase, mapping)
        repo = self._repo(mapping)
        started = datetime.now(UTC)
        try:
            run = repo.dispatch_workflow(workflow, mapping.default_branch, self.workflow_inputs(request))
        except DispatchUnanswered as exc:
            # no answer, or a 5xx: GitHub may have made the run all the same
            return self._made_all_the_same(repo, request, exc, started, workflow)
        except ProviderError as exc:
            message = github_message(exc)
            # retry_after kept: a rate-limited dispatch backs the dispatcher off for as long as
            # GitHub asked (a 403 rate limit counts as transient only through it)
            raise DispatchError(
                f"GitHub refused to dispatch {workflow} on {mapping.owner}/{mapping.repo}: {message}",
                provider=self.id,
                status=exc.status,
                detail=message,
                retry_after=exc.retry_after,
            ) from None
        if run is None:
            # a server without return_run_details names no run: poll_runs links it by its name
            return DispatchResult()
        return DispatchResult(run_id=run.id, run_url=run.html_url, linked=True)

    def _made_all_the_same(
        self, repo: Repo, request: DispatchRequest, exc: ProviderError, started: datetime, workflow: str
    ) -> DispatchResult:
        """The run of a dispatch whose answer was lost (no answer, or a 5xx): GitHub may have made
        it all the same, so the dispatch is never sent again. One listing back to the dispatch looks
        for the run by its name: found, the job is linked to it at once. Not found (yet: GitHub
        lists a run it made only after a while), :class:`DispatchUnanswered` is raised: the core
        keeps the job dispatched without a run, as on a server that names none (:meth:`poll_runs`
        keeps looking for it by its name each cycle, and a run never listed ends its job
        ``run_not_found`` after the core's window), and backs the dispatcher off, so the next
        issues wait rather than each dispatch into the same outage."""
        try:
            found = _run_named(repo, request.run_name, started - CLOCK_SLACK)
        except ProviderError as lookup:
            found = None
            self.log.warning(
                "job %s: looking for the run of a dispatch without an answer failed: %s",
                request.job_id,
                github_message(lookup),
            )
        if found is None:
            message = github_message(exc)
            raise DispatchUnanswered(
                f"GitHub did not answer the dispatch of {workflow} on {request.mapping.owner}/"
                f"{request.mapping.repo} ({message}) and lists no run of it yet",
                provider=self.id,
                status=exc.status,
                detail=message,
                retry_after=exc.retry_after,
            ) from None
        self.log.warning(
            "job %s: the dispatch failed without a refusal (%s) but GitHub made its run %s: linked",
            request.job_id,
            github_message(exc),
            found["id"],
        )
        return DispatchResult(run_id=str(found["id"]), run_url=found.get("html_url"), linked=True)

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        return self._dispatch(request)

    def dispatch_gap_fill(self, request: DispatchRequest) -> DispatchResult:
        if request.phase is not Phase.GAP_ANALYSIS:
            request = dataclasses.replace(request, phase=Phase.GAP_ANALYSIS)
        return self._dispatch(request)

    # -- reconciling --

    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        """One listing per repository for all its in-flight jobs; runs matched by name (or id).

        A repository whose listing fails is left out of this cycle (its jobs keep their status);
        when every listing fails for an outage of GitHub's (no answer, a 5xx, a rate limit, the
        credentials refused) the error is raised so the reconciler backs off. A refusal that
        concerns the repositories asked about (404: renamed, deleted, the App removed from them;
        403 without a wait: Actions disabled) is no outage: backing the whole backend off for it
        held the dispatch of every other repository's issues until those jobs ran out.

        A listing GitHub ended before the oldest dispatch (:class:`ListingIncomplete`: as many
        pages as it lists were full, a page was short of its ``total_count``, or a page repeated
        the one before it) is used as far as it goes: a linked run past it is read by its id, and a
        job not linked yet whose run may lie past it (dispatched before the oldest run listed) is
        left out of this cycle, as on a failed listing, rather than reported not found: that ended
        it ``run_not_found`` though its run ran.
        """
        by_repo: dict[tuple[str, str], list[InFlightRun]] = defaultdict(list)
        for run in runs:
            by_repo[(run.mapping.owner.lower(), run.mapping.repo.lower())].append(run)
        states: list[RunState] = []
        errors: list[ProviderError] = []
        for (owner, name), repo_runs in by_repo.items():
            since = min(_aware(r.dispatched_at) for r in repo_runs) - CLOCK_SLACK
            repo = self._repo(repo_runs[0].mapping)
            try:
                listed, cut = _dispatched_runs(repo, since)
            except ProviderError as exc:
                self.log.warning("listing workflow runs of %s/%s failed: %s", owner, name, exc.message)
                errors.append(exc)
                continue
            if cut is not None:
                self.log.warning("%s; jobs not linked yet whose run may lie past them are left as they are",
                                 cut.message)
            by_id = {str(r.get("id")): r for r in listed}
            by_title = runs_by_name(listed)
            for run in repo_runs:
                found = by_id.get(run.run_id or "") or by_title.get(run.run_name)
                if found is None and not run.run_id and cut is not None and not _listed_back_to(cut, run):
                    continue  # (its run may lie past the runs listed: not known to be missing)
                if found is None and run.run_id:
                    # linked, but beyond the pages read: ask for it rather than call it lost
                    try:
                        found = repo.get_run(run.run_id)
                    except ProviderError as exc:
                        if exc.status != 404:
                            self.log.warning(
                                "reading run %s of %s/%s failed: %s", run.run_id, owner, name, exc.message
                            )
                            continue
                lifetime_ends = _aware(run.dispatched_at) + timedelta(seconds=run.lifetime_seconds)
                states.append(run_state(run.job_id, found, lifetime_ends=lifetime_ends))
        outages = [e for e in errors if _outage(e)]
        if outages and len(errors) == len(by_repo):
            raise outages[0]
        return states

    def cancel(self, run: InFlightRun) -> None:
        """Cancel the job's workflow run (an operator's cancel, the reconciler's safety net for a
        run past its lifetime).

        A run not linked yet (on a server whose dispatch answer names no run, an operator cancelled
        the job before a reconcile cycle linked it) is looked up by its name, as :meth:`poll_runs`
        links it: its job has ended, so no later cycle would find it, and the run would go on. One
        GitHub has not listed yet is left to fail on its job's nonce, which is no longer accepted;
        one that already completed is left as it is.
        """
        if not self.is_configured():
            return
        run_id = run.run_id
        try:
            repo = self._repo(run.mapping)
            if not run_id:
                found = _run_named(repo, run.run_name, _aware(run.dispatched_at) - CLOCK_SLACK)
                if found is None:
                    self.log.info("job %s: no workflow run named %r to cancel yet", run.job_id, run.run_name)
                    return
                run_id = str(found["id"])
            if repo.cancel_run(run_id):
                self.log.info("job %s: cancelled workflow run %s", run.job_id, run_id)
        except ProviderError as exc:
            self.log.warning(
                "job %s: cancelling workflow run %s failed: %s",
                run.job_id,
                run_id or repr(run.run_name),
                github_message(exc),
            )

    # -- workflow sync --

    def sync_workflows(self, mapping: MappingView) -> SyncResult:
        """Write the workflow files; with a warning when ``AIIMPL_PUBLIC_URL`` names an address
        only this host reaches (the default ``http://127.0.0.1:8000`` among them), which GitHub's
        runners cannot reach: the files are written all the same (a runner on this very host
        reaches it), as ``aiimpl check`` fails its ``public URL`` line for it."""
        repo = self._repo(mapping, ORCHESTRATOR_PERMISSIONS)  # (the files: contents and workflows write)
        result = workflows.sync(repo, mapping, self.templates(mapping))
        unreachable = self._public_url_result([mapping])
        if unreachable is None:
            return result
        return dataclasses.replace(result, warnings=(*result.warnings, unreachable.detail))

    # -- pre-flight check --

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        """Whether each workflow :meth:`sync_workflows` installs is on the mapping's default branch,
        still what it would write, and enabled on GitHub (read-only: per repository and file one
        contents read and, for a current file, one read of the workflow's ``state``).

        Settings of what the workflows install that cannot be written into them fail one
        ``session program`` line, and no repository is read: what the files should hold is not known.
        An ``AIIMPL_PUBLIC_URL`` that only this host reaches (loopback, ``localhost``, ``0.0.0.0``)
        fails a ``public URL`` line: GitHub's runners cannot reach it. A file out of date that pins
        a wheel of this orchestrator it no longer serves (neither runs nor keeps) says so: its
        sessions fail at their install. A current file has the core keep the wheel it pins
        (:func:`aiimpl_core.session_package.pin`), as a sync does.
        """
        if not mappings:
            return []
        head = [row] if (row := self._public_url_result(mappings)) is not None else []
        try:
            installs = self.installs()
        except ProviderConfigError as exc:
            return [*head, CheckResult("session program", False, exc.message)]
        # mappings sharing a repository, branch and file are checked once
        Wanted = tuple[MappingView, workflows.WorkflowTemplate, list[str]]  # a mapping using it, teams
        wanted: dict[tuple[str, str, str, str], Wanted] = {}
        for mapping in mappings:
            for tpl in self.templates(mapping, installs):
                key = (mapping.owner.lower(), mapping.repo.lower(), mapping.default_branch, tpl.path)
                wanted.setdefault(key, (mapping, tpl, []))[2].append(mapping.team_key)
        results: list[CheckResult] = head
        failed: dict[tuple[str, str], str] = {}  # a repository that could not be read is not asked again
        seen_repos: dict[tuple[str, str], str | None] = {}  # asked once per repository (see below)
        current_found = False
        for (owner, name, _, _), (mapping, tpl, teams) in wanted.items():
            label = f"{workflows.LABELS.get(tpl.template, 'workflow')} {mapping.owner}/{mapping.repo}"
            where = f"{tpl.path} on {mapping.default_branch}"
            if (owner, name) in failed:
                # (the first failure's message names the file it read: said as that file's)
                results.append(CheckResult(label, False, f"could not read {where}: not asked, as reading "
                                                         f"{failed[(owner, name)]}"))
                continue
            repo = self._repo(mapping, CHECK_PERMISSIONS)
            try:
                current = repo.get_file(tpl.path, ref=mapping.default_branch)
            except ProviderError as exc:
                failed[(owner, name)] = f"{tpl.path} failed: {github_message(exc)}"
                results.append(CheckResult(label, False, f"could not read {where}: {github_message(exc)}"))
                continue
            fix = f"run aiimpl mappings sync-workflows {min(teams)}"
            if current is None and (owner, name) not in seen_repos:
                seen_repos[(owner, name)] = _repository_unseen(repo)
            if current is None and (unseen := seen_repos[(owner, name)]) is not None:
                failed[(owner, name)] = f"{tpl.path} failed: {unseen}"
                results.append(CheckResult(label, False, f"could not read {where}: {unseen}"))
                continue
            if current is None:
                results.append(CheckResult(label, False, f"{where} is missing: {fix}"))
                continue
            if current.content != tpl.content():
                why = _install_differences(current.content, tpl.installs)
                lost = self._wheel_not_served(current.content, tpl.installs)
                if lost is not None:
                    results.append(CheckResult(
                        label, False, f"{where} is out of date{why} and pins a wheel this orchestrator no "
                                      f"longer serves ({lost.filename}): its sessions will fail at install "
                                      f"until a sync; {fix}"))
                else:
                    results.append(CheckResult(label, False, f"{where} is out of date{why}: {fix}"))
                continue
            current_found = True
            try:
                workflow = repo.get_workflow(tpl.file)
            except ProviderError as exc:
                failed[(owner, name)] = f"the state of {tpl.file} on GitHub failed: {github_message(exc)}"
                detail = f"could not read the state of {tpl.file} on GitHub: {github_message(exc)}"
                results.append(CheckResult(label, False, detail))
                continue
            results.append(_state_result(label, where, tpl.file, mapping, workflow))
        if current_found and installs.pinned is not None:
            session_package.pin(installs.pinned)
        return results

    def _public_url_result(self, mappings: Sequence[MappingView]) -> CheckResult | None:
        """The failed ``public URL`` line when ``AIIMPL_PUBLIC_URL`` names a host only this one
        reaches; ``None`` otherwise."""
        host = host_only_address(str(self.context.setting(config.PUBLIC_URL) or ""))
        if host is None:
            return None
        teams = ", ".join(sorted({m.team_key for m in mappings}))
        if str(self.context.setting(config.SESSION_PACKAGE, "")).strip(" "):
            cannot = "their sessions cannot report to it"
        else:
            cannot = "their sessions can neither install the session program from it nor report to it"
        return CheckResult(
            "public URL",
            False,
            f"{config.PUBLIC_URL} names {host}, an address of this host only: GitHub's runners cannot reach "
            f"it, so {cannot} and every job of {teams} fails; set it to the URL runners reach this "
            "orchestrator at",
        )

    def _wheel_not_served(
        self, content: bytes, wanted: workflows.Installs
    ) -> workflows.PinnedWheel | None:
        """The wheel of this orchestrator an installed workflow pins when it is served no more
        (neither the running one nor one kept); ``None`` when it is, or the file pins none."""
        found = workflows.installed(content.decode("utf-8", "replace"))
        if found is None:
            return None
        wheel = workflows.pinned_wheel(found.session, self.context.setting(config.PUBLIC_URL))
        if wheel is None:
            return None
        running = wanted.pinned
        if running is not None and (wheel.sha256, wheel.filename) == (running.sha256, running.filename):
            return None  # (the wheel the files are synced to now: served, whatever the path)
        return None if wheel.served() else wheel


def _install_differences(content: bytes, wanted: workflows.Installs) -> str:
    """How an installed workflow's packages differ from what a sync would write, said as
    `` (it installs aiimpl-core, not aiimpl-core @ https://…#sha256=…)``; empty when they do not (or
    cannot be read)."""
    found = workflows.installed(content.decode("utf-8", "replace"))
    if found is None:
        return ""
    said = []
    if found.session != wanted.session:
        said.append(f"it installs {' '.join(found.session)}, not {' '.join(wanted.session)}")
    if found.agent != wanted.agent:
        said.append(f"its agent is {' '.join(found.agent) or 'none'}, not {' '.join(wanted.agent) or 'none'}")
    return f" ({'; '.join(said)})" if said else ""


def _state_result(
    label: str, where: str, file: str, mapping: MappingView, workflow: Mapping[str, Any] | None
) -> CheckResult:
    """The check line of a workflow file that is installed and current, by GitHub's ``state``."""
    if workflow is None:
        # GitHub registers a workflow shortly after the push that adds its file, so a file just
        # installed can answer 404 for a while; it starts out active, hence no failure
        return CheckResult(
            label,
            True,
            f"{where} is installed and current; GitHub has not registered it as a workflow yet, "
            "so whether it is enabled is not known",
        )
    state = workflow.get("state")
    if state == "active":
        return CheckResult(label, True, f"{where} is installed, current and enabled")
    what = WORKFLOW_STATE_TEXT.get(str(state), f"in state {state}")
    full_name = f"{mapping.owner}/{mapping.repo}"
    return CheckResult(
        label,
        False,
        f"{where} is installed and current but {what} on GitHub, so every dispatch fails: enable it in "
        f"the Actions tab of {full_name}, or run gh workflow enable {file} --repo {full_name}",
    )


def runs_by_name(listed: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest run of each name in a listing (GitHub lists runs newest first).

    A run's name is its ``display_title``, the rendered ``run-name`` (``name`` is the workflow's).
    """
    out: dict[str, dict[str, Any]] = {}
    for run in listed:
        if isinstance(run.get("display_title"), str) and run.get("id") is not None:
            out.setdefault(run["display_title"], run)
    return out


def _dispatched_runs(repo: Repo, since: datetime) -> tuple[list[dict[str, Any]], ListingIncomplete | None]:
    """The ``workflow_dispatch`` runs created at or after ``since``, newest first (one listing),
    and, when GitHub's listing ended before ``since``, how far it went (the runs read are good).

    :raises ProviderError: when the listing fails.
    """
    listed: list[dict[str, Any]] = []
    try:
        for run in repo.iter_workflow_runs(since, event="workflow_dispatch"):
            listed.append(run)
    except ListingIncomplete as cut:
        return listed, cut
    return listed, None


def _listed_back_to(cut: ListingIncomplete, run: InFlightRun) -> bool:
    """Whether a listing cut short still reaches back to ``run``'s dispatch: its run, made after
    the dispatch, would then be among the runs listed."""
    return cut.reached is not None and _aware(run.dispatched_at) - CLOCK_SLACK > cut.reached


def _run_named(repo: Repo, name: str, since: datetime) -> dict[str, Any] | None:
    """The newest ``workflow_dispatch`` run named ``name`` created at or after ``since`` (one
    listing), ``None`` when GitHub lists none.

    :raises ListingIncomplete: when none of the runs read is it and GitHub's listing ended before
        ``since``: it may lie past them.
    """
    listed, cut = _dispatched_runs(repo, since)
    found = runs_by_name(listed).get(name)
    if found is None and cut is not None:
        raise cut
    return found


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _ended_at(run: Mapping[str, Any]) -> datetime | None:
    try:
        return _aware(datetime.fromisoformat(str(run["updated_at"]).replace("Z", "+00:00")))
    except (KeyError, ValueError):
        return None


def run_state(
    job_id: int, run: Mapping[str, Any] | None, *, lifetime_ends: datetime | None = None
) -> RunState:
    """A GitHub workflow run (``None``: not listed yet) as the reconciler's :class:`RunState`.

    GitHub ends a job that reaches its ``timeout-minutes`` with the conclusion ``cancelled``, as it
    does a run a person cancelled: a run cancelled at or after ``lifetime_ends`` (the end of the
    session's lifetime) is the run's timeout, one cancelled before it a failure.
    """
    if run is None:
        return RunState(job_id=job_id, phase=RunPhase.NOT_FOUND)
    run_id = str(run["id"])
    url = run.get("html_url")
    status = run.get("status")
    conclusion = run.get("conclusion")
    if status in PENDING_STATUSES:
        return RunState(job_id=job_id, phase=RunPhase.PENDING, run_id=run_id, run_url=url)
    if status != "completed":
        return RunState(job_id=job_id, phase=RunPhase.RUNNING, run_id=run_id, run_url=url)
    if conclusion == "success":
        return RunState(job_id=job_id, phase=RunPhase.SUCCEEDED, run_id=run_id, run_url=url)
    ended = _ended_at(run) if conclusion == "cancelled" else None
    past_lifetime = lifetime_ends is not None and ended is not None and ended >= lifetime_ends - CLOCK_SLACK
    if conclusion == "timed_out" or past_lifetime:
        return RunState(
            job_id=job_id,
            phase=RunPhase.TIMED_OUT,
            run_id=run_id,
            run_url=url,
            timeout_reason=TimeoutReason.TIMED_OUT,
            detail=f"the GitHub Actions run timed out: {url}",
        )
    what = CONCLUSION_TEXT.get(str(conclusion), f"ended with conclusion {conclusion or 'none'}")
    return RunState(
        job_id=job_id,
        phase=RunPhase.FAILED,
        run_id=run_id,
        run_url=url,
        log_label=LogLabel.SESSION_FAILED,
        detail=f"the GitHub Actions run {what}: {url}",
    )


def _repository_unseen(repo: Repo) -> str | None:
    """Why a file GitHub answered 404 for is no missing file, when the repository itself is not
    there for these credentials (GitHub answers a file read in it alike): asked with one page of
    the repository's runs, only when a file is missing. ``None`` when the repository answers (or
    the question fails otherwise: the file is then said to be missing, as before)."""
    try:
        repo.list_workflow_runs(per_page=1)
    except ProviderError as exc:
        if exc.status == 404:
            return (f"GitHub knows no repository {repo.full_name} these credentials can see, or its "
                    "Actions are turned off (is the mapping's owner/repo right?)")
    return None
