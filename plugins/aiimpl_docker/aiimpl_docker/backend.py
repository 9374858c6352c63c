"""The ``local-docker`` runner backend: each session is one container on a Docker-API engine.

Chosen by the global runner mode ``local`` (a mapping's ``executionMode`` cannot name it, so the
reference's ``executionMode must be 'github-actions' or 'fly-machines'`` stays as it is).

Dispatch starts the session image with the session's whole environment (credentials, model
provider variables, ``extraEnv``, team and global secrets), labels carrying the job's identity
(never a secret), and the mapping's ``machineCpus`` / ``machineMemoryMb`` as CPU and memory
limits. Containers are not started with auto-remove: with it, Podman's Docker-compatible API
reports exit code 0 for a failed container, and the log tail would be gone.

A dispatch whose answer was lost (:meth:`LocalDockerBackend._create`,
:meth:`LocalDockerBackend._start`) never makes a second session: a create is sent again under the
same name, which the engine gives one container only; a start is never sent again, the container's
state is read instead. When that cannot tell whether the session runs, the dispatch raises
:class:`~aiimpl_core.errors.DispatchUnanswered`, and :meth:`LocalDockerBackend.poll_runs` finds the
container by its labels.

:meth:`LocalDockerBackend.poll_runs` lists our containers (by label) once per reconcile cycle:

===================================  ======================================================
container                            reported
===================================  ======================================================
``created``                          ``PENDING`` (without its id for a run not linked: its
                                     job ends ``run_not_found`` if it never starts)
``running`` (``paused``, …)          ``RUNNING``
running past its lifetime            stopped (resumed first if paused), log tail read:
                                     ``TIMED_OUT`` / ``container_timeout``
ended at or after the end of its     ``TIMED_OUT`` / ``container_timeout`` (our own stop,
lifetime                             seen again by a later poll, or its hold ending)
exited non-zero (or ``dead``)        log tail read: ``FAILED`` / ``container_failed``
                                     (``out of memory`` said when the kernel killed it)
exited 0                             log tail read: ``SUCCEEDED`` (the session reported its
                                     own result)
absent                               ``NOT_FOUND``
===================================  ======================================================

An ended container is kept while its job is in flight, whatever its outcome: every poll (the
next cycle, should this one's outcome fail to be recorded, or another poller's) reads the same
exit code, end time and log tail, and so reports the same outcome. A container stopped for its
lifetime is recognised on later polls by when it ended: at or after the end of its lifetime, so
the exit code our stop caused (143, or the session's own after SIGTERM) is not read as a failure.
A job's container is removed once the job has ended (:meth:`LocalDockerBackend.cleanup_job`, run
by the plugin's ``aiimpl_job_status_changed``), and the sweep of every poll removes whatever that
missed. Log tails are redacted of the session's secret values (the variables
``AIIMPL_SECRET_NAMES`` lists) before they go anywhere; the core masks them again, in all their
encoded forms, with every secret the orchestrator knows.

:meth:`LocalDockerBackend.cancel` and :meth:`LocalDockerBackend.destroy_session` stop a container
whose process runs the Docker way — its stop signal (SIGTERM), then SIGKILL once
``AIIMPL_DOCKER_STOP_GRACE_SECONDS`` (120 s) have passed — so that the session saves its work and
reports, and remove it once it has stopped. The stop runs in a thread of its own: neither the poll
cycle nor an API request waits for the grace period. A container that has already ended (or never
started) is removed at once.
"""

from __future__ import annotations

import atexit
import math
import os
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiimpl_core.errors import DispatchError, DispatchUnanswered, ProviderConfigError, ProviderError
from aiimpl_core.http import host_only_address
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

from . import client as engine
from . import config

ENDED = frozenset({"exited", "dead", "stopped"})
PENDING = frozenset({"created", "configured", "initialized"})
SECRET_NAMES_VAR = "AIIMPL_SECRET_NAMES"
#: ended containers of jobs no longer in flight are swept once at least this old
SWEEP_AFTER = timedelta(minutes=5)
#: how far the engine's clock may be from ours: when a container's end is matched to its lifetime,
#: and when its creation is compared with its job's dispatch
CLOCK_SLACK = timedelta(minutes=1)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


#: how long before a job is recorded dispatched its container may have been made, at the least:
#: the dispatch waits for the engine's answers first (a lost one for the engine's timeout, more
#: than once), and the container found after an answer lost is the run's
MATCH_WINDOW = timedelta(minutes=10)


def _made_since(
    run: InFlightRun, summaries: Iterable[dict[str, Any]], timeout_seconds: float
) -> Iterator[dict[str, Any]]:
    """The containers of ``summaries`` made since the run's dispatch began: at most
    :data:`MATCH_WINDOW`, or three of the engine's timeouts, before it was recorded (a container of
    the same job number and issue made earlier, before a database restore numbered jobs again, is
    not the run's)."""
    window = max(MATCH_WINDOW, timedelta(seconds=3 * timeout_seconds))
    since = _aware(run.dispatched_at) - window - CLOCK_SLACK
    for summary in summaries:
        created = _parse_time(summary.get("Created"))
        if created is None or created >= since:
            yield summary


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # engines stamp nanoseconds; Python reads at most microseconds
    if "." in text:
        head, _, rest = text.partition(".")
        # the fraction's digits only: the offset that follows (``+02:00``) is kept as it is
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _broken(action: str, problem: str) -> ProviderError:
    """The engine answered something that is not what the Engine API describes: the read fails
    (a cycle skipped, an error shown) rather than take it for a container missing, ended or of
    another job."""
    return ProviderError(
        f"local-docker: {action} failed: the engine's answer {problem}", provider="local-docker"
    )


