"""The Docker engine connection: the ``docker`` SDK configured from the environment.

Errors of the SDK (engine unreachable, API errors) are turned into
:class:`~aiimpl_core.errors.ProviderError` here, so the backend and the API see one kind of error,
with the engine's explanation and never a container's environment. A request that went out but
whose answer was lost (the SDK's read timeout, the connection dropped after it was made) is a
:class:`NoAnswer`: the engine may have carried it out. One that never reached the engine (no
connection could be made) is a plain :class:`ProviderError` without a status.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiimpl_core.errors import ProviderError

T = TypeVar("T")


class NoAnswer(ProviderError):
    """A request sent to the engine whose answer was lost: the engine may have carried it out."""


def connect(timeout: float) -> Any:
    """A ``docker.DockerClient`` for ``DOCKER_HOST`` (or the default socket).

    :param timeout: seconds to connect and to wait for each answer
        (``AIIMPL_DOCKER_TIMEOUT_SECONDS``): the default of every request the client sends, the
        version it asks for here included. A stop waits its grace on top; a request that sets its
        own (the image pull: none; the clean-up's wait for a container) keeps it.
    """
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
    except requests.RequestException as exc:
        if _never_sent(exc):
            raise ProviderError(
                f"local-docker: {action} failed: {_explain(exc)}", provider="local-docker"
            ) from None
        raise NoAnswer(
            f"local-docker: {action} failed: no answer from the engine ({_explain(exc)})",
            provider="local-docker",
        ) from None
    except docker.errors.DockerException as exc:
        raise ProviderError(
            f"local-docker: {action} failed: {_explain(exc)}", provider="local-docker"
        ) from None


def call(action: str, fn: Callable[[], T]) -> T:
    with engine_errors(action):
        return fn()


def _never_sent(exc: BaseException) -> bool:
    """Whether a request failed before it reached the engine: no connection could be made (a
    connect timeout, a refused connection, a missing socket). A read timeout or a connection
    dropped once made may come after the engine received the request."""
    import requests
    import urllib3.exceptions

    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        cause = todo.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(
            cause, urllib3.exceptions.NewConnectionError | ConnectionRefusedError | FileNotFoundError
        ):
            return True
        # requests and urllib3 keep the underlying error in their arguments or in ``reason``
        nested = [*cause.args, getattr(cause, "reason", None), cause.__cause__, cause.__context__]
        todo += [c for c in nested if isinstance(c, BaseException)]
    return False


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode("utf-8", "replace")
    text = str(explanation or exc).strip()
    return text[:300] or type(exc).__name__
