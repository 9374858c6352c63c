"""The Docker engine connection: the ``docker`` SDK configured from the environment.

Errors of the SDK (engine unreachable, API errors) are turned into
:class:`~aiimpl_core.errors.ProviderError` here, so the backend and the API see one kind of error,
with the engine's explanation and never a container's environment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiimpl_core.errors import ProviderError

T = TypeVar("T")


def connect(timeout: int = 30) -> Any:
    """A ``docker.DockerClient`` for ``DOCKER_HOST`` (or the default socket)."""
    import docker

    try:
        return docker.from_env(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - DockerException and connection errors alike
        raise ProviderError(
            f"local-docker: cannot reach the Docker engine: {_explain(exc)}", provider="local-docker"
        ) from None


@contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Map SDK and connection failures inside the block to a :class:`ProviderError`."""
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.APIError as exc:
        raise ProviderError(
            f"local-docker: {action} failed: {_explain(exc)}", provider="local-docker", status=exc.status_code
        ) from None
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise ProviderError(
            f"local-docker: {action} failed: {_explain(exc)}", provider="local-docker"
        ) from None


def call(action: str, fn: Callable[[], T]) -> T:
    with engine_errors(action):
        return fn()


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    text = str(explanation or exc).strip()
    return text[:300] or type(exc).__name__
