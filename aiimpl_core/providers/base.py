"""Abstract base classes for ticketing providers, runner backends and model providers.

A plugin subclasses one of these, sets the class-level ``id`` and ``display_name``, declares
its configuration variables and capabilities, and registers the class through the matching
registration hook (see :mod:`aiimpl_core.hookspecs`). The core instantiates the class once per
application with a :class:`ProviderContext`.

Capabilities are declared with explicit class flags (``supports_sessions`` …); the core never
guesses them from the presence of a method.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ProviderConfigError, ProviderNotConfigured

if TYPE_CHECKING:
    from ..http import HttpClient
    from ..types import (
        CheckResult,
        Comment,
        DispatchRequest,
        DispatchResult,
        InFlightRun,
        MappingView,
        RunState,
        SessionInfo,
        Stage,
        SyncResult,
        TrackerIssue,
        TriggeredPage,
    )


@dataclass(frozen=True)
class ConfigVar:
    """One environment variable a provider reads.

    :param name: the variable, ``AIIMPL_<PLUGIN>_<NAME>``.
    :param help: one line for the configuration table.
    :param sensitive: true for secrets: never logged, shown or returned.
    :param default: the value when unset.
    """

    name: str
    help: str
    sensitive: bool = False
    default: str | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class ProviderContext:
    """What the core gives a provider instance.

    :param config: the application's configuration (``AIIMPL_*`` values, already parsed).
    :param http: builds an :class:`~aiimpl_core.http.HttpClient` for a base URL (timeouts,
        retries honouring ``Retry-After``, a ``User-Agent`` naming the plugin).
    :param clock: the current time (UTC); tests pass a controllable one.
    :param secret: reads a stored secret by name and scope (``None`` scope: global).
    :param mappings: the configured mappings (needs an application context); a tracker reads its
        own per-mapping ``ticketing`` settings from them (for example Jira's JQL clause).
    """

    config: Mapping[str, Any]
    http: Callable[..., HttpClient]
    clock: Callable[[], datetime] = _utcnow
    secret: Callable[[str, str | None], str | None] = lambda name, scope=None: None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("aiimpl"))
    mappings: Callable[[], Sequence[MappingView]] = lambda: ()

    def setting(self, name: str, default: Any = None) -> Any:
        value = self.config.get(name)
        return default if value in (None, "") else value


class Provider(ABC):
    """What every provider kind shares."""

    #: stable id used in mappings and the API (``linear``, ``github-actions``, ``anthropic``)
    id: ClassVar[str]
    #: human name for the UI
    display_name: ClassVar[str]
    #: environment variables the provider reads (shown in ``aiimpl plugins list`` and the docs)
    config_vars: ClassVar[tuple[ConfigVar, ...]] = ()
    #: what to set when :meth:`is_configured` is false, said after "<display name> is not
    #: configured: " (``set AIIMPL_X_TOKEN``); empty: the message names the provider only
    setup_hint: ClassVar[str] = ""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context

    @classmethod
    def settings_problem(cls, config: Mapping[str, Any]) -> str | None:
        """What is wrong with this provider's own settings (:attr:`config_vars`) in ``config`` (the
        environment's values, as text), naming the setting, or ``None``. ``aiimpl config`` exits 1
        on it, as on a core setting that is not valid, so a deploy script stops before a server
        that would fail every call; the server itself starts (each call fails with the message,
        and ``aiimpl check`` says it). Offline and quick: no service is asked. Default: nothing
        checked."""
        return None

    @property
    def log(self) -> logging.Logger:
        return self.context.logger.getChild(self.id)

    def is_configured(self) -> bool:
        """Whether this provider has what it needs to talk to its service (credentials, URLs)."""
        return True

    def require_configured(self) -> None:
        if not self.is_configured():
            raise self.not_configured()

    def not_configured(self) -> ProviderNotConfigured:
        """The error :meth:`require_configured` raises: the provider, and :attr:`setup_hint`."""
        hint = f": {self.setup_hint}" if self.setup_hint else ""
        return ProviderNotConfigured(f"{self.display_name} is not configured{hint}", provider=self.id)

    def check(self, mappings: Sequence[MappingView]) -> Sequence[CheckResult]:
        """Verify, read-only, that the service accepts the credentials and knows what ``mappings``
        name (``aiimpl check``); only called when :meth:`is_configured`.

        :param mappings: the mappings that use this provider (may be empty).
        :returns: one result per thing checked; none when the provider offers no check. A check
            that fails returns ``ok=False`` with the reason; an exception is reported as a failure
            of the provider's connection.
        """
        return ()

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Check a mapping's settings that concern this provider.

        :param mapping: the mapping as posted to ``POST /api/mappings`` merged over the stored one
            (camelCase keys as in the API).
        :raises ProviderConfigError: with a message naming the field.
        """


class TicketingProvider(Provider):
    """A tracker: Linear, Jira, or a third party's.

    ``teams`` below are team keys (Linear team key, Jira project key).
    """

    supports_webhooks: ClassVar[bool] = False
    #: how a person applies the trigger in this tracker, said after "apply the trigger again" in the
    #: plan's comment (``add the `AI-Implement` label``); empty: that comment says no more
    trigger_hint: ClassVar[str] = ""

    @abstractmethod
    def iter_triggered(self, teams: Sequence[str]) -> Iterator[TriggeredPage]:
        """Yield the issues carrying the trigger, a page per remote call.

        :param teams: the team keys that have a mapping; empty when no mapping names this
            tracker (it is still read, so its triggered issues show as ``no-mapping``): a provider
            that can only search mapped teams yields one empty, complete page then. A provider may
            also return triggered issues of other teams (they are shown as ``no-mapping`` blockers).
        The last page has ``complete=True``. One remote call per page, never one per issue:
        each issue carries everything the dispatcher needs (team, title, description, stage,
        labels, open blocking links).
        """

    @abstractmethod
    def get_issue(self, key: str) -> TrackerIssue:
        """Read one issue with its description, comments and blocking links.

        :raises NotFound: when the tracker has no such issue.
        """

    @abstractmethod
    def post_comment(self, key: str, body: str) -> Comment:
        """Post a Markdown comment on an issue and return it (with its remote id)."""

    def post_comment_once(self, key: str, body: str, *, ref: str, retry: bool) -> Comment:
        """Post a comment the outbox queued, so that it appears once however often it is tried.

        A try whose answer was lost (a timeout, a proxy's 502 after the tracker stored the
        comment) counts as failed, and the outbox tries again. A tracker that can name a comment
        when creating it (Linear's ``id``) or tag it (a Jira comment property) overrides this: it
        creates the comment with ``ref`` and, when ``retry`` is true, first looks for a comment of
        the issue that carries ``ref`` and returns it instead of posting a second one.

        :param ref: the comment's identity, the same on every try and unique to this install (a
            UUID of version 4's shape).
        :param retry: whether it was tried before (a try failed, its sender stopped mid-try, or an
            operator re-queued it after it was given up on): it may have been stored all the same.

        The default posts it with :meth:`post_comment`: a lost answer then means a second copy.
        """
        return self.post_comment(key, body)

    @abstractmethod
    def set_stage(self, key: str, stage: Stage) -> None:
        """Move an issue to a lifecycle stage (a label on Linear, a status on Jira).

        Must be idempotent and must not drop the issue's unrelated labels. Failed stages remove
        the AI labels on label-based trackers. ``Stage.TRIGGERED`` is never set by the core.
        """

    @abstractmethod
    def mark_done(self, key: str) -> None:
        """Close an issue out after its pull request merged: move it to a done state of the
        tracker's (a completed workflow state, a status of the done category), which
        :meth:`get_issue` reports as its ``state`` (or ``stage`` ``Stage.DONE``), with no
        trigger. Taking the trigger away alone leaves the issue open.

        Must be idempotent: an issue already done stays done without an error (the outbox may send
        this twice, as it may a stage change; a comment it sends once).
        """

    def team_of(self, key: str) -> str:
        """The team key of an issue key (``ENG-12`` → ``ENG``); override for other key shapes."""
        return key.rsplit("-", 1)[0]


class RunnerBackend(Provider):
    """Where sessions run: GitHub Actions, Fly Machines, local Docker, or a third party's.

    The core calls these methods synchronously, in the poll cycle or in the HTTP request that needs
    them, with no time limit of its own: bound every remote call (``context.http`` does) and let
    :meth:`dispatch` return once the session is started. What the contract kit checks:
    :class:`aiimpl_core.testing.contract.RunnerBackendContract`.
    """

    #: the runner mode that forces this backend globally (``gha``, ``fly``, ``local``), if any
    runner_mode: ClassVar[str | None] = None
    #: whether a mapping may name this backend in ``executionMode``
    mapping_selectable: ClassVar[bool] = True
    #: lists and destroys sessions (``/api/sessions``)
    supports_sessions: ClassVar[bool] = False
    #: passes team and global secrets privately into sessions (enables ``/api/*secrets``)
    supports_secrets: ClassVar[bool] = False
    #: installs workflow files in the repository (``sync-workflows``)
    supports_workflow_sync: ClassVar[bool] = False
    #: can dispatch a gap-analysis run on an existing PR (``/trigger/gap-fill``)
    supports_gap_fill: ClassVar[bool] = False

    @abstractmethod
    def dispatch(self, request: DispatchRequest) -> DispatchResult:
        """Start one session for a job.

        ``request.env`` is the session program's whole environment, and only that: no ``PATH`` or
        ``HOME`` (a backend starting it on a host of its own adds that host's basics, never the
        orchestrator's ``os.environ``).

        :returns: a :class:`DispatchResult` whose ``run_id`` (at most 255 characters) and
            ``run_url`` are strings, or ``None`` when the remote names the run only later.
        :raises DispatchError: when the backend refuses (with the remote status and detail), and
            when it is not configured (``self.not_configured()`` says what to set).
        """

    @abstractmethod
    def poll_runs(self, runs: Sequence[InFlightRun]) -> Sequence[RunState]:
        """Report the state of all this backend's in-flight runs, in as few remote calls as possible.

        Called once per reconcile cycle with every non-terminal job of this backend. Return one
        state per run asked about that the backend could look at, its ``job_id`` the run's (states
        for other job ids are ignored); ``NOT_FOUND`` for a run that is gone. Omitted runs are left
        as they are. A backend that enforces lifetimes stops runs past ``lifetime_seconds`` here and
        reports them ``TIMED_OUT`` with its reason.

        :raises ProviderError: only when no run could be looked at (the whole poll backs off).
        """

    def cancel(self, run: InFlightRun) -> None:  # noqa: B027 - optional
        """Stop and clean up a run (best effort); :meth:`poll_runs` then reports it ended (the stop
        may go on in the background). It may be called for a run that has ended or gone: do nothing
        then. An exception is logged and ignored."""

    def sweep(self, lifetime_seconds: int) -> None:  # noqa: B027 - optional
        """Remove what ended sessions left behind (a machine or container that still holds a
        session's environment, secrets included) while this backend has no run in flight; a
        backend that sweeps does it in :meth:`poll_runs` otherwise. Best effort.

        Called by the reconciler about every :data:`~aiimpl_core.services.reconcile.SWEEP_EVERY`
        (once for all pollers together) for a configured backend none of whose jobs is in flight.
        Anything younger than ``lifetime_seconds`` may belong to a job being dispatched right now:
        leave running sessions alone until then.
        """

    # -- optional capabilities: only called when the matching ``supports_*`` flag is true --

    def list_sessions(self) -> Sequence[SessionInfo]:
        raise NotImplementedError(f"{self.id} does not support sessions")

    def destroy_session(self, session_id: str) -> bool:
        """Destroy a session; return false when this backend does not know the id."""
        raise NotImplementedError(f"{self.id} does not support sessions")

    def sync_workflows(self, mapping: MappingView) -> SyncResult:
        raise NotImplementedError(f"{self.id} does not support workflow sync")

    def dispatch_gap_fill(self, request: DispatchRequest) -> DispatchResult:
        raise NotImplementedError(f"{self.id} does not support gap-fill dispatch")


class ModelProvider(Provider):
    """The AI model service a session's agent talks to (Anthropic API, AWS Bedrock, …)."""

    def validate_mapping(self, mapping: Mapping[str, Any]) -> None:
        """Check cross-field rules (for example a region, or backends the provider cannot run on).

        :raises ProviderConfigError: with the reference's message.
        """

    @abstractmethod
    def session_env(self, mapping: MappingView) -> dict[str, str]:
        """The environment variables a session needs to reach this model provider.

        Values that are secrets must also be listed by :meth:`secret_env_names`.
        """

    def secret_env_names(self, mapping: MappingView) -> frozenset[str]:
        """Which keys of :meth:`session_env` hold secrets."""
        return frozenset()

    def required_env_names(self, mapping: MappingView) -> frozenset[str]:
        """The variables a session cannot reach the model without (an API key), where the
        orchestrator hands the session its environment (a backend that keeps secrets: Fly,
        Docker): ``aiimpl check`` fails for the mappings whose sessions would get none of them from
        :meth:`session_env` nor from the team's and the global secrets. None by default (a
        provider whose sessions may find credentials elsewhere)."""
        return frozenset()


def config_error(message: str, provider: str | None = None) -> ProviderConfigError:
    """Shorthand used by providers' ``validate_mapping``."""
    return ProviderConfigError(message, provider=provider)
