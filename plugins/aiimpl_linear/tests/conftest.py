"""Fixtures: a fake Linear server per test (schema built once per session), a provider bound to it,
and an app that loads the Linear plugin (and an in-memory runner) configured for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiimpl_core.testing.contract import make_context
from aiimpl_core.testing.fakes import FakeRunner

import aiimpl_linear.plugin
from aiimpl_linear.provider import LinearProvider
from aiimpl_linear.testing import FakeLinear, linear_schema


@pytest.fixture(scope="session", autouse=True)
def _linear_schema_once() -> None:
    linear_schema()  # built once; every FakeLinear of the session reuses it


@pytest.fixture
def fake() -> Iterator[FakeLinear]:
    """A fake Linear with team ENG. Fails the test if any request did not validate against the schema."""
    with FakeLinear() as server:
        server.add_team("ENG", "Engineering")
        yield server
        assert server.validation_errors == [], server.validation_errors


@pytest.fixture
def linear_config(fake: FakeLinear) -> dict[str, Any]:
    return fake.config()


@pytest.fixture
def provider(linear_config: dict[str, Any]) -> LinearProvider:
    return LinearProvider(make_context(linear_config))


@pytest.fixture
def runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def aiimpl_plugins(runner: FakeRunner) -> list[object]:
    return [aiimpl_linear.plugin, runner.plugin]


@pytest.fixture
def aiimpl_config(fake: FakeLinear) -> dict[str, Any]:
    return fake.config()
