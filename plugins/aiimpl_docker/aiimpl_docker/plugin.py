"""Hook implementations of aiimpl-docker: the ``local-docker`` runner backend."""

from __future__ import annotations

from collections.abc import Callable

from aiimpl_core import hookimpl


@hookimpl
def aiimpl_register_runner_backends(register: Callable[..., None]) -> None:
    from .backend import LocalDockerBackend

    register(LocalDockerBackend)
