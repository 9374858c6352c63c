"""One error hierarchy for the whole project.

The HTTP API turns these into the reference's error bodies, the CLI into ``click.ClickException``.
A message here may be shown to a user: it never contains a secret.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime


class AiimplError(Exception):
    """Base class of every error the project raises on purpose."""

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def __str__(self) -> str:
        return self.message


class ConfigError(AiimplError):
    """The orchestrator's own configuration is invalid (environment, settings)."""


class ValidationError(AiimplError):
    """Input from a user or a runner failed validation; ``message`` is the reference's text."""


class NotFound(AiimplError):
    """A thing that was asked for does not exist."""


class Conflict(AiimplError):
    """The request conflicts with the current state (for example a consumed token)."""


class PluginError(AiimplError):
    """A plugin could not be loaded or broke its contract."""

    def __init__(self, message: str, *, plugin: str | None = None, **extra: object) -> None:
        super().__init__(message, **extra)
        self.plugin = plugin


class PluginContractError(PluginError):
    """A plugin registered something of the wrong type, or a hook with a wrong signature."""


class DuplicateProviderError(PluginError):
    """Two plugins claim the same provider id."""


class ProviderError(AiimplError):
    """A remote service (tracker, runner backend, GitHub) failed.

    :param status: the remote HTTP status, when there was one.
    :param retry_after: seconds the remote asked us to wait, when it said so.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        detail: object = None,
        **extra: object,
    ) -> None:
        super().__init__(message, **extra)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        self.detail = detail


class ProviderConfigError(ProviderError):
    """A provider's settings (in a mapping or the environment) are invalid; the message names the field."""


class ProviderNotConfigured(ProviderError):
    """The provider is installed but has no connection configured on this orchestrator."""


class DispatchError(ProviderError):
    """A runner backend refused or failed to start a run."""


class DispatchUnanswered(DispatchError):
    """A dispatch that went out but whose answer was lost (none came back, or a ``5xx`` did): the
    run may have been made all the same, so it must not be sent again.

    A runner backend raises it when it cannot tell whether its run was made (it may first look for
    the run, and answer it linked when found). The core then keeps the job ``dispatched`` without a
    linked run, for the backend's ``poll_runs`` to find by the request's ``run_name`` (or for the
    reconciler to end ``run_not_found`` after ``AIIMPL_RUN_NOT_FOUND_SECONDS``), and backs the
    dispatcher off as after any failure without a refusal, so that the next issues wait rather
    than each dispatch into the same outage. A gap-fill dispatch, whose caller is answered at once,
    fails as on any other error.
    """

    @classmethod
    def of(cls, exc: ProviderError) -> DispatchUnanswered:
        """The failure of a dispatch request whose answer was lost
        (:func:`aiimpl_core.http.may_have_been_done`), with its message, provider, status,
        ``Retry-After`` and detail."""
        return cls(exc.message, provider=exc.provider, status=exc.status, retry_after=exc.retry_after,
                   detail=exc.detail)


class DispatchDeferred(DispatchError):
    """The backend rate-limited a dispatch (``429``, or a refusal that names a wait): nothing was
    started. The core raises it, never a plugin: the job stays ``unknown`` and the dispatcher tries
    it again from ``until`` (:attr:`~aiimpl_core.orm.Job.launch_after`), once the backend's
    back-off has passed too.
    """

    def __init__(self, message: str, *, until: datetime, **extra: object) -> None:
        super().__init__(message, **extra)  # type: ignore[arg-type]
        self.until = until


def describe_plugin_error(
    exc: BaseException,
    *,
    mask: Callable[[str], str] | None = None,
    foreign: str = "unexpected error ({cls})",
    log_foreign: Callable[[BaseException], object] | None = None,
) -> str:
    """The text a ticket, a report or an API answer may show of an error a plugin raised.

    A project error (:class:`AiimplError`) is described by its message, which is written to
    be shown. Any other exception by its class name only: its message may quote a setting or a
    secret, so it never leaves the server log.

    :param exc: what the plugin raised.
    :param mask: applied to a trusted message (e.g. the config redactor's ``text``, when the message
        may quote a remote answer).
    :param foreign: the description of any other exception; ``{cls}`` is replaced by its class name.
    :param log_foreign: called with a foreign exception before it is described, to log its traceback.
    """
    if isinstance(exc, AiimplError):
        return mask(exc.message) if mask is not None else exc.message
    if log_foreign is not None:
        log_foreign(exc)
    return foreign.format(cls=type(exc).__name__)
