"""A container id the backend gives the SDK is one segment of the Engine API's paths: the SDK leaves
a ``/`` as is, and ``..`` would reach another resource (``/containers/../images/…/json`` is an
image's inspect)."""

from __future__ import annotations

import pytest
from aiimpl_core.errors import ProviderError

from aiimpl_docker.backend import LocalDockerBackend

from .conftest import FAKE_ENGINE_IMAGE
from .fake_engine import FakeEngine


@pytest.mark.parametrize(
    "session_id", ["..", ".", "%2e%2e", f"../images/{FAKE_ENGINE_IMAGE}", "x/../../images/y", "x?all=1"]
)
def test_a_session_id_that_is_no_path_segment_is_refused_before_any_request(
    backend: LocalDockerBackend, fake_engine: FakeEngine, session_id: str
) -> None:
    backend.docker()  # (the client asks the engine its version first)
    before = list(fake_engine.requests)
    with pytest.raises(ProviderError, match="is no container id or name"):
        backend.destroy_session(session_id)
    assert fake_engine.requests == before
