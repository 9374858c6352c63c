"""Fixtures of the Fly plugin's tests: a controllable clock, the fake Machines API, the backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiimpl_core.testing.contract import make_context
from aiimpl_core.testing.fakes import FakeTracker

import aiimpl_fly.plugin
from aiimpl_fly.backend import FlyMachinesBackend
from aiimpl_fly.testing import FakeFly

TOKEN = "fly-secret-token-4f9a"
APP = "aiimpl-sessions"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake_fly(clock: Clock) -> Iterator[FakeFly]:
    with FakeFly(token=TOKEN, app=APP, clock=clock) as fly:
        yield fly
        # every exchange of every test is checked against Fly's description
        fly.server.assert_clean()


@pytest.fixture
def fly_config(fake_fly: FakeFly) -> dict[str, Any]:
    return {
        "AIIMPL_FLY_API_TOKEN": TOKEN,
        "AIIMPL_FLY_APP": APP,
        "AIIMPL_FLY_API_URL": fake_fly.url,
        "AIIMPL_FLY_IMAGE": "registry.fly.io/aiimpl-session:v1",
        "AIIMPL_FLY_REGION": "ams",
    }


@pytest.fixture
def backend(fly_config: dict[str, Any], clock: Clock) -> FlyMachinesBackend:
    return FlyMachinesBackend(make_context(fly_config, clock=clock))


# -- inside the orchestrator (the app fixture): a tracker and the fake Fly on real time ----------


@pytest.fixture
def tracker() -> FakeTracker:
    return FakeTracker()


@pytest.fixture
def app_fly() -> Iterator[FakeFly]:
    with FakeFly(token=TOKEN, app=APP) as fly:  # real time: the orchestrator's clock
        yield fly
        fly.server.assert_clean()


@pytest.fixture
def aiimpl_plugins(tracker: FakeTracker) -> list[object]:
    return [tracker.plugin, aiimpl_fly.plugin]
