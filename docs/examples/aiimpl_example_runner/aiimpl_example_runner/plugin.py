"""Hook implementations of the example runner plugin."""
from __future__ import annotations

from aiimpl_core import hookimpl

from .backend import SpoolBackend


@hookimpl
def aiimpl_register_runner_backends(register):  # noqa: ANN001, ANN201
    register(SpoolBackend)