def _listed(answer: Any, action: str) -> list[dict[str, Any]]:
    """``GET /containers/json``'s answer as summaries, each with an ``Id``, ``Labels`` and
    ``State``: an entry left out or read without them would leave its job's run not found (its job
    ended ``run_not_found``), or report a container running whose state is not known.

    :raises ProviderError: when the answer is not a list of such objects.
    """
    if not isinstance(answer, list):
        raise _broken(action, f"is a {type(answer).__name__}, not a list of containers")
    for index, entry in enumerate(answer):
        if not isinstance(entry, dict):
            raise _broken(action, f"lists a {type(entry).__name__} (entry {index}), not a container")
        problem = (
            "no Id" if not isinstance(entry.get("Id"), str) or not entry["Id"]
            else "no Labels object" if not isinstance(entry.get("Labels"), dict)
            else "no State" if not isinstance(entry.get("State"), str)
            else None
        )
        if problem:
            raise _broken(action, f"lists a container with {problem} (entry {index})")
    return [dict(entry) for entry in answer]


def _inspected(answer: Any, action: str) -> dict[str, Any]:
    """``GET /containers/{id}/json``'s answer, with its ``Id`` and its ``State`` object (a
    ``Status`` string): without them a container would be taken for another (an id ``None``) or
    for one whose process runs.

    :raises ProviderError: when the answer is not such an object.
    """
    if not isinstance(answer, dict):
        raise _broken(action, f"is a {type(answer).__name__}, not a container")
    state = answer.get("State")
    if not isinstance(answer.get("Id"), str) or not answer["Id"]:
        raise _broken(action, "has no container Id")
    if not isinstance(state, dict) or not isinstance(state.get("Status"), str):
        raise _broken(action, "has no State with a Status")
    if not isinstance(answer.get("Config") or {}, dict):
        raise _broken(action, "has a Config that is not an object")
    return dict(answer)


@dataclass(frozen=True)
class _Ended:
    """What an ended container says about its run."""

    code: int | None  # exit code
    finished_at: datetime | None  # when its process ended (the engine's clock)
    tail: str  # the end of its output, redacted
    oom_killed: bool = False  # killed by the kernel for the memory limit (``machineMemoryMb``)


def _maybe_done(exc: ProviderError) -> bool:
    """Whether a failed request may have been carried out all the same: its answer was lost (the
    read timeout, a connection dropped), or a proxy in front of the engine answered for it that it
    got none (502, 504). An answer of the engine itself, or a request that never reached it, says
    that nothing was done."""
    return isinstance(exc, engine.NoAnswer) or exc.status in (502, 504)


#: values shorter than this are not masked (a region `a` would shred every excerpt), as in the
#: orchestrator's and the session's masking
MIN_SECRET_CHARS = 6


def redact(text: str, env: Mapping[str, str]) -> str:
    """``text`` with the values of the secret variables of ``env`` replaced by ``***``."""
    names = {n.strip() for n in str(env.get(SECRET_NAMES_VAR, "")).split(",") if n.strip()}
    values = {env[n] for n in names if len(env.get(n) or "") >= MIN_SECRET_CHARS}
    # longest first, so a secret containing another is replaced whole
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _engine_address() -> str:
    """Which engine was asked: ``DOCKER_HOST``, or the default socket."""
    host = os.environ.get("DOCKER_HOST")
    return f"DOCKER_HOST={host}" if host else "the default socket"


def _describe_engine(info: Mapping[str, Any]) -> str:
    """``GET /version`` in a line: the engine's name and version, and its API version."""
    components = info.get("Components") or ()
    names = [c.get("Name") for c in components if isinstance(c, dict) and isinstance(c.get("Name"), str)]
    engine_name = next((n for n in names if n.endswith("Engine")), "Docker Engine")
    return f"{engine_name} {info.get('Version') or '(version unknown)'}, API {info.get('ApiVersion') or '?'}"


def parse_volumes(spec: str) -> dict[str, dict[str, str]]:
    """``host:container[:ro|rw],...`` as the SDK's ``volumes`` mapping: bind mounts of host paths.
    A host part that is not an absolute path would name a Docker volume, which the engine makes
    and nothing removes: refused."""
    out: dict[str, dict[str, str]] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        parts = item.split(":")
        if (
            len(parts) not in (2, 3)
            or not parts[0]
            or not parts[1]
            or (len(parts) == 3 and parts[2] not in ("ro", "rw"))
        ):
            raise ProviderConfigError(
                f"{config.VOLUMES}: {item!r} is not host:container[:ro|rw]", provider="local-docker"
            )
        if not parts[0].startswith("/"):
            raise ProviderConfigError(
                f"{config.VOLUMES}: {item!r}: the host part must be an absolute path (a name would "
                "make a Docker volume that nothing removes)", provider="local-docker"
            )
        out[parts[0]] = {"bind": parts[1], "mode": parts[2] if len(parts) == 3 else "rw"}
    return out


def stop_grace_problem(raw: str) -> str | None:
    """What is wrong with ``AIIMPL_DOCKER_STOP_GRACE_SECONDS`` (stripped), or ``None``."""
    if raw.isascii() and raw.isdigit() and int(raw) <= config.MAX_STOP_GRACE_SECONDS:
        return None
    return (f"{config.STOP_GRACE} must be a whole number of seconds from 0 to "
            f"{config.MAX_STOP_GRACE_SECONDS}, not {raw[:40]!r}")


#: the core's setting of how long a job may go without a linked run (its ``run_not_found`` window)
RUN_NOT_FOUND = "AIIMPL_RUN_NOT_FOUND_SECONDS"


def _parse_seconds(value: Any, name: str, default: int, maximum: int) -> float:
    """A setting of seconds: unset or blank, ``default``; else a number greater than 0 and at most
    ``maximum``, or a :class:`ProviderConfigError` naming the setting ``name``."""
    raw = "" if value is None else str(value).strip()
    if not raw:
        return float(default)
    try:
        seconds = float(raw) if raw.isascii() else math.nan
    except ValueError:
        seconds = math.nan
    # nan, which float() reads, fails this comparison too; inf fails the upper bound
    if not 0 < seconds <= maximum:
        raise ProviderConfigError(
            f"{name} must be a number of seconds greater than 0 and at most {maximum}, not {raw[:40]!r}",
            provider="local-docker",
        )
    return seconds


