"""Fixtures every folder of the core's tests shares: the test kit's in-memory tracker and runner,
each with its default id (a folder or module that needs another defines its own)."""

from __future__ import annotations

import pytest

from aiimpl_core.testing.fakes import FakeRunner, FakeTracker


@pytest.fixture
def tracker() -> FakeTracker:
    """An in-memory tracker (``fake-tracker``), for the tests that run no real tracker plugin."""
    return FakeTracker()


@pytest.fixture
def runner() -> FakeRunner:
    """An in-memory runner backend (``github-actions``), for the tests that run no real runner plugin."""
    return FakeRunner()
