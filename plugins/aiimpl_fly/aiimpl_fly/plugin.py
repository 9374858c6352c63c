"""Hook implementations of aiimpl-fly: the ``fly-machines`` runner backend."""

from __future__ import annotations

from collections.abc import Callable

from aiimpl_core import hookimpl


@hookimpl
def aiimpl_register_runner_backends(register: Callable[..., None]) -> None:
    from .backend import FlyMachinesBackend

    register(FlyMachinesBackend)