def parse_timeout(value: Any) -> float:
    """``AIIMPL_DOCKER_TIMEOUT_SECONDS`` as seconds (unset or blank: the default).

    :raises ProviderConfigError: naming the setting, when it is not a number of seconds greater
        than 0 and at most :data:`~aiimpl_docker.config.MAX_TIMEOUT_SECONDS`.
    """
    return _parse_seconds(value, config.TIMEOUT, config.DEFAULT_TIMEOUT_SECONDS, config.MAX_TIMEOUT_SECONDS)


def parse_pull_timeout(value: Any) -> float:
    """``AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS`` as seconds (unset or blank: the default).

    :raises ProviderConfigError: naming the setting, when it is not a number of seconds greater
        than 0 and at most :data:`~aiimpl_docker.config.MAX_PULL_TIMEOUT_SECONDS`.
    """
    return _parse_seconds(
        value, config.PULL_TIMEOUT, config.DEFAULT_PULL_TIMEOUT_SECONDS, config.MAX_PULL_TIMEOUT_SECONDS
    )


def parse_command(value: str) -> list[str]:
    """``AIIMPL_DOCKER_COMMAND`` as the words of the command line that replaces the image's
    entrypoint (shell quoting rules, nothing expanded)."""
    try:
        return shlex.split(value)
    except ValueError as exc:  # an unclosed quote, a trailing backslash
        raise ProviderConfigError(
            f"{config.COMMAND} is not a command line of shell words: {exc}", provider="local-docker"
        ) from None


def _settings_problems(setting: Callable[[str], Any]) -> tuple[list[str], set[str]]:
    """What is wrong with the settings ``setting(name)`` reads, and the settings refused."""
    problems: list[str] = []
    refused: set[str] = set()
    parsers: tuple[tuple[str, Callable[[str], object]], ...] = (
        (config.COMMAND, parse_command),
        (config.VOLUMES, parse_volumes),
        (config.TIMEOUT, parse_timeout),
        (config.PULL_TIMEOUT, parse_pull_timeout),
    )
    for name, parse in parsers:
        value = setting(name)
        if value:
            try:
                parse(str(value))
            except ProviderConfigError as exc:
                problems.append(exc.message)
                refused.add(name)
    # (a stop uses the default then, with a warning in the log: said before one is needed)
    grace = str(setting(config.STOP_GRACE) or "").strip()
    if grace and (problem := stop_grace_problem(grace)):
        problems.append(f"{problem} (a stop uses {config.DEFAULT_STOP_GRACE_SECONDS} s meanwhile)")
        refused.add(config.STOP_GRACE)
    return problems, refused


