"""AI-Implement core: the orchestrator's app, data model, plugin system and session program."""
from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@aiimpl_core.hookimpl``.
hookimpl = pluggy.HookimplMarker("aiimpl")


def create_app(config=None, *, plugins=(), load_entrypoints=True, environ=None):  # noqa: ANN001, ANN201
    """Build the Flask application (see :func:`aiimpl_core.app.create_app`)."""
    from .app import create_app as _create_app

    return _create_app(config, plugins=plugins, load_entrypoints=load_entrypoints, environ=environ)


__all__ = ["__version__", "create_app", "hookimpl"]
