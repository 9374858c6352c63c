"""The ``fly-machines`` runner backend: each session is one Fly Machine.

Dispatch creates a machine in the configured app (``POST /apps/{app}/machines``) from the session
image, with the mapping's ``machineCpus`` / ``machineMemoryMb``, the session's whole environment
(credentials, model provider variables, ``extraEnv``, team and global secrets), restart policy
``no`` and ``auto_destroy``: the machine runs ``aiimpl session run`` once and is destroyed when it
exits. The machine id is the job's run id. Secrets travel only in ``config.env``; the machine's
metadata (which anyone listing the app's machines sees) carries the job id, issue key, phase and
session mode, nothing else. The creation is never sent twice: when it went out but no machine came
back (a read timeout, a ``5xx``), the app's machines are listed once for the job's, and when Fly
lists none yet :class:`~aiimpl_core.errors.DispatchUnanswered` leaves it to :meth:`poll_runs`,
which finds a machine not linked yet by the job's metadata. A creation Fly answers with
``insufficient_capacity`` (it cannot place the machine, whatever the HTTP status) created
nothing: the dispatch fails at once (:class:`~aiimpl_fly.client.NoCapacity`).

:meth:`FlyMachinesBackend.poll_runs` lists the app's machines once per reconcile cycle
(``include_deleted`` so that a machine that already exited and destroyed itself still reports its
exit code) and reports every in-flight run from that one answer:

==================================  ====================================================
machine                             reported
==================================  ====================================================
``created`` / ``starting``          ``PENDING``
``started`` (and others in flight)  ``RUNNING``
older than its lifetime             stopped and destroyed: ``TIMED_OUT`` /
                                    ``machine_timeout`` (``RUNNING`` while the stop or
                                    the destroy fails: tried again next cycle)
stopped by us for its lifetime      destroyed if it is not yet: ``TIMED_OUT`` /
                                    ``machine_timeout``, on every later poll too
exited with code 0                  ``SUCCEEDED`` (the session reported its own result)
exited non-zero, ``failed`` (Fly    ``FAILED`` / ``session_failed``
could not start it), or gone
without an exit status
absent from the list                ``NOT_FOUND``
==================================  ====================================================

A machine stopped for its lifetime is recognised from Fly's own record of the stop: its latest
``exit`` event says ``requested_stop`` (a stop asked through the API, not a crash) and is stamped
at or after the end of the machine's lifetime. So a poll that comes after the stop (the next
cycle, when the destroy failed, or another poller's cycle before the first one recorded the
timeout) reports the same timeout, never the exit code the stop caused (143, SIGTERM).

Session modes (the mapping's ``sessionMode``, passed to the machine as ``AIIMPL_SESSION_MODE``):
``autonomous`` — the machine ends with the session; ``interactive`` — after the agent ends the
machine stays up for a person to attach (``fly ssh console``) until its lifetime; ``hybrid`` — it
stays up only when the session failed. The session image's entrypoint does the holding; the
lifetime is enforced here, also for machines whose job already ended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NoReturn

from aiimpl_core.errors import DispatchError, DispatchUnanswered, ProviderConfigError, ProviderError
from aiimpl_core.http import host_only_address, path_segment_problem, url_setting_problem
from aiimpl_core.providers import RunnerBackend
from aiimpl_core.types import (
    CheckResult,
    DispatchRequest,
    DispatchResult,
    InFlightRun,
    LogLabel,
    MappingView,
    RunPhase,
    RunState,
    SessionInfo,
    TimeoutReason,
)

from . import config
from .client import FlyClient

#: machine states before the session program runs
PENDING_STATES = frozenset({"created", "starting"})
#: states of a machine whose process has ended (or is ending for good)
ENDED_STATES = frozenset({"stopped", "destroying", "destroyed", "suspended", "failed"})
#: states not worth listing as sessions
GONE_STATES = frozenset({"destroying", "destroyed"})
#: seconds a machine of ours that ended, and no run asks about, is kept before a sweep destroys it
ENDED_SWEEP_SECONDS = 300
#: an image reference: ``[registry[:port]/]path[:tag][@sha256:digest]``, lower-case path
IMAGE_RE = re.compile(
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
#: how far Fly's clock may be from ours: when a stop (an exit event) is matched to a lifetime, and
#: when a machine's creation is compared with its job's dispatch
CLOCK_SLACK = timedelta(minutes=1)
#: how long before a job is recorded dispatched its machine may have been made, at the least: the
#: dispatch waits for Fly's answer first (a lost one for the client's timeout), then lists the
#: machines, each call retried, and the machine found after an answer lost is the run's
MATCH_WINDOW = timedelta(minutes=10)


def _aware(value: datetime) -> datetime:
    # the database may hand back naive UTC timestamps (SQLite)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def exit_event(machine: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The latest ``exit`` event's ``exit_event`` object (``exit_code``, ``oom_killed`` …), if any."""
    latest = _latest_exit(machine)
    return latest[1] if latest else None


