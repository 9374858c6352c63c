"""An error shown to an operator or a caller that quotes a remote answer is masked of the
orchestrator's secrets, as its log lines are: a tracker, GitHub or a proxy in between may echo the
failed request's credentials in its error."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.errors import AiimplError, ProviderError
from aiimpl_core.testing.orchestrator import poll_once

TOKEN = "ghp_" + "Q7x2" * 9


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_GITHUB_TOKEN": TOKEN}


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def test_a_failed_workflow_sync_does_not_answer_the_token_it_quotes(
    client, admin_headers, adm_mapping, adm_runner, monkeypatch
) -> None:
    adm_mapping("ENG")

    def echo(self: Any, mapping: Any) -> Any:
        raise ProviderError(f"GitHub API error 401: {{'Authorization': 'Bearer {TOKEN}'}}", status=401)

    monkeypatch.setattr(adm_runner.backend_class, "sync_workflows", echo)
    failed = client.post("/api/mappings/ENG/sync-workflows", headers=admin_headers)
    assert failed.status_code == 500
    assert TOKEN not in failed.get_data(as_text=True)
    assert failed.get_json() == {"error": "GitHub API error 401: {'Authorization': 'Bearer [REDACTED]'}"}


def test_a_cycle_report_does_not_show_the_token_a_tracker_quoted(app, adm_mapping, adm_tracker, monkeypatch):
    adm_mapping("ENG")

    def echo(self: Any, teams: Any) -> Any:
        raise AiimplError(f"listing refused: the proxy saw Authorization: token {TOKEN}")

    monkeypatch.setattr(adm_tracker.provider_class, "iter_triggered", echo)
    report = poll_once().as_dict()
    assert report["providersSkipped"] == {
        "fake-tracker": "listing failed: listing refused: the proxy saw Authorization: token [REDACTED]"
    }
