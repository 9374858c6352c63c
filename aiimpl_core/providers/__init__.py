"""Base classes for the three provider kinds a plugin can contribute."""
from __future__ import annotations

from .base import (
    ConfigVar,
    ModelProvider,
    Provider,
    ProviderContext,
    RunnerBackend,
    TicketingProvider,
)

__all__ = [
    "ConfigVar",
    "ModelProvider",
    "Provider",
    "ProviderContext",
    "RunnerBackend",
    "TicketingProvider",
]
