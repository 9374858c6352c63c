"""One error hierarchy for the whole project.

The HTTP API turns these into the reference's error bodies, the CLI into ``click.ClickException``.
A message here may be shown to a user: it never contains a secret.
"""
from __future__ import annotations


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
