"""A thin client of the Fly Machines REST API (``https://api.machines.dev/v1``).

Every call goes through the core's :class:`~aiimpl_core.http.HttpClient` (timeouts, retries on
429/5xx honouring ``Retry-After``, errors mapped to :class:`~aiimpl_core.errors.ProviderError`
with Fly's ``error`` message). Only the operations the backend uses are wrapped.

Fly's error body (``ErrorResponse``) carries a ``status`` code besides its ``error`` text; the one
the description names, ``insufficient_capacity``, says that Fly could not place a machine: a
creation answered with it created nothing (:class:`NoCapacity`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiimpl_core.errors import DispatchUnanswered, ProviderError
from aiimpl_core.http import HttpClient, may_have_been_done, path_segment

#: Fly's ``ErrorResponse.status`` when it cannot place a machine (the description's
#: ``main.statusCode``, ``capacityErr``)
INSUFFICIENT_CAPACITY = "insufficient_capacity"


class NoCapacity(ProviderError):
    """Fly answered a machine creation that it has no capacity for it (``insufficient_capacity``):
    no machine was created."""


def no_capacity(exc: ProviderError) -> bool:
    """Whether a failed request was answered by Fly's API itself with ``insufficient_capacity``.

    Only Fly's ``ErrorResponse`` carries that ``status``: a proxy's page or a lost answer never
    does. The description pairs it with no HTTP status, so it is read from the body whatever the
    status."""
    return isinstance(exc.detail, Mapping) and exc.detail.get("status") == INSUFFICIENT_CAPACITY


class FlyClient:
    """Machines of one Fly app."""

    def __init__(self, http: HttpClient, app: str) -> None:
        self.http = http
        self.app = app

    def _app(self) -> str:
        return f"/apps/{path_segment(self.app, provider='fly', what='app name')}"

    def _machines(self, machine_id: str | None = None, action: str | None = None) -> str:
        """The path of the app's machines, of one of them, or of an action on it. A machine id comes
        from an operator (a session destroyed), Fly's answers or the database: ``..`` would be the
        app itself (:func:`~aiimpl_core.http.path_segment` refuses it)."""
        path = f"{self._app()}/machines"
        if machine_id is not None:
            path += f"/{path_segment(machine_id, provider='fly', what='machine id')}"
        if action:
            path += f"/{action}"
        return path

    def get_app(self) -> dict[str, Any] | None:
        """``GET /apps/{app}``: the app (``name``, ``status``, ``organization``); ``None`` when Fly
        knows no such app, or not for this token."""
        resp = self.http.get(self._app(), expected=(200, 404))
        return None if resp.status_code == 404 else _object(self.http.json(resp))

    def create_machine(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /apps/{app}/machines``: create and start a machine; returns the Machine.

        Never sent twice (the HTTP client repeats a ``POST`` only on a 429, which did nothing): a
        second request could start a second machine for the same job.

        :raises NoCapacity: when Fly answered that it cannot place the machine
            (``insufficient_capacity``, whatever the HTTP status): none was created. The Machines
            API description has the caller send the creation again, or to another region.
        :raises DispatchUnanswered: when the request went out but no machine came back (no answer,
            any other ``5xx``, a ``2xx`` whose body is not a machine with its id): Fly may have
            created it.
        :raises ProviderError: when Fly refused (``4xx``) or the request was never sent.
        """
        try:
            resp = self.http.post(self._machines(), json=body)
        except ProviderError as exc:
            if no_capacity(exc):
                region = body.get("region")
                where = f" in region {region}" if isinstance(region, str) and region else ""
                raise NoCapacity(
                    f"{exc.message} (Fly has no capacity for the machine{where}: none was created)",
                    provider=exc.provider,
                    status=exc.status,
                    retry_after=exc.retry_after,
                    detail=exc.detail,
                ) from None
            if not may_have_been_done(exc):
                raise
            raise DispatchUnanswered.of(exc) from None
        try:
            machine = _object(self.http.json(resp))
        except ProviderError as exc:
            # a 2xx: Fly created the machine, but what came back does not say which
            raise DispatchUnanswered(exc.message, provider=exc.provider) from None
        if not isinstance(machine.get("id"), str) or not machine["id"]:
            raise DispatchUnanswered(
                "fly: the machine creation was answered without a machine id", provider=self.http.provider
            )
        return machine

    def list_machines(self, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """``GET /apps/{app}/machines``: every machine of the app (one call).

        Not paged: Fly pages this listing only when asked to (``limit`` or ``cursor``), and then
        answers an object, which is refused here like any answer that is not the array.

        :raises ProviderError: when Fly refuses, or the answer is not an array of machine objects
            (an entry that is not one is a broken answer, never a machine left out unsaid: the run
            it was would be reported not found).
        """
        params = {"include_deleted": "true"} if include_deleted else None
        body = self.http.json(self.http.get(self._machines(), params=params))
        if not isinstance(body, list):
            raise ProviderError("fly: the machine list is not a JSON array", provider="fly")
        if not all(isinstance(m, dict) for m in body):
            raise ProviderError("fly: the machine list holds an entry that is not a machine object",
                                provider="fly")
        return body

    def get_machine(self, machine_id: str) -> dict[str, Any] | None:
        """``GET /apps/{app}/machines/{id}``; ``None`` when Fly knows no such machine."""
        resp = self.http.get(self._machines(machine_id), expected=(200, 404))
        return None if resp.status_code == 404 else _object(self.http.json(resp))

    def stop_machine(self, machine_id: str) -> None:
        """``POST /apps/{app}/machines/{id}/stop`` (SIGTERM, then Fly's kill timeout)."""
        self.http.post(
            self._machines(machine_id, "stop"),
            json={"signal": "SIGTERM"},
            retry_unsafe=True,
            expected=(200, 404),
        )

    def destroy_machine(self, machine_id: str) -> bool:
        """``DELETE /apps/{app}/machines/{id}?force=true``; false when Fly knows no such machine."""
        resp = self.http.delete(self._machines(machine_id), params={"force": "true"}, expected=(200, 404))
        return resp.status_code == 200


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProviderError("fly: the answer is not a JSON object", provider="fly")
    return body