class LocalDockerBackend(RunnerBackend):
    """Runs each session in its own container on the local Docker (or Podman) engine."""

    id = "local-docker"
    display_name = "Local Docker"
    setup_hint = "set DOCKER_HOST to the engine's address, or run one at /var/run/docker.sock"
    runner_mode: ClassVar[str | None] = "local"
    mapping_selectable = False
    supports_sessions = True
    supports_secrets = True
    config_vars = config.CONFIG_VARS

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._docker: Any = None
        #: the stops under way (container id -> its thread), so that a container is stopped once
        self._stops: dict[str, threading.Thread] = {}
        self._stops_lock = threading.Lock()
        #: the clean-ups of ended jobs under way (:meth:`cleanup_in_background`), under the same lock
        self._cleanups: list[threading.Thread] = []
        self._waits_at_exit = False

    # -- configuration --

    def is_configured(self) -> bool:
        """An engine is named (``DOCKER_HOST``) or the default socket exists; no remote call."""
        return bool(os.environ.get("DOCKER_HOST")) or os.path.exists("/var/run/docker.sock")

    @property
    def image(self) -> str:
        return str(self.context.setting(config.IMAGE, config.DEFAULT_IMAGE))

    @property
    def instance(self) -> str:
        """Which orchestrator's containers these are, when several share one engine."""
        return str(self.context.setting(config.INSTANCE, config.DEFAULT_INSTANCE))

    @property
    def stop_grace_seconds(self) -> int:
        """Seconds a cancelled or destroyed session gets between SIGTERM and SIGKILL.

        A value that is not a whole number of seconds in range is named in a warning and the
        default used: a typo must not keep a cancel from stopping the session.
        """
        raw = str(self.context.setting(config.STOP_GRACE, config.DEFAULT_STOP_GRACE_SECONDS)).strip()
        problem = stop_grace_problem(raw)
        if problem is None:
            return int(raw)
        self.log.warning("%s: using %s s", problem, config.DEFAULT_STOP_GRACE_SECONDS)
        return config.DEFAULT_STOP_GRACE_SECONDS

    @property
    def timeout_seconds(self) -> float:
        """Seconds the engine gets to accept a connection and to answer each request
        (:func:`parse_timeout`).

        :raises ProviderConfigError: when the setting is not valid: no engine call is made with a
            timeout nobody asked for.
        """
        return parse_timeout(self.context.setting(config.TIMEOUT))

    @property
    def pull_timeout_seconds(self) -> float:
        """Seconds a dispatch waits in all for the pull of a session image the engine does not
        have (:func:`parse_pull_timeout`).

        :raises ProviderConfigError: when the setting is not valid.
        """
        return parse_pull_timeout(self.context.setting(config.PULL_TIMEOUT))

    def docker(self) -> Any:
        """The engine's client, made on first use with :attr:`timeout_seconds` for every request."""
        if self._docker is None:
            self._docker = engine.connect(timeout=self.timeout_seconds)
        return self._docker

    # -- pre-flight check --

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        """Whether the engine answers (its version) and the session image is on it; read-only:
        nothing is pulled, built or started. A ``settings`` line is added when the command, the
        volumes or a timeout setting cannot be read, as every dispatch would then fail (the
        engine is not asked when it is the timeout of every request)."""
        settings = self._check_settings()
        try:
            client = self.docker()
            info = engine.call("reading the engine's version", client.version)
        except ProviderConfigError:  # the timeout setting, which the settings line names
            return [
                CheckResult("engine", False, f"not checked: {config.TIMEOUT} is not valid (see settings)"),
                CheckResult(f"image {self.image}", False, "not checked: the Docker engine was not asked"),
                *settings,
            ]
        except ProviderError as exc:
            return [
                CheckResult("engine", False, f"{exc.message} ({_engine_address()})"),
                CheckResult(f"image {self.image}", False, "not checked: the Docker engine does not answer"),
                *settings,
            ]
        return [CheckResult("engine", True, _describe_engine(info)), self._check_image(client), *settings,
                *self._check_public_url(mappings)]

    def _check_public_url(self, mappings: Sequence[MappingView]) -> list[CheckResult]:
        """A failure when ``AIIMPL_PUBLIC_URL``, which the containers report to, names the host alone
        (``127.0.0.1``, ``localhost``) while they do not share its network (``AIIMPL_DOCKER_NETWORK``
        ``host``) and a mapping runs here: there it is the container itself (nothing when it is
        fine, or no mapping runs on this engine)."""
        host = host_only_address(str(self.context.config.get("AIIMPL_PUBLIC_URL") or ""))
        if host is None or not mappings or str(self.context.setting(config.NETWORK) or "").strip() == "host":
            return []
        return [CheckResult(
            "orchestrator URL", False,
            f"AIIMPL_PUBLIC_URL names {host}, which inside a container is the container itself: set "
            f"{config.NETWORK}=host, or AIIMPL_PUBLIC_URL to an address of this host the containers reach",
        )]

    @classmethod
    def settings_problem(cls, config: Mapping[str, Any]) -> str | None:
        problems = _settings_problems(config.get)[0]
        return "; ".join(problems) if problems else None

    def _check_settings(self) -> list[CheckResult]:
        problems, refused = _settings_problems(self.context.setting)
        if config.PULL_TIMEOUT not in refused:
            problems.extend(self._pull_outlasting_the_window())
        return [CheckResult("settings", False, "; ".join(problems))] if problems else []

    def _pull_outlasting_the_window(self) -> list[str]:
        """A pull limit as long as the core's ``run_not_found`` window, or longer: the reconciler
        ends a job still being dispatched once the window has passed (its container is then stopped
        as soon as it is made), so a pull that long is of no use."""
        pull = self.pull_timeout_seconds
        try:
            window = int(self.context.setting(RUN_NOT_FOUND, 600))
        except (TypeError, ValueError):
            return []  # the core refuses it at start-up
        if pull < window:
            return []
        return [
            f"{config.PULL_TIMEOUT} ({pull:g} s) is not under {RUN_NOT_FOUND} ({window} s): a job whose "
            f"image takes that long to pull ends timed_out / run_not_found before its container starts; "
            f"lower the first or raise the second"
        ]

    def _check_image(self, client: Any) -> CheckResult:
        name = f"image {self.image}"
        try:
            image = engine.call(f"reading image {self.image}", lambda: client.images.get(self.image))
        except ProviderError as exc:
            if exc.status != 404:
                return CheckResult(name, False, exc.message)
            return CheckResult(
                name, False, f"not on the engine: build it (docker build -f docker/session.Dockerfile "
                f"-t {self.image} .) or pull it, or set {config.IMAGE}; see docs/session-image.md",
            )
        return CheckResult(name, True, f"present ({image.short_id})")

    # -- dispatch --

    def container_options(self, request: DispatchRequest) -> dict[str, Any]:
        """Keyword arguments of ``containers.run`` for one session."""
        mapping = request.mapping
        env = {str(k): str(v) for k, v in request.env.items()}
        env.setdefault("AIIMPL_SESSION_MODE", mapping.session_mode or "autonomous")
        if request.secret_names and SECRET_NAMES_VAR not in env:
            env[SECRET_NAMES_VAR] = ",".join(sorted(request.secret_names))
        options: dict[str, Any] = {
            "image": self.image,
            "detach": True,
            "environment": env,
            "name": f"aiimpl-job-{request.job_id}-{uuid.uuid4().hex[:6]}",
            "labels": {
                config.LABEL_JOB: str(request.job_id),
                config.LABEL_ISSUE: request.issue_key,
                config.LABEL_PHASE: request.phase.value,
                config.LABEL_MODE: mapping.session_mode or "autonomous",
                config.LABEL_BACKEND: self.id,
                config.LABEL_INSTANCE: self.instance,
            },
            # never auto-remove: the exit code and the log tail are read before removal
            "auto_remove": False,
        }
        if mapping.machine_cpus:
            options["nano_cpus"] = int(mapping.machine_cpus) * 1_000_000_000
        if mapping.machine_memory_mb:
            options["mem_limit"] = f"{int(mapping.machine_memory_mb)}m"
        # (spaces around it are not part of it, as the check reads it)
        network = str(self.context.setting(config.NETWORK) or "").strip()
        if network:
            # HostConfig.NetworkMode alone, which joins the container to that network: the SDK's
            # `network` adds NetworkingConfig {"<network>": null}, no property of the Engine API's
            # (ignored); the CLI's EndpointsConfig Podman refuses with host networking
            options["network_mode"] = network
        command = self.context.setting(config.COMMAND)
        if command:
            # replaces the entrypoint too: the session image's entrypoint would take it as arguments
            options["entrypoint"] = parse_command(str(command))
        volumes = self.context.setting(config.VOLUMES)
        if volumes:
            options["volumes"] = parse_volumes(str(volumes))
        return options

    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        """Create the session's container, then start it (:meth:`_create`, :meth:`_start`).

        :raises DispatchError: when the engine refused, or could not be reached: no session runs.
        :raises DispatchUnanswered: when an answer was lost and whether the session runs cannot be
            told; its container, if any, is found by its labels (:meth:`poll_runs`).
        """
        options = self.container_options(request)
        # a bad timeout setting fails the dispatch before any request, naming the setting: the
        # pull's too, which would otherwise fail only the dispatches that find the image missing
        parse_timeout(self.context.setting(config.TIMEOUT))
        parse_pull_timeout(self.context.setting(config.PULL_TIMEOUT))
        container_id, created = self._create(request, options)
        if created:
            self._start(request, container_id)
        self.log.info("job %s: started container %s", request.job_id, container_id[:12])
        return DispatchResult(run_id=container_id, linked=True)

    def _create(self, request: DispatchRequest, options: dict[str, Any]) -> tuple[str, bool]:
        """The session's container, created once: its id, and whether it is still to be started.

        The image is pulled when the engine does not have it, as ``docker run`` does, for at most
        ``AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS`` (:meth:`_create_once`). A create whose answer was
        lost (:func:`_maybe_done`) is sent again under the same name, which the engine gives one
        container only: a second create either makes the container (the first never did) or is
        refused because the name is taken (409 from Docker, 500 from Podman), and the container is
        then looked up by that name. When neither tells, :class:`DispatchUnanswered`.
        """
        name = options["name"]
        try:
            return self._create_once(options), True
        except ProviderError as exc:
            if not _maybe_done(exc):
                if exc.status is not None:
                    # (the engine answered: it may have made the container. Without an answer the
                    # request never reached it, an engine down: there is nothing to remove)
                    self._discard(name, request.job_id)
                raise self._refused(request, exc) from None
            lost = exc
        self.log.warning(
            "job %s: %s; creating container %s again", request.job_id, self._text(request, lost), name
        )
        try:
            return self._create_once(options), True
        except ProviderError as exc:
            again = exc
        try:
            found = self._inspect(name)
        except ProviderError:
            raise self._unanswered(request, lost) from None
        if found is not None and self._of_job(found, request.job_id):
            self.log.info("job %s: container %s was created all the same", request.job_id, name)
            status = str((found.get("State") or {}).get("Status") or "").lower()
            return str(found.get("Id")), status in PENDING
        if again.status is not None and 400 <= again.status < 500 and again.status != 409:
            # refused for a reason the first create shared (an image or option the engine refuses)
            raise self._refused(request, again) from None
        raise self._unanswered(request, lost) from None

    def _create_once(self, options: dict[str, Any]) -> str:
        """Create the container; when the engine does not have the image, pull it (at most
        :attr:`pull_timeout_seconds`, :func:`~aiimpl_docker.client.pull`) and create it then.

        A pull that failed or ran out of time raises a :class:`ProviderError` that is not a lost
        answer (its status is the engine's refusal's, or none): the create before it was refused,
        so no container was made, and :meth:`_create` refuses the dispatch rather than send it
        again to pull again. The job fails; without a status, the dispatcher backs off as when the
        engine cannot be reached, so that the next issues do not each wait for a pull in turn.
        """
        import docker.errors

        client = self.docker()

        def create() -> str | None:
            try:
                return str(client.containers.create(**options).id)
            except docker.errors.ImageNotFound:
                return None

        created = engine.call("creating the session container", create)
        if created is not None:
            return created
        engine.pull(
            options["image"],
            version=client.api.api_version,
            connect_timeout=self.timeout_seconds,
            timeout=self.pull_timeout_seconds,
        )
        return engine.call(
            "creating the session container", lambda: str(client.containers.create(**options).id)
        )

    def _start(self, request: DispatchRequest, container_id: str) -> None:
        """Start the created container, once.

        A start whose answer was lost is never sent again: a second start of a container that has
        already ended would run its session again. Whether it started is read instead; a container
        still ``created`` may yet be started by the first request (:class:`DispatchUnanswered`).
        """
        container_id = engine.container(container_id)
        api = self.docker().api
        try:
            engine.call("starting the session container", lambda: api.start(container_id))
            return
        except ProviderError as exc:
            if not _maybe_done(exc):
                self._discard(container_id, request.job_id)
                raise self._refused(request, exc) from None
            lost = exc
        try:
            info = self._inspect(container_id)
        except ProviderError:
            raise self._unanswered(request, lost) from None
        if info is None:  # removed meanwhile (a cancel): no session runs
            gone = ProviderError(f"{lost.message}; the container is gone", provider=self.id)
            raise self._refused(request, gone) from None
        status = str((info.get("State") or {}).get("Status") or "").lower()
        if status in PENDING:
            raise self._unanswered(request, lost) from None
        self.log.info("job %s: container %s was started all the same", request.job_id, container_id[:12])

    def _of_job(self, info: Mapping[str, Any], job_id: int) -> bool:
        """Whether an inspected container is this orchestrator's for the job."""
        labels = (info.get("Config") or {}).get("Labels") or {}
        ours = (labels.get(config.LABEL_JOB), labels.get(config.LABEL_INSTANCE))
        return ours == (str(job_id), self.instance)

    @staticmethod
    def _text(request: DispatchRequest, exc: ProviderError) -> str:
        """An engine error's message, redacted of the session's secrets."""
        return redact(exc.message, {**request.env, SECRET_NAMES_VAR: ",".join(request.secret_names)})

    def _refused(self, request: DispatchRequest, exc: ProviderError) -> DispatchError:
        text = self._text(request, exc)
        return DispatchError(text, provider=self.id, status=exc.status, retry_after=exc.retry_after)

    def _unanswered(self, request: DispatchRequest, exc: ProviderError) -> DispatchUnanswered:
        text = self._text(request, exc)
        self.log.info("job %s: whether its session runs is not known; its container is looked for by its "
                      "labels", request.job_id)
        return DispatchUnanswered(text, provider=self.id, status=exc.status, retry_after=exc.retry_after)

    def _discard(self, ref: str, job_id: int) -> None:
        """Remove the container a refused dispatch created but could not start (an entrypoint
        missing from the image, a bad mount, a network the engine does not know): it holds the
        session's environment, secrets included, and the sweep would leave a container that never
        ran until the lifetime has passed. Best effort: none was created when the image is missing."""
        try:
            if self._remove(ref):
                self.log.info("job %s: removed container %s, which did not start", job_id, ref[:40])
        except ProviderError as exc:
            self.log.warning("job %s: removing container %s, which did not start, failed: %s",
                             job_id, ref[:40], exc.message)

    # -- reconcile --

    def _ours(self) -> list[dict[str, Any]]:
        """Our containers' summaries, in any state: one list call (``sparse``: no inspect per
        container)."""
        # the API client's listing, not the SDK's models: those fail with a bare Exception on an entry
        # that is not an object, and keep one without an Id
        answer = engine.call(
            "listing containers",
            lambda: self.docker().api.containers(
                all=True, filters={"label": [config.LABEL_JOB, f"{config.LABEL_INSTANCE}={self.instance}"]}
            ),
        )
        return _listed(answer, "listing containers")

    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        if not runs:
            return []
        summaries = self._ours()
        by_id = {str(s.get("Id")): s for s in summaries}
        # a run its dispatch did not link: a container of its job's number and issue made since its
        # dispatch (a database restored, or reset, numbers jobs again: an old container of the
        # number is not the run's, not even one of the same issue triggered again)
        by_job: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in summaries:
            labels = s.get("Labels") or {}
            key = (str(labels.get(config.LABEL_JOB)), str(labels.get(config.LABEL_ISSUE)))
            by_job.setdefault(key, []).append(s)
        now = _aware(self.context.clock())
        timeout = self.timeout_seconds
        states: list[RunState] = []
        seen: set[str] = set()
        for run in runs:
            summary = by_id.get(run.run_id or "") or next(
                _made_since(run, by_job.get((str(run.job_id), run.issue_key), ()), timeout), None
            )
            if summary is None:
                states.append(RunState(job_id=run.job_id, phase=RunPhase.NOT_FOUND, run_id=run.run_id))
                continue
            seen.add(str(summary.get("Id")))
            try:
                states.append(self._state(run, summary, now))
            except ProviderError as exc:
                # this container only: the others are still reported, this one next cycle
                self.log.warning(
                    "job %s: reading container %s failed: %s", run.job_id, str(summary.get("Id"))[:12], exc
                )
        lifetime = max(run.lifetime_seconds for run in runs)
        self._sweep([s for s in summaries if str(s.get("Id")) not in seen], now, lifetime)
        return states

    def _state(self, run: InFlightRun, summary: Mapping[str, Any], now: datetime) -> RunState:
        container_id = str(summary.get("Id"))
        status = str(summary.get("State") or "").lower()
        if status in ENDED:
            ended = self._read(container_id)
            if self._ended_past_lifetime(run, ended):
                return self._timed_out(run, container_id, ended.tail, now)
            if ended.code == 0:
                # kept while its job is in flight: every poller sees the same ended run during the
                # core's grace period for a missing result; removed once the job has ended
                return RunState(
                    job_id=run.job_id,
                    phase=RunPhase.SUCCEEDED,
                    run_id=container_id,
                    exit_code=0,
                    log_excerpt=ended.tail,
                )
            # kept too, so that the failure is read again until the core has recorded it
            detail = (
                f"the session container exited with code {ended.code}"
                if ended.code is not None
                else f"the session container is {status} without an exit code"
            )
            if ended.oom_killed:
                detail += " (out of memory)"
            return RunState(
                job_id=run.job_id,
                phase=RunPhase.FAILED,
                run_id=container_id,
                exit_code=ended.code,
                detail=detail,
                log_label=LogLabel.CONTAINER_FAILED,
                log_excerpt=ended.tail or detail,
            )
        age = (now - _aware(run.dispatched_at)).total_seconds()
        if age >= run.lifetime_seconds:
            if status == "paused":
                # paused by hand: the engine refuses to stop it so (Podman: "container state
                # improper", after the stop's whole timeout), so it is resumed first
                try:
                    engine.call("resuming a paused container past its lifetime",
                                lambda: self.docker().api.unpause(engine.container(container_id)))
                except ProviderError as exc:
                    self.log.warning("job %s: %s", run.job_id, exc.message)
            engine.call(
                "stopping a container past its lifetime",
                lambda: self.docker().api.stop(engine.container(container_id), timeout=config.STOP_TIMEOUT),
            )
            # kept until the job has ended (see the module's docstring): a later poll that reads it
            # again reports the same timeout from when it ended
            return self._timed_out(run, container_id, self._read(container_id).tail, now)
        if status in PENDING and not run.run_id:
            # never started, its dispatch unanswered: linked once it runs, else its job ends
            # run_not_found (the start the dispatch sent may yet come; it is never sent again)
            return RunState(job_id=run.job_id, phase=RunPhase.PENDING)
        phase = RunPhase.PENDING if status in PENDING else RunPhase.RUNNING
        return RunState(job_id=run.job_id, phase=phase, run_id=container_id)

    def _ended_past_lifetime(self, run: InFlightRun, ended: _Ended) -> bool:
        """Whether the container ended at or after the end of its lifetime: this backend stopped
        it (or its interactive hold ran out), so the session exceeded its lifetime."""
        if ended.finished_at is None:
            return False
        lifetime_ends = _aware(run.dispatched_at) + timedelta(seconds=run.lifetime_seconds)
        # the slack for the engine's clock: a tenth of a short lifetime (a minute of a two-minute
        # one took a failure at 70 s for a stop at its end)
        slack = min(CLOCK_SLACK, timedelta(seconds=run.lifetime_seconds / 10))
        return ended.finished_at >= lifetime_ends - slack

    def _timed_out(self, run: InFlightRun, container_id: str, tail: str, now: datetime) -> RunState:
        minutes = int((now - _aware(run.dispatched_at)).total_seconds() // 60)
        note = (
            f"[the container exceeded its lifetime of {run.lifetime_seconds} s "
            f"(dispatched {minutes} min ago); it was stopped]"
        )
        return RunState(
            job_id=run.job_id,
            phase=RunPhase.TIMED_OUT,
            run_id=container_id,
            timeout_reason=TimeoutReason.CONTAINER_TIMEOUT,
            log_label=LogLabel.CONTAINER_TIMEOUT,
            log_excerpt=f"{tail}\n{note}" if tail else note,
        )

    def _read(self, container_id: str) -> _Ended:
        """An ended container's exit code, end time and log tail, redacted of the session's secrets."""
        container_id = engine.container(container_id)
        api = self.docker().api
        action = "inspecting a container"
        info = _inspected(engine.call(action, lambda: api.inspect_container(container_id)), action)
        state = info["State"]
        code = state.get("ExitCode")
        if type(code) is not int:  # (a bool is no exit code) an ended container has one
            raise _broken(action, f"has no ExitCode for container {container_id[:12]}")
        finished = _parse_time(state.get("FinishedAt"))
        listed = (info.get("Config") or {}).get("Env") or []
        if not isinstance(listed, list) or not all(isinstance(e, str) for e in listed):
            # the session's secrets are named there: the tail is not read unredacted
            raise _broken(action, "has a Config.Env that is not a list of strings")
        env = dict(e.split("=", 1) for e in listed if "=" in e)
        action = "reading a container's logs"
        try:
            raw = engine.call(
                action, lambda: api.logs(container_id, stdout=True, stderr=True, tail=config.LOG_TAIL_LINES)
            )
        except (KeyError, TypeError, AttributeError) as exc:
            # the SDK reads the container's inspect again (Config.Tty) to tell how to split the output
            raise _broken(action, f"could not be read ({type(exc).__name__}: {str(exc)[:100]})") from None
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        tail = redact(text, env).strip()[-config.LOG_TAIL_CHARS :]
        return _Ended(code, finished, tail, state.get("OOMKilled") is True)

    def _remove(self, container_id: str) -> bool:
        container_id = engine.container(container_id)
        try:
            # v: with the anonymous volumes of the image's VOLUMEs, which nothing else would remove
            engine.call(
                "removing a container",
                lambda: self.docker().api.remove_container(container_id, force=True, v=True),
            )
        except ProviderError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def sweep(self, lifetime_seconds: int) -> None:
        """With no job in flight (the reconciler asks every ten minutes): remove our containers
        as :meth:`poll_runs` does while jobs are in flight."""
        self._sweep(self._ours(), _aware(self.context.clock()), lifetime_seconds)

    def _sweep(self, summaries: Sequence[Mapping[str, Any]], now: datetime, lifetime: int) -> None:
        """Remove our containers whose job is not in flight: ended or never started ones created
        more than :data:`SWEEP_AFTER` ago (a younger one may belong to a job another poller launched
        after this cycle read its jobs), running ones (an interactive hold) once past the lifetime.
        Best effort; the removal when a job ends usually came first."""
        for summary in summaries:
            container_id = str(summary.get("Id"))
            status = str(summary.get("State") or "").lower()
            created = _parse_time(summary.get("Created"))
            age = (now - created).total_seconds() if created is not None else 0.0
            if (status in ENDED | PENDING and age >= SWEEP_AFTER.total_seconds()) or age >= lifetime:
                try:
                    self._remove(container_id)
                    self.log.info("removed container %s of an ended job", container_id[:12])
                except ProviderError as exc:
                    self.log.warning("removing container %s failed: %s", container_id[:12], exc)

    def cleanup_job(self, job_id: int) -> None:
        """Remove a job's container once its process has ended; blocks until then.

        The session usually posts its result and then exits (or holds, in the interactive
        modes): a container still running is waited for, at most the session lifetime, then
        removed. The plugin's ``aiimpl_job_status_changed`` runs this in a background thread; the
        sweep in :meth:`poll_runs` catches whatever a restarted process left behind.
        """
        summaries = self._of_job_listed(job_id)
        lifetime = int(self.context.setting("AIIMPL_SESSION_LIFETIME_SECONDS", 3600))
        for summary in summaries:
            container_id = str(summary.get("Id"))
            # one never started has no process to wait for
            if str(summary.get("State") or "").lower() not in ENDED | PENDING:
                try:
                    engine.call(
                        "waiting for a container",
                        lambda cid=container_id: self.docker().api.wait(
                            engine.container(cid), timeout=lifetime + 60
                        ),
                    )
                except ProviderError as exc:  # still running after its lifetime: removed all the same
                    self.log.info("container %s did not exit in time: %s", container_id[:12], exc)
            self._remove(container_id)

    def _of_job_listed(self, job_id: int) -> list[dict[str, Any]]:
        """The summaries of a job's containers (one list call, by label)."""
        answer = engine.call(
            "listing containers",
            lambda: self.docker().api.containers(
                all=True,
                filters={
                    "label": [f"{config.LABEL_JOB}={job_id}", f"{config.LABEL_INSTANCE}={self.instance}"]
                },
            ),
        )
        return _listed(answer, "listing containers")

    def cancel(self, run: InFlightRun) -> None:
        """Stop the run's container, letting its session save its work, and remove it (best
        effort; :meth:`_end`). Returns at once: the stop goes on in the background. A run not
        linked (its dispatch unanswered) is found by its job's label."""
        try:
            if run.run_id:
                refs = [run.run_id]
            else:
                listed = _made_since(run, self._of_job_listed(run.job_id), self.timeout_seconds)
                refs = [str(s.get("Id")) for s in listed
                        if (s.get("Labels") or {}).get(config.LABEL_ISSUE) == run.issue_key]
            for ref in refs:
                info = self._inspect(ref)
                if info is not None:
                    self._end(str(info.get("Id")), info)
        except ProviderError as exc:
            self.log.warning("job %s: stopping its container failed: %s", run.job_id, exc)

    # -- stopping --

    def _inspect(self, container_id: str) -> dict[str, Any] | None:
        """A container's ``inspect``; ``None`` when the engine does not know it."""
        container_id = engine.container(container_id)
        api = self.docker().api
        try:
            answer = engine.call("inspecting a container", lambda: api.inspect_container(container_id))
        except ProviderError as exc:
            if exc.status == 404:
                return None
            raise
        return _inspected(answer, "inspecting a container")

    def _end(self, container_id: str, info: Mapping[str, Any]) -> bool:
        """Remove a container; one whose process may still run is stopped first, in the background.

        An ended container (or one never started) has no session to stop: it is removed at once,
        as it always was. Any other is stopped with Docker's stop — SIGTERM, then SIGKILL after
        :attr:`stop_grace_seconds` — so that its session saves its work and reports, then removed.

        :returns: false when the container was gone already.
        """
        status = str((info.get("State") or {}).get("Status") or "").lower()
        if status in ENDED or status in PENDING:
            return self._remove(container_id)
        grace = self.stop_grace_seconds
        with self._stops_lock:
            under_way = self._stops.get(container_id)
            if under_way is not None and under_way.is_alive():
                return True  # a second stop would cut the first one's grace short
            # a daemon, waited for at exit (below); a process killed meanwhile leaves the engine to
            # finish the stop it was asked for, and the sweep of a later poll to remove the container
            thread = threading.Thread(
                target=self._stop_and_remove,
                args=(container_id, grace),
                name=f"aiimpl-docker-stop-{container_id[:12]}",
                daemon=True,
            )
            self._stops[container_id] = thread
            thread.start()
            self._wait_at_exit()
        self.log.info("stopping container %s (%s s to save its work)", container_id[:12], grace)
        return True

    def _stop_and_remove(self, container_id: str, grace: int) -> None:
        """The background half of :meth:`_end`: the stop, which answers once the container has
        stopped, then the removal. A refused stop is logged and the container removed all the
        same (forced: SIGKILL), so that none is left behind."""
        container_id = engine.container(container_id)
        short = container_id[:12]
        try:
            try:
                engine.call(
                    "stopping a container", lambda: self.docker().api.stop(container_id, timeout=grace)
                )
            except ProviderError as exc:
                if exc.status == 404:
                    return  # removed meanwhile (by its job's clean-up)
                self.log.warning("container %s: %s; removing it all the same", short, exc)
            if self._remove(container_id):
                self.log.info("container %s stopped and removed", short)
        except ProviderError as exc:
            self.log.warning("container %s: %s (the sweep of a later poll removes it)", short, exc)
        except Exception:  # noqa: BLE001 - a thread's failure goes to the log, not to stderr
            self.log.exception("container %s: stopping and removing it failed", short)
        finally:
            with self._stops_lock:
                if self._stops.get(container_id) is threading.current_thread():
                    del self._stops[container_id]

    def _wait_at_exit(self) -> None:
        """Have the process wait for this backend's background work when it exits (called with
        ``_stops_lock`` held): a process that ends (``aiimpl jobs cancel``, ``aiimpl poll --once``,
        a worker recycled) would otherwise leave a container, with the job's secrets in its
        environment, to a later poll's sweep."""
        if not self._waits_at_exit:
            atexit.register(self._finish_at_exit)
            self._waits_at_exit = True

    def _finish_at_exit(self) -> None:
        """At exit: the clean-ups under way, for as long as two engine requests take (a listing and
        a removal; one still waiting for a container that holds, in the interactive session modes,
        is left to the sweep), then the stops, which those clean-ups may have started."""
        with self._stops_lock:
            cleanups = [t for t in self._cleanups if t.is_alive()]
        if cleanups:
            try:
                budget = 2 * self.timeout_seconds
            except ProviderConfigError:  # a setting that is not valid: the default's
                budget = 2.0 * config.DEFAULT_TIMEOUT_SECONDS
            deadline = time.monotonic() + budget
            for thread in cleanups:
                thread.join(max(0.0, deadline - time.monotonic()))
        self.wait_for_stops()

    def cleanup_in_background(self, job_id: int) -> None:
        """:meth:`cleanup_job` in a thread of its own, never in the caller's way (a job's end is
        often a runner's ``/runner/result`` request, and the container may still be finishing, or
        holding in the interactive session modes), waited for at exit (:meth:`_finish_at_exit`)."""

        def clean() -> None:
            try:
                self.cleanup_job(job_id)
            except ProviderError as exc:  # the poll's sweep removes it later
                self.log.warning("job %s: removing its container failed: %s", job_id, exc)

        thread = threading.Thread(target=clean, name=f"aiimpl-docker-cleanup-{job_id}", daemon=True)
        with self._stops_lock:
            self._cleanups[:] = [t for t in self._cleanups if t.is_alive()]
            self._cleanups.append(thread)
            self._wait_at_exit()
        thread.start()

    def wait_for_stops(self, timeout: float | None = None) -> bool:
        """Wait for the stops :meth:`cancel` and :meth:`destroy_session` started to end (tests, or
        a process that wants its containers gone before it exits).

        :param timeout: seconds to wait at most; ``None``: until they have ended.
        :returns: whether none is under way any more.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._stops_lock:
                threads = [t for t in self._stops.values() if t.is_alive()]
            if not threads:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            threads[0].join(left)

    # -- sessions --

    def list_sessions(self) -> Sequence[SessionInfo]:
        if not self.is_configured():
            return []
        out: list[SessionInfo] = []
        # every state but ended and never started: the engine's own listing of running containers
        # leaves out Podman's `stopping` ones, so a session being destroyed vanished at once
        for summary in self._ours():
            if str(summary.get("State") or "").lower() in ENDED | PENDING:
                continue
            labels = summary.get("Labels") or {}
            job = str(labels.get(config.LABEL_JOB) or "")
            out.append(
                SessionInfo(
                    id=str(summary.get("Id")),
                    backend=self.id,
                    state=str(summary.get("State") or "unknown"),
                    job_id=int(job) if job.isdigit() else None,
                    issue_key=labels.get(config.LABEL_ISSUE),
                    created_at=_parse_time(summary.get("Created")),
                    image=summary.get("Image"),
                )
            )
        return out

    def destroy_session(self, session_id: str) -> bool:
        """Stop and remove one of our containers (:meth:`_end`): true once that is under way, its
        session saving its work in the background; false when the id is not one of ours."""
        info = self._inspect(session_id)
        if info is None:
            return False
        # only containers this orchestrator started
        labels = (info.get("Config") or {}).get("Labels") or {}
        if config.LABEL_JOB not in labels or labels.get(config.LABEL_INSTANCE) != self.instance:
            return False
        return self._end(str(info.get("Id")), info)
