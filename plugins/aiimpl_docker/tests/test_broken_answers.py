"""Engine answers that break the Engine API description: the read fails with a
:class:`~aiimpl_core.errors.ProviderError` naming what is wrong (the reconcile cycle is skipped, the
cancel logged), never a run taken for missing (its job ended ``run_not_found``), ended, or of a
container ``None``, and never a traceback reported as the plugin's bug.

The engine's answers are faked at the API client (``backend.docker().api``), below which the SDK
only decodes JSON; the SDK's own collections above it are the real ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiimpl_core.errors import DispatchUnanswered, ProviderError
from aiimpl_core.testing.contract import make_context, sample_dispatch_request, sample_in_flight_run
from aiimpl_core.types import RunPhase
from docker.models.containers import ContainerCollection

from aiimpl_docker import client as engine_client
from aiimpl_docker.backend import LocalDockerBackend

INSTANCE = "broken-answers"
CID = "c" * 64


def summary(**over: Any) -> dict[str, Any]:
    labels = {"aiimpl.job": "7", "aiimpl.issue": "ENG-1", "aiimpl.instance": INSTANCE}
    created = int(datetime.now(UTC).timestamp())
    return {"Id": CID, "Labels": labels, "State": "exited", "Created": created, **over}


def inspected(**over: Any) -> dict[str, Any]:
    state = {"Status": "exited", "ExitCode": 0, "FinishedAt": "2026-01-01T00:00:00Z"}
    return {"Id": CID, "State": state, "Config": {"Env": [], "Labels": summary()["Labels"]}, **over}


class Api:
    """The API client's methods the backend calls, answering what the test gives."""

    api_version = "1.41"

    def __init__(self, listing: Any = None, inspect: Any = None) -> None:
        self.listing = [summary()] if listing is None else listing
        self.inspect = inspected() if inspect is None else inspect
        self.calls: list[str] = []

    def containers(self, **_: Any) -> Any:
        return self.listing

    def inspect_container(self, container_id: str) -> Any:
        self.calls.append(f"inspect {container_id}")
        return self.inspect

    def logs(self, container_id: str, **_: Any) -> bytes:
        return b"session output\n"

    def remove_container(self, container_id: str, **_: Any) -> None:
        self.calls.append(f"remove {container_id}")

    def stop(self, container_id: str, **_: Any) -> None:
        self.calls.append(f"stop {container_id}")

    def start(self, container_id: str) -> None:
        raise engine_client.NoAnswer("local-docker: starting failed: no answer", provider="local-docker")


def backend_with(api: Api) -> LocalDockerBackend:
    backend = LocalDockerBackend(make_context({"AIIMPL_DOCKER_INSTANCE": INSTANCE}))
    sdk = SimpleNamespace(api=api)
    sdk.containers = ContainerCollection(client=sdk)
    backend._docker = sdk
    return backend


def run_of_job(run_id: str | None = CID) -> Any:
    request = sample_dispatch_request(7, issue_key="ENG-1")
    return sample_in_flight_run(request, run_id=run_id, dispatched_at=datetime.now(UTC))


def test_a_well_formed_answer_is_read() -> None:
    (state,) = backend_with(Api()).poll_runs([run_of_job()])
    assert state.phase is RunPhase.SUCCEEDED and state.run_id == CID


@pytest.mark.parametrize(
    ("listing", "said"),
    [
        ({"Id": CID}, "is a dict, not a list of containers"),
        (None, "is a NoneType, not a list"),
        ([summary(), "oops"], "lists a str (entry 1), not a container"),
        ([{k: v for k, v in summary().items() if k != "Id"}], "with no Id (entry 0)"),
        ([summary(Labels=None)], "with no Labels object (entry 0)"),
        ([summary(State=None)], "with no State (entry 0)"),
    ],
)
def test_poll_runs_fails_on_a_listing_that_is_not_a_list_of_containers(listing: Any, said: str) -> None:
    api = Api(listing=listing)
    api.listing = listing  # (None too)
    with pytest.raises(ProviderError, match="listing containers failed") as raised:
        backend_with(api).poll_runs([run_of_job(), run_of_job(None)])
    assert said in raised.value.message
    assert not [c for c in api.calls if c.startswith("remove")]


@pytest.mark.parametrize(
    ("inspect", "said"),
    [
        (["not", "an", "object"], "is a list, not a container"),
        (inspected(State=None), "has no State with a Status"),
        (inspected(State={"Status": "exited"}), "has no ExitCode"),
        (inspected(State={"Status": "exited", "ExitCode": "1"}), "has no ExitCode"),
        (inspected(Config={"Env": "TOKEN=x"}), "Config.Env that is not a list of strings"),
    ],
)
def test_an_ended_containers_broken_inspect_is_no_failure_of_its_run(
    inspect: Any, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a run reported FAILED ("exited without an exit code") or a traceback; now the
    container's read fails, logged, and it is read again next cycle."""
    states = backend_with(Api(inspect=inspect)).poll_runs([run_of_job()])
    assert states == []
    assert said in caplog.text


def test_a_cancel_never_takes_an_inspect_without_id_for_a_container_named_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = Api(inspect={k: v for k, v in inspected().items() if k != "Id"})
    backend_with(api).cancel(run_of_job())
    assert api.calls == [f"inspect {CID}"]
    assert "has no container Id" in caplog.text


def test_a_start_unanswered_is_not_taken_for_started_when_the_inspect_has_no_state() -> None:
    api = Api(inspect=inspected(State=None))
    backend = backend_with(api)
    with pytest.raises(DispatchUnanswered):
        backend._start(sample_dispatch_request(7, issue_key="ENG-1"), CID)


def test_a_create_unanswered_is_not_linked_to_an_id_the_inspect_does_not_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: the container found by its name after two lost creates was linked as ``None``."""
    backend = backend_with(Api(inspect={k: v for k, v in inspected().items() if k != "Id"}))

    def lost(options: Any) -> str:
        raise engine_client.NoAnswer("local-docker: creating failed: no answer", provider="local-docker")

    monkeypatch.setattr(backend, "_create_once", lost)
    request = sample_dispatch_request(7, issue_key="ENG-1")
    with pytest.raises(DispatchUnanswered):
        backend._create(request, {"name": "aiimpl-job-7-abcdef"})


def test_logs_the_sdk_cannot_read_are_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The SDK's ``logs`` inspects the container again and reads ``Config.Tty`` from that answer:
    without it, a ``KeyError`` (before: out of ``poll_runs``, reported as the plugin's bug)."""
    api = Api()

    def logs(container_id: str, **_: Any) -> bytes:
        return {}["Tty"]  # as the SDK fails on an inspect without Config.Tty

    api.logs = logs  # type: ignore[method-assign]
    assert backend_with(api).poll_runs([run_of_job()]) == []
    assert "reading a container's logs failed" in caplog.text
