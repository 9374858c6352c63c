"""``LinearProvider.check`` (what ``aiimpl check`` runs) against the fake Linear."""

from __future__ import annotations

from typing import Any

import pytest
from aiimpl_core.errors import ProviderError
from aiimpl_core.services.checks import run_checks
from aiimpl_core.testing.contract import make_context, sample_mapping
from aiimpl_core.testing.fakes import add_mapping
from aiimpl_core.types import CheckResult

import aiimpl_linear.plugin
from aiimpl_linear.provider import LinearProvider
from aiimpl_linear.testing import FakeLinear


def _mappings(*keys: str) -> list[Any]:
    return [sample_mapping(team_key=key, ticketing={"provider": "linear"}) for key in keys]


def _by_name(results: Any) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def _assert_no_secret(results: Any, fake: FakeLinear) -> None:
    for result in results:
        assert fake.api_key not in result.detail and fake.api_key not in result.name


def test_check_all_ok_in_one_request(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_team("OPS", "Operations")
    fake.add_label("AI-Implement", None)  # a workspace label serves every team
    fake.add_label("AI-Working", "ENG")

    results = provider.check(_mappings("ENG", "OPS"))

    assert [r.name for r in results] == ["credentials", "team ENG", "team OPS"]
    assert all(r.ok for r in results), results
    got = _by_name(results)
    assert got["credentials"].detail == "signed in as Fake User"
    assert got["team ENG"].detail == (
        "Engineering: trigger label AI-Implement found; done state Done; "
        "stage labels created on first use: AI-Planning, Plan-Complete, Ready for Review"
    )
    assert got["team OPS"].detail.startswith("Operations: trigger label AI-Implement found; done state Done")
    # one request for the credentials, every team and every label: not one per mapping
    assert fake.operations() == ["SetupCheck"]
    _assert_no_secret(results, fake)


def test_check_of_many_teams_with_labels_of_their_own_finds_every_one(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    # 120 mapped teams, each with the five AI labels of its own: more teams than a page of teams
    # and more labels than a page of labels, none of them reported missing for it
    keys = [f"T{n}" for n in range(120)]
    for key in keys:
        fake.add_team(key)
        for name in ("AI-Implement", "AI-Planning", "Plan-Complete", "AI-Working", "Ready for Review"):
            fake.add_label(name, key)

    results = provider.check(_mappings(*keys))

    assert [r.name for r in results] == ["credentials", *(f"team {key}" for key in sorted(keys))]
    assert [r for r in results if not r.ok] == []
    assert all("stage labels created on first use" not in r.detail for r in results)
    assert fake.operations() == ["SetupCheck"] * 3  # 40 teams a request


def test_check_without_mappings_checks_the_credentials(fake: FakeLinear, provider: LinearProvider) -> None:
    results = provider.check([])
    assert results == [CheckResult("credentials", True, "signed in as Fake User")]
    assert len(fake.requests) == 1


def test_check_reports_refused_credentials(fake: FakeLinear) -> None:
    provider = LinearProvider(make_context({**fake.config(), "AIIMPL_LINEAR_API_KEY": "lin_api_wrong_key"}))

    results = provider.check(_mappings("ENG"))

    assert len(results) == 1 and results[0].name == "credentials" and not results[0].ok
    assert "Authentication required" in results[0].detail and "AUTHENTICATION_ERROR" in results[0].detail
    assert "lin_api_wrong_key" not in results[0].detail
    assert len(fake.requests) == 1


def test_check_raises_other_failures(fake: FakeLinear, provider: LinearProvider) -> None:
    # not the credentials: the core reports it as the connection's failure
    fake.fail("SetupCheck", message="Internal error", code="INTERNAL_SERVER_ERROR")
    with pytest.raises(ProviderError, match="SetupCheck failed: Internal error"):
        provider.check(_mappings("ENG"))


def test_check_reports_a_missing_team(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_label("AI-Implement", None)

    got = _by_name(provider.check(_mappings("ENG", "NOPE")))

    assert got["credentials"].ok and got["team ENG"].ok
    assert got["team NOPE"] == CheckResult("team NOPE", False, "no Linear team with key NOPE")
    assert fake.operations() == ["SetupCheck"]


def test_check_finds_the_team_of_a_mapping_whose_key_is_in_lower_case(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    """Linear's team keys are upper-case: the team of a mapping saved as ``eng`` is ENG, with its
    own labels, as the listing and the webhook find its issues."""
    fake.add_label("AI-Implement", "ENG")  # the team's own label, not the workspace's
    fake.add_label("AI-Working", "ENG")

    results = _by_name(provider.check(_mappings("eng")))

    assert results["team eng"].ok, results
    assert results["team eng"].detail == (
        "Engineering (Linear key ENG): trigger label AI-Implement found; done state Done; "
        "stage labels created on first use: AI-Planning, Plan-Complete, Ready for Review"
    )
    report = provider.check_setup(["eng"])
    assert report["ok"] and report["teams"]["eng"]["key"] == "ENG"
    assert report["teams"]["eng"]["labels"] == ["AI-Implement", "AI-Working"]


def test_check_reports_a_missing_trigger_label(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_team("OPS")
    fake.add_label("AI-Implement", "OPS")  # another team's label is no use to ENG
    fake.add_label("AI-Planning", None)

    got = _by_name(provider.check(_mappings("ENG", "OPS")))

    eng = got["team ENG"]
    assert not eng.ok
    assert eng.detail.startswith("Engineering: label AI-Implement not found: add it in Linear")
    assert got["team OPS"].ok


def test_check_ignores_a_label_group_named_like_the_trigger(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_label("AI-Implement", None, is_group=True)  # a group cannot be put on an issue
    assert not _by_name(provider.check(_mappings("ENG")))["team ENG"].ok


def test_check_reports_a_retired_trigger_label(fake: FakeLinear, provider: LinearProvider) -> None:
    """A retired label cannot be added to an issue, and an issue carrying one is not triggered:
    the team cannot use its trigger until a person restores it (the orchestrator never does)."""
    fake.add_label("AI-Implement", "ENG", retired=True)

    eng = _by_name(provider.check(_mappings("ENG")))["team ENG"]

    assert not eng.ok
    assert eng.detail.startswith("Engineering: label AI-Implement is retired: restore it in Linear")
    assert fake.operations() == ["SetupCheck"]


def test_check_lists_retired_stage_labels_as_restored_on_first_use(
    fake: FakeLinear, provider: LinearProvider
) -> None:
    fake.add_label("AI-Implement", None)
    fake.add_label("AI-Implement", "ENG", retired=True)  # the workspace's active one serves
    fake.add_label("AI-Working", "ENG", retired=True)
    fake.add_label("AI-Planning", None, retired=True)
    fake.add_label("AI-Planning", "ENG")

    eng = _by_name(provider.check(_mappings("ENG")))["team ENG"]

    assert eng.ok, eng
    assert eng.detail == (
        "Engineering: trigger label AI-Implement found; done state Done; "
        "stage labels created on first use: Plan-Complete, Ready for Review; "
        "retired stage labels restored on first use: AI-Working"
    )
    report = provider.check_setup(["ENG"])["teams"]["ENG"]
    assert report["labels"] == ["AI-Implement", "AI-Planning"]
    assert report["missing"] == ["Plan-Complete", "Ready for Review"]
    assert report["retired"] == ["AI-Working"]


def test_check_reports_a_team_without_done_state(fake: FakeLinear, provider: LinearProvider) -> None:
    fake.add_team("ODD", "Odd", states=[("Todo", "unstarted"), ("Doing", "started")])
    fake.add_label("AI-Implement", None)

    result = _by_name(provider.check(_mappings("ODD")))["team ODD"]

    assert result == CheckResult(
        "team ODD", False, "Odd: no workflow state of type completed (needed when a PR merges)"
    )


def test_check_is_read_only(fake: FakeLinear, provider: LinearProvider) -> None:
    provider.check(_mappings("ENG"))  # the trigger label is missing: reported, never created
    assert not fake.store.labels


# -- through the core ---------------------------------------------------------------------------


@pytest.fixture
def aiimpl_plugins() -> list[object]:
    return [aiimpl_linear.plugin]


@pytest.fixture
def aiimpl_config(fake: FakeLinear) -> dict[str, Any]:
    return fake.config()


def test_run_checks_reports_the_linear_rows(app: Any, fake: FakeLinear) -> None:
    for key in ("ENG", "NOPE"):
        add_mapping(key, provider="linear", repo="api")
    fake.add_label("AI-Implement", None)

    rows = {row.name: row for row in run_checks() if row.provider == "linear"}

    assert {name: (row.kind, row.status) for name, row in rows.items()} == {
        "credentials": ("ticketing", "ok"),
        "team ENG": ("ticketing", "ok"),
        "team NOPE": ("ticketing", "failed"),
    }
    assert rows["team NOPE"].detail == "no Linear team with key NOPE"
    assert fake.operations() == ["SetupCheck"]
    assert all(fake.api_key not in row.detail for row in rows.values())
