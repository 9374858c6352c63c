"""The Docker engine connection: the ``docker`` SDK configured from the environment.

Errors of the SDK (engine unreachable, API errors) are turned into
:class:`~aiimpl_core.errors.ProviderError` here, so the backend and the API see one kind of error,
with the engine's explanation and never a container's environment. A request that went out but
whose answer was lost (the SDK's read timeout, the connection dropped after it was made) is a
:class:`NoAnswer`: the engine may have carried it out. One that never reached the engine (no
connection could be made) is a plain :class:`ProviderError` without a status.

The pull of an image (:func:`pull`) has a deadline of its own: the SDK sends it without any.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, TypeVar

from aiimpl_core.errors import ProviderError
from aiimpl_core.http import path_segment_problem

from . import config

T = TypeVar("T")


class NoAnswer(ProviderError):
    """A request sent to the engine whose answer was lost: the engine may have carried it out."""


def connect(timeout: float) -> Any:
    """A ``docker.DockerClient`` for ``DOCKER_HOST`` (or the default socket).

    :param timeout: seconds to connect and to wait for each answer
        (``AIIMPL_DOCKER_TIMEOUT_SECONDS``): the default of every request the client sends, the
        version it asks for here included. A stop waits its grace on top; a request that sets its
        own keeps it: the clean-up's wait for a container, and the image pull, which the SDK sends
        with none at all, so that an engine or registry that stops answering would hold its caller
        for ever (the pull is made with :func:`pull` instead, on a client of its own).
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


def container(container_id: str) -> str:
    """``container_id`` to give the SDK, which puts it in the request's path with ``/`` left as is:
    an id or name the engine answered, the database kept or an operator gave (a session destroyed)
    that holds a ``/``, or is ``.`` or ``..``, would reach another resource (``../images/…``), and is
    refused instead (no container id or name holds one).

    :raises ProviderError: when it is no container's id (nothing is sent).
    """
    if path_segment_problem(container_id):
        raise ProviderError(
            f"local-docker: {str(container_id)[:100]!r} is no container id or name (it would name "
            "another resource in the engine's API): nothing was sent",
            provider="local-docker",
        )
    return container_id


def call(action: str, fn: Callable[[], T]) -> T:
    with engine_errors(action):
        return fn()


def pull(image: str, *, version: str, connect_timeout: float, timeout: float) -> None:
    """Pull ``image`` onto the engine, giving up once ``timeout`` seconds have passed in all.

    The SDK sends a pull without a timeout (it overrides the client's), and its ``images.pull``
    reads the progress the engine streams without looking at it: an engine or registry that stops
    answering, or that reports progress for ever, holds the caller for ever, and a pull that failed
    after the engine began to answer (its ``error`` in the stream) is only noticed when the image
    is then missing. So the stream is read here, on a client of its own whose reads wait at most
    ``timeout`` each, in a thread of its own that the caller waits for at most ``timeout``. When
    the time is up, the caller gets the failure at once; the thread closes the connection (the
    engine then drops the pull) at the next progress message, or when its read times out.

    Every failure is a plain :class:`ProviderError`, never a :class:`NoAnswer`, even when the
    pull's answer was lost or late: the create before it was refused (the image missing), so no
    container was made, and a create sent again would only start another pull.

    :param version: the engine's API version (the caller's client asked for it already).
    :param connect_timeout: seconds to connect (``AIIMPL_DOCKER_TIMEOUT_SECONDS``).
    :param timeout: seconds the whole pull may take (``AIIMPL_DOCKER_PULL_TIMEOUT_SECONDS``).
    :raises ProviderError: naming the image: the engine refused the pull (with its status), reported
        a failure in its stream, could not be reached, or took longer than ``timeout``.
    """
    done = threading.Event()
    stop = threading.Event()
    failed: list[ProviderError] = []

    def run() -> None:
        try:
            _pull_stream(image, version, connect_timeout, timeout, stop)
        except ProviderError as exc:
            failed.append(exc)
        except Exception as exc:  # noqa: BLE001 - whatever broke the stream fails the pull, named
            failed.append(_pull_failed(image, exc))
        finally:
            done.set()

    took_longer = ProviderError(
        f"local-docker: pulling image {image} took longer than {timeout:g} s ({config.PULL_TIMEOUT})",
        provider="local-docker",
    )
    started = time.monotonic()
    threading.Thread(target=run, name=f"aiimpl-docker-pull-{image[-40:]}", daemon=True).start()
    if not done.wait(timeout):
        stop.set()
        raise took_longer
    if failed:
        # the stream's own read waits as long as the pull may take: on a loaded machine it may time
        # out before this wait is woken. Whatever failed once the time was up, the pull took too long
        raise took_longer if time.monotonic() - started >= timeout else failed[0]


def _pull_stream(
    image: str, version: str, connect_timeout: float, timeout: float, stop: threading.Event
) -> None:
    """The pull and the reading of its progress (the thread of :func:`pull`), until the stream ends,
    it reports an error, or ``stop`` is set; its connection is closed in any case."""
    import docker.utils

    api = _pull_client_class()(
        read_timeout=timeout, version=version, timeout=connect_timeout, **docker.utils.kwargs_from_env()
    )
    try:
        for event in api.pull(image, stream=True, decode=True):
            if stop.is_set():  # the caller has given up: the engine drops the pull
                return
            if isinstance(event, dict) and (event.get("error") or event.get("errorDetail")):
                detail = event.get("errorDetail")
                message = (detail.get("message") if isinstance(detail, dict) else None) or event.get("error")
                reason = str(message or "").strip()[:300] or "the engine gave no reason"
                raise ProviderError(
                    f"local-docker: pulling image {image} failed: {reason}", provider="local-docker"
                )
    finally:
        for response in api.responses:
            response.close()
        api.close()


@cache
def _pull_client_class() -> type:
    """``docker.APIClient`` whose requests sent without a timeout (the SDK's pull) wait to connect
    as every request does, and at most ``read_timeout`` for each read of the answer: a thread
    reading a stream the engine stopped sending ends too. It keeps the answers, so that their
    connections are closed when the pull ends."""
    import docker

    class PullClient(docker.APIClient):
        def __init__(self, *, read_timeout: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.read_timeout = read_timeout
            self.responses: list[Any] = []

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = (self.timeout, self.read_timeout)
            response = super().request(method, url, *args, **kwargs)
            self.responses.append(response)
            return response

    return PullClient


def _pull_failed(image: str, exc: Exception) -> ProviderError:
    """A failure of the pull as :class:`ProviderError`: the engine's status when it answered one."""
    import docker.errors

    status = exc.status_code if isinstance(exc, docker.errors.APIError) else None
    return ProviderError(
        f"local-docker: pulling image {image} failed: {_explain(exc)}", provider="local-docker", status=status
    )


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