def _latest_exit(machine: Mapping[str, Any]) -> tuple[int, Mapping[str, Any]] | None:
    """The latest ``exit`` event's time stamp (milliseconds, 0 when missing) and ``exit_event``."""
    latest: tuple[int, Mapping[str, Any]] | None = None
    for event in machine.get("events") or ():
        if not isinstance(event, dict) or event.get("type") != "exit":
            continue
        request = event.get("request")
        detail = request.get("exit_event") if isinstance(request, dict) else None
        if not isinstance(detail, dict):
            continue
        stamp = event.get("timestamp") if isinstance(event.get("timestamp"), int) else 0
        if latest is None or stamp >= latest[0]:
            latest = (stamp, detail)
    return latest


class FlyMachinesBackend(RunnerBackend):
    """Runs each session on its own Fly Machine."""

    id = "fly-machines"
    display_name = "Fly Machines"
    setup_hint = f"set {config.API_TOKEN} and {config.APP}"
    runner_mode: ClassVar[str | None] = "fly"
    mapping_selectable = True
    supports_sessions = True
    supports_secrets = True
    config_vars = config.CONFIG_VARS

    # -- configuration --

    @classmethod
    def settings_problem(cls, settings: Mapping[str, Any]) -> str | None:
        app = str(settings.get(config.APP) or "").strip()
        if app and (problem := path_segment_problem(app)):
            return f"{config.APP} {problem}"  # (it is put in every path of the Machines API)
        return url_setting_problem(settings, config.API_URL)

    def is_configured(self) -> bool:
        return bool(self.context.setting(config.API_TOKEN)) and bool(self.context.setting(config.APP))

    @property
    def app_name(self) -> str:
        return str(self.context.setting(config.APP, ""))

    @property
    def image(self) -> str:
        return str(self.context.setting(config.IMAGE, config.DEFAULT_IMAGE))

    @property
    def instance(self) -> str:
        """Which orchestrator's machines these are, when several share one app."""
        return str(self.context.setting(config.INSTANCE, config.DEFAULT_INSTANCE) or config.DEFAULT_INSTANCE)

    def ours(self, machine: Mapping[str, Any]) -> bool:
        """Whether this orchestrator created the machine: it carries a job, under this instance (a
        machine created before machines carried their instance counts as the default one's)."""
        meta = (machine.get("config") or {}).get("metadata") or {}
        return (
            isinstance(meta, Mapping)
            and config.META_JOB in meta
            and str(meta.get(config.META_INSTANCE) or config.DEFAULT_INSTANCE) == self.instance
        )

    def machine_name(self, job_id: int) -> str:
        """Names are unique within an app: another instance's carry its name (letters, digits and
        dashes only)."""
        if self.instance == config.DEFAULT_INSTANCE:
            return f"aiimpl-job-{job_id}"
        slug = re.sub(r"[^a-z0-9]+", "-", self.instance.lower()).strip("-")[:40] or "instance"
        return f"aiimpl-{slug}-job-{job_id}"

    def client(self) -> FlyClient:
        self.require_configured()
        http = self.context.http(
            str(self.context.setting(config.API_URL, config.DEFAULT_API_URL)),
            provider="fly",
            headers={"Authorization": f"Bearer {self.context.setting(config.API_TOKEN)}"},
        )
        return FlyClient(http, self.app_name)

    def machine_url(self, machine_id: str) -> str:
        """The machine's page (logs, events) on the Fly dashboard."""
        return f"https://fly.io/apps/{self.app_name}/machines/{machine_id}"

    # -- pre-flight check --

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        """Whether the app exists and the token reads it (one ``GET /apps/{app}``), and whether the
        session image is set. Read-only; the image itself is pulled by Fly only when a machine is
        created, so it is not looked up here."""
        return [self._check_app(), self._check_image(), *self._check_public_url(mappings)]

    def _check_public_url(self, mappings: Sequence[MappingView]) -> list[CheckResult]:
        """A failure when ``AIIMPL_PUBLIC_URL``, which the machines report to, names the orchestrator's
        own host (``127.0.0.1``, ``localhost``) while a mapping runs on Fly: no machine reaches it
        (nothing when it is fine, or no mapping uses Fly)."""
        host = host_only_address(str(self.context.config.get("AIIMPL_PUBLIC_URL") or ""))
        if host is None or not mappings:
            return []
        return [CheckResult(
            "orchestrator URL", False,
            f"AIIMPL_PUBLIC_URL names {host}, this host alone: Fly machines cannot reach it to report "
            "or to fetch their tokens; set it to the orchestrator's address they can reach",
        )]

    def _check_app(self) -> CheckResult:
        name = f"app {self.app_name}"
        try:
            app = self.client().get_app()
        except ProviderError as exc:
            if exc.status in (401, 403):
                refused = f"Fly refused the token (HTTP {exc.status}): {_fly_error(exc)}"
                return CheckResult(name, False, refused)
            return CheckResult(name, False, exc.message)
        if app is None:
            return CheckResult(
                name, False, f"Fly knows no app {self.app_name} for this token: create it (fly apps create) "
                "or check AIIMPL_FLY_APP",
            )
        org = app.get("organization") if isinstance(app.get("organization"), dict) else {}
        found = [f"organization {org['slug']}"] if isinstance(org.get("slug"), str) else []
        if isinstance(app.get("status"), str) and app["status"]:
            found.append(f"status {app['status']}")
        suffix = f" ({', '.join(found)})" if found else ""
        return CheckResult(name, True, f"the token reads the app{suffix}")

    def _check_image(self) -> CheckResult:
        image = self.image
        name = f"image {image}"
        # (the orchestrator gives an unset variable its default, the registry of an app named
        # aiimpl-session: no machine of another app pulls from it)
        given = self.context.setting(config.IMAGE)
        default = image == config.DEFAULT_IMAGE and self.app_name != config.DEFAULT_IMAGE_APP
        if not given or default:
            said = ("is not set" if not given
                    else f"is its default, the registry of app {config.DEFAULT_IMAGE_APP}")
            return CheckResult(
                name, False, f"{config.IMAGE} {said}: push the session image to the app's registry "
                f"(registry.fly.io/{self.app_name}:session) and set {config.IMAGE} (docs/session-image.md)",
            )
        if not IMAGE_RE.fullmatch(image):
            return CheckResult(
                name, False, f"{config.IMAGE} is not an image reference ([registry/]name[:tag])"
            )
        return CheckResult(name, True, f"set by {config.IMAGE}; Fly pulls it when a machine is created")

    # -- dispatch --

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:
        """A machine size Fly refuses (memory not in steps of 256 MB, or beyond 256 MB to 2 GB a
        shared CPU) is said when the mapping is saved, not by every dispatch of it failing."""
        cpus, memory_mb = mapping.get("machineCpus"), mapping.get("machineMemoryMb")
        if not isinstance(cpus, int) or isinstance(cpus, bool):
            cpus = None
        if not isinstance(memory_mb, int) or isinstance(memory_mb, bool):
            memory_mb = None
        problem = config.guest_problem(*config.guest(cpus, memory_mb))
        if problem:
            raise ProviderConfigError(problem, provider=self.id)

    def machine_request(self, request: DispatchRequest) -> dict[str, Any]:
        """The ``CreateMachineRequest`` body for one session."""
        mapping = request.mapping
        env = {str(k): str(v) for k, v in request.env.items()}
        env.setdefault("AIIMPL_SESSION_MODE", mapping.session_mode or "autonomous")
        cpus, memory_mb = config.guest(mapping.machine_cpus or None, mapping.machine_memory_mb or None)
        # no AIIMPL_LOG_URL: the comments link the run's URL, this machine's own page (its logs),
        # which the machine cannot know before it is created (the app's page shows every machine)
        body: dict[str, Any] = {
            "name": self.machine_name(request.job_id),
            "config": {
                "image": self.image,
                "env": env,
                "guest": {"cpu_kind": "shared", "cpus": cpus, "memory_mb": memory_mb},
                "restart": {"policy": "no"},
                "auto_destroy": True,
                "stop_config": dict(config.STOP_CONFIG),
                # public to anyone who lists the app's machines: identity only, never a secret
                "metadata": {
                    config.META_JOB: str(request.job_id),
                    config.META_ISSUE: request.issue_key,
                    config.META_PHASE: request.phase.value,
                    config.META_MODE: mapping.session_mode or "autonomous",
                    config.META_INSTANCE: self.instance,
                },
            },
        }
        region = self.context.setting(config.REGION)
        if region:
            body["region"] = str(region)
        return body

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        client = self.client()
        started = _aware(self.context.clock())
        try:
            machine = client.create_machine(self.machine_request(request))
        except DispatchUnanswered as exc:
            machine = self._created_anyway(client, request, exc, started)
        except ProviderError as exc:
            self._refuse(request, exc)
        machine_id = str(machine["id"])
        self.log.info("job %s: created machine %s", request.job_id, machine_id)
        return DispatchResult(run_id=machine_id, run_url=self.machine_url(machine_id), linked=True)

    def _created_anyway(
        self, client: FlyClient, request: DispatchRequest, exc: DispatchUnanswered, started: datetime
    ) -> dict[str, Any]:
        """The job's machine, when the creation's answer was lost but Fly created it all the same.

        A creation that timed out, or that Fly or a proxy answered 5xx (other than Fly's
        ``insufficient_capacity``, which created nothing), may have reached Fly: its machine then
        runs the session. It is never sent again (a second machine for the job); the
        app's machines are read once, and a live one carrying this job's metadata is the
        dispatch's run. None listed (Fly may still be creating it) or the listing failed:
        :class:`DispatchUnanswered`, so that the core keeps the job dispatched without a run,
        for :meth:`poll_runs` to find its machine by the job's metadata (or to end it
        ``run_not_found`` after the core's window), and backs the dispatcher off.
        """
        why = _redact(exc.message, request)
        try:
            machines = client.list_machines()
        except ProviderError as lookup:
            self.log.warning(
                "job %s: listing the machines after a creation without an answer failed: %s",
                request.job_id, lookup.message,
            )
            found = None
            unseen = "its machines could not be listed"
        else:
            found = next((m for m in machines if self._of_request(m, request, started)), None)
            unseen = "Fly lists no machine of the job yet"
        if found is None:
            raise DispatchUnanswered(
                f"Fly did not answer the creation of machine {self.machine_name(request.job_id)} "
                f"({why}) and {unseen}",
                provider=self.id,
                status=exc.status,
                retry_after=exc.retry_after,
            ) from None
        self.log.warning(
            "job %s: creating its machine got no answer (%s), but Fly created machine %s: linked",
            request.job_id, why, found["id"],
        )
        return found

    def _of_request(
        self, machine: Mapping[str, Any], request: DispatchRequest | InFlightRun, since: datetime
    ) -> bool:
        """Whether a listed machine is the live one this orchestrator created for the job."""
        return (
            self._of_job(machine, request, since)
            and machine.get("state") not in GONE_STATES
            and isinstance(machine.get("id"), str)
            and bool(machine["id"])
        )

    def _of_job(
        self, machine: Mapping[str, Any], job: DispatchRequest | InFlightRun, since: datetime
    ) -> bool:
        """Whether a listed machine is one this orchestrator created for the job: its number and its
        issue, created since its dispatch began (at most :data:`MATCH_WINDOW` before ``since``: when
        the dispatch was recorded, or began for an answer lost). A database restored, or reset,
        numbers jobs again: an old machine is not theirs, not even one of the same issue triggered
        again, whose exit was taken as the new job's run and which a cancel destroyed."""
        meta = (machine.get("config") or {}).get("metadata") or {}
        created = _parse_time(machine.get("created_at"))
        return (
            self.ours(machine)
            and meta.get(config.META_JOB) == str(job.job_id)
            and meta.get(config.META_ISSUE) == job.issue_key
            and (created is None or created >= since - MATCH_WINDOW - CLOCK_SLACK)
        )

    def _refuse(self, request: DispatchRequest, exc: ProviderError) -> NoReturn:
        # Fly's error text may quote the request: keep the session's secret values out of it
        message = _redact(exc.message, request)
        # retry_after kept: the dispatcher backs off for as long as Fly asked
        raise DispatchError(
            message, provider=self.id, status=exc.status, retry_after=exc.retry_after
        ) from None

    # -- reconcile --

    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        if not runs:
            return []
        client = self.client()
        machines = client.list_machines(include_deleted=True)  # the one remote call of the cycle
        ours = [m for m in machines if self.ours(m)]
        by_id = {str(m.get("id")): m for m in ours}
        now = _aware(self.context.clock())
        states: list[RunState] = []
        reported: set[str] = set()
        for run in runs:
            machine = by_id.get(run.run_id or "") or self._linked(ours, run)
            if machine is None:
                states.append(RunState(job_id=run.job_id, phase=RunPhase.NOT_FOUND, run_id=run.run_id))
                continue
            reported.add(str(machine.get("id")))
            states.append(self._state(client, run, machine, now))
        lifetime = max(run.lifetime_seconds for run in runs)
        self._sweep(client, [m for m in ours if str(m.get("id")) not in reported], now, lifetime)
        return states

    def _linked(self, machines: Sequence[dict[str, Any]], run: InFlightRun) -> dict[str, Any] | None:
        """The machine of a run its dispatch did not link (its answer was lost): the job's live
        one, else a destroyed one of it."""
        since = _aware(run.dispatched_at)
        of_job = [m for m in machines if self._of_job(m, run, since)]
        # a live machine wins over a destroyed one of an earlier attempt
        return next((m for m in of_job if m.get("state") not in GONE_STATES), of_job[0] if of_job else None)

    def _state(
        self, client: FlyClient, run: InFlightRun, machine: Mapping[str, Any], now: datetime
    ) -> RunState:
        machine_id = str(machine.get("id"))
        url = self.machine_url(machine_id)
        status = str(machine.get("state") or "")
        if status in ENDED_STATES:
            exited = _latest_exit(machine)
            if exited is not None and self._stopped_for_lifetime(run, exited):
                return self._timed_out(client, run, machine, now)
            detail_of_exit = exited[1] if exited else None
            code = detail_of_exit.get("exit_code") if detail_of_exit else None
            if isinstance(code, int) and code == 0:
                return RunState(
                    job_id=run.job_id, phase=RunPhase.SUCCEEDED, run_id=machine_id, run_url=url, exit_code=0
                )
            if isinstance(code, int):
                if detail_of_exit and detail_of_exit.get("requested_stop") is True:
                    # stopped through the API before its lifetime: a person, or /api/sessions
                    detail = f"the session machine was stopped before it finished (exit code {code})"
                else:
                    detail = f"the session machine exited with code {code}"
                if detail_of_exit and detail_of_exit.get("oom_killed"):
                    detail += " (out of memory)"
            elif status == "failed":
                # Fly's persistent state of a machine it could not start (its image could not be
                # pulled, for one): the session never ran
                detail = "Fly could not start the session machine (state failed; its events say why)"
            elif status == "suspended":
                detail = "the session machine was suspended before it finished"
            else:
                detail = f"the session machine is {status} without an exit status"
            return RunState(
                job_id=run.job_id,
                phase=RunPhase.FAILED,
                run_id=machine_id,
                run_url=url,
                exit_code=code if isinstance(code, int) else None,
                detail=detail,
                log_label=LogLabel.SESSION_FAILED,
                log_excerpt=f"machine {machine_id} ({machine.get('region') or 'unknown region'}): "
                f"{detail}. Logs: {url}",
            )
        age = (now - _aware(run.dispatched_at)).total_seconds()
        if age >= run.lifetime_seconds:
            return self._timed_out(client, run, machine, now)
        phase = RunPhase.PENDING if status in PENDING_STATES else RunPhase.RUNNING
        return RunState(job_id=run.job_id, phase=phase, run_id=machine_id, run_url=url)

    def _stopped_for_lifetime(self, run: InFlightRun, exited: tuple[int, Mapping[str, Any]]) -> bool:
        """Whether the machine's latest exit is a stop asked through the API at or after the end
        of its lifetime: the stop this backend sends a machine past its lifetime."""
        stamp, detail = exited
        if detail.get("requested_stop") is not True:
            return False
        at = datetime.fromtimestamp(stamp / 1000, UTC) if stamp > 0 else _parse_time(detail.get("exited_at"))
        if at is None:
            return False
        lifetime_ends = _aware(run.dispatched_at) + timedelta(seconds=run.lifetime_seconds)
        return at >= lifetime_ends - CLOCK_SLACK

    def _timed_out(
        self, client: FlyClient, run: InFlightRun, machine: Mapping[str, Any], now: datetime
    ) -> RunState:
        """Stop (if it still runs) and destroy (if not yet) a machine past its lifetime, and report
        it ``TIMED_OUT``; ``RUNNING`` while Fly refuses, so that the next cycle tries again (the
        job stays in flight until the machine, which holds the session's secrets, is gone)."""
        machine_id = str(machine.get("id"))
        url = self.machine_url(machine_id)
        status = str(machine.get("state") or "")
        if status not in GONE_STATES:
            try:
                self._remove(client, machine_id, stop=status not in ENDED_STATES)
            except ProviderError as exc:
                self.log.warning(
                    "job %s: stopping machine %s past its lifetime failed: %s", run.job_id, machine_id, exc
                )
                return RunState(job_id=run.job_id, phase=RunPhase.RUNNING, run_id=machine_id, run_url=url)
        minutes = int((now - _aware(run.dispatched_at)).total_seconds() // 60)
        excerpt = (
            f"machine {machine_id} exceeded its lifetime of {run.lifetime_seconds} s "
            f"(dispatched {minutes} min ago); it was stopped and destroyed. Logs: {url}"
        )
        return RunState(
            job_id=run.job_id,
            phase=RunPhase.TIMED_OUT,
            run_id=machine_id,
            run_url=url,
            timeout_reason=TimeoutReason.MACHINE_TIMEOUT,
            log_label=LogLabel.MACHINE_TIMEOUT,
            log_excerpt=excerpt,
        )

    def _remove(self, client: FlyClient, machine_id: str, *, stop: bool = True) -> None:
        """Stop a machine (SIGTERM, so that its session can say it is ending), then destroy it.

        :param stop: false for a machine that is not running any more (stopped, failed).
        """
        if stop:
            try:
                client.stop_machine(machine_id)
            except ProviderError as exc:
                # one Fly will not stop (still being created, held in another state): the forced
                # destroy ends it all the same, and with it the secrets in its environment
                self.log.info("stopping machine %s failed (%s): destroying it at once", machine_id,
                              exc.message)
        client.destroy_machine(machine_id)

    def sweep(self, lifetime_seconds: int) -> None:
        """With no job in flight (the reconciler asks every ten minutes): destroy our machines
        past their lifetime, as :meth:`poll_runs` does while jobs are in flight."""
        client = self.client()
        machines = client.list_machines()
        ours = [m for m in machines if self.ours(m)]
        self._sweep(client, ours, _aware(self.context.clock()), lifetime_seconds)

    def _sweep(
        self,
        client: FlyClient,
        machines: Sequence[Mapping[str, Any]],
        now: datetime,
        lifetime: int,
    ) -> None:
        """Destroy our machines no run asked about: past their lifetime (an interactive session
        held open, or a machine left behind), or ended for :data:`ENDED_SWEEP_SECONDS` (one Fly
        could not start, or suspended: not destroyed by itself, it kept the session's environment,
        secrets included, for the whole lifetime). Best effort, from the same listing."""
        for machine in machines:
            if machine.get("state") in GONE_STATES:
                continue
            created = _parse_time(machine.get("created_at"))
            if created is not None and (now - created).total_seconds() >= lifetime:
                self._sweep_one(client, machine, "past its lifetime")
                continue
            ended = _parse_time(machine.get("updated_at")) if machine.get("state") in ENDED_STATES else None
            if ended is not None and (now - ended).total_seconds() >= ENDED_SWEEP_SECONDS:
                self._sweep_one(client, machine, f"{machine.get('state')} for a while")

    def _sweep_one(self, client: FlyClient, machine: Mapping[str, Any], why: str) -> None:
        try:
            self._remove(client, str(machine.get("id")), stop=machine.get("state") not in ENDED_STATES)
            self.log.info("destroyed machine %s (%s)", machine.get("id"), why)
        except ProviderError as exc:
            self.log.warning("destroying machine %s (%s) failed: %s", machine.get("id"), why, exc)

    def cancel(self, run: InFlightRun) -> None:
        """Stop and destroy the run's machine (best effort). A run its dispatch did not link (the
        creation's answer was lost, or refused) is found by its job's metadata: the machine Fly may
        have created all the same holds the session's secrets, and its agent would work on."""
        if not self.is_configured():
            return
        try:
            client = self.client()
            if run.run_id:
                found = client.get_machine(run.run_id)
                machines = [found] if found is not None else []
            else:
                since = _aware(run.dispatched_at)
                machines = [m for m in client.list_machines() if self._of_request(m, run, since)]
        except ProviderError as exc:
            self.log.warning("job %s: finding its machine failed: %s", run.job_id, exc)
            return
        for machine in machines:
            machine_id = str(machine.get("id"))
            if machine.get("state") in GONE_STATES:
                continue
            try:
                self._remove(client, machine_id, stop=machine.get("state") not in ENDED_STATES)
            except ProviderError as exc:
                self.log.warning("job %s: destroying machine %s failed: %s", run.job_id, machine_id, exc)

    # -- sessions --

    def list_sessions(self) -> Sequence[SessionInfo]:
        if not self.is_configured():
            return []
        out: list[SessionInfo] = []
        for machine in self.client().list_machines():
            meta = (machine.get("config") or {}).get("metadata") or {}
            if not self.ours(machine) or machine.get("state") in GONE_STATES:
                continue
            job = str(meta.get(config.META_JOB))
            machine_id = str(machine.get("id"))
            out.append(
                SessionInfo(
                    id=machine_id,
                    backend=self.id,
                    state=str(machine.get("state") or "unknown"),
                    job_id=int(job) if job.isdigit() else None,
                    issue_key=meta.get(config.META_ISSUE),
                    created_at=_parse_time(machine.get("created_at")),
                    image=(machine.get("config") or {}).get("image"),
                    region=machine.get("region"),
                    log_url=self.machine_url(machine_id),
                )
            )
        return out

    def destroy_session(self, session_id: str) -> bool:
        client = self.client()
        machine = client.get_machine(session_id)
        # only machines this orchestrator created: the app may run others
        if machine is None or not self.ours(machine):
            return False
        self._remove(client, session_id, stop=machine.get("state") not in ENDED_STATES)
        return True


def _fly_error(exc: ProviderError) -> str:
    """Fly's own ``error`` text of a failed call."""
    detail = exc.detail
    if isinstance(detail, dict) and isinstance(detail.get("error"), str):
        return detail["error"]
    return exc.message


def _redact(text: str, request: DispatchRequest) -> str:
    """``text`` without the session's secret values, the longest first: a value that holds another
    (a password in a connection URL) would otherwise keep its rest shown once the shorter went."""
    values = {request.env.get(name) for name in request.secret_names} - {None, ""}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
