"""``GET``/``POST /api/runner-mode``: every row of the reference's table, and the saved/effective modes."""

from __future__ import annotations

from typing import Any

import pytest

from aiimpl_core.services import settings

ENV_SET = (
    "RUNNER_MODE env var is set; persisted to DB but has no effect at runtime until the env var is unset"
)
BAD_MODE = "mode must be one of: default, gha, fly, local, shadow"
#: the admin plugins install the gha and fly runner modes, not local (Docker)
NO_LOCAL = ("Runner mode local selects no installed and enabled runner backend. Install or enable its "
            "plugin, or change the runner mode. Until then every issue waits, blocked (backend-unavailable).")


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def post(client: Any, headers: dict[str, str], body: Any) -> Any:
    if isinstance(body, bytes):
        return client.post(
            "/api/runner-mode", data=body, headers={**headers, "Content-Type": "application/json"}
        )
    return client.post("/api/runner-mode", json=body, headers=headers)


# The reference's table, every row (the 409 row is provoked with RUNNER_MODE set, below).
ROWS: list[tuple[str, Any, int, str]] = [
    ("not JSON", b"mode=gha", 400, "Invalid request body"),
    ("JSON string", b'"gha"', 400, "Invalid request body"),
    ("unknown mode", {"mode": "turbo"}, 400, BAD_MODE),
    ("mode missing", {}, 400, BAD_MODE),
    ("mode not a string", {"mode": 1}, 400, BAD_MODE),
    ("mode wrong case", {"mode": "GHA"}, 400, BAD_MODE),
]


@pytest.mark.parametrize("body,status,message", [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_runner_mode_table(client, admin_headers, body, status, message) -> None:
    resp = post(client, admin_headers, body)
    assert (resp.status_code, resp.get_json()) == (status, {"error": message})
    assert settings.persisted_runner_mode() == "default"


def test_env_override_is_409_but_the_value_is_saved(app, client, admin_headers) -> None:
    app.config["RUNNER_MODE"] = "fly"
    resp = post(client, admin_headers, {"mode": "shadow"})
    assert (resp.status_code, resp.get_json()) == (409, {"error": ENV_SET})
    assert settings.persisted_runner_mode() == "shadow"
    state = client.get("/api/runner-mode", headers=admin_headers).get_json()
    assert state == {"mode": "shadow", "effective": "fly", "envOverride": "fly", "warnings": []}


def test_an_override_not_in_force_is_no_409(app, client, admin_headers) -> None:
    # set in the app's config directly: the environment variable is refused at start-up
    app.config["RUNNER_MODE"] = "GHA"
    resp = post(client, admin_headers, {"mode": "shadow"})
    assert resp.status_code == 200
    assert resp.get_json() == {"mode": "shadow", "effective": "shadow", "envOverride": None, "warnings": []}


@pytest.mark.parametrize("value", ["GHA", "bogus", "fly machines"])
def test_an_unknown_runner_mode_is_refused_at_start_up(value) -> None:
    from aiimpl_core.config import load
    from aiimpl_core.errors import ConfigError

    with pytest.raises(ConfigError, match="RUNNER_MODE: must be one of default, gha, fly, local, shadow"):
        load({"RUNNER_MODE": value})
    assert load({"RUNNER_MODE": " fly "})["RUNNER_MODE"] == "fly"
    assert load({"RUNNER_MODE": ""})["RUNNER_MODE"] is None


@pytest.mark.parametrize("mode", settings.RUNNER_MODES)
def test_every_mode_is_saved(client, admin_headers, mode) -> None:
    resp = post(client, admin_headers, {"mode": mode})
    assert resp.status_code == 200
    warnings = [NO_LOCAL] if mode == "local" else []
    assert resp.get_json() == {"mode": mode, "effective": mode, "envOverride": None, "warnings": warnings}
    assert client.get("/api/runner-mode", headers=admin_headers).get_json()["mode"] == mode


def test_a_mode_whose_backend_is_not_installed_is_saved_with_a_warning(app, client, admin_headers,
                                                                       adm_mapping) -> None:
    """Saved (the plugin may be installed next), and said: in force, it holds every issue."""
    from aiimpl_core.services.dispatch import run_cycle

    adm_mapping("ENG")
    assert post(client, admin_headers, {"mode": "local"}).get_json()["warnings"] == [NO_LOCAL]
    assert client.get("/api/runner-mode", headers=admin_headers).get_json()["warnings"] == [NO_LOCAL]
    run_cycle()
    [blocker] = client.get("/api/blockers", headers=admin_headers).get_json()
    assert NO_LOCAL.startswith(blocker["message"]) and blocker["reason"] in NO_LOCAL
    # saved, not in force (RUNNER_MODE forces an installed one): said as what comes next, not as
    # holding the issues now (gha dispatches them)
    app.config["RUNNER_MODE"] = "gha"
    state = client.get("/api/runner-mode", headers=admin_headers).get_json()
    assert (state["effective"], state["warnings"]) == ("gha", [
        "Runner mode local selects no installed and enabled runner backend. Install or enable its "
        "plugin, or change the runner mode. It is saved, not in force (RUNNER_MODE forces gha): once "
        "it is, every issue will wait, blocked (backend-unavailable)."])
    # and in force, not saved
    app.config["RUNNER_MODE"] = "local"
    assert post(client, admin_headers, {"mode": "fly"}).status_code == 409
    assert client.get("/api/runner-mode", headers=admin_headers).get_json()["warnings"] == [NO_LOCAL]


def test_leaving_shadow_mode_dispatches_for_real_what_it_dispatched(client, admin_headers, adm_tracker,
                                                                     adm_runner, adm_mapping) -> None:
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job
    from aiimpl_core.services.dispatch import run_cycle

    def jobs() -> list[tuple[bool, str]]:
        db.session.expire_all()
        return [(j.shadow, j.status) for j in db.session.scalars(db.select(Job).order_by(Job.id))]

    adm_mapping("ENG")
    assert post(client, admin_headers, {"mode": "shadow"}).status_code == 200
    run_cycle()
    assert jobs() == [(True, "dispatched")] and adm_runner.runs == {}
    assert post(client, admin_headers, {"mode": "shadow"}).status_code == 200  # (saved again: kept)
    assert jobs() == [(True, "dispatched")]

    assert post(client, admin_headers, {"mode": "default"}).status_code == 200
    assert jobs() == [(True, "timed_out")]
    run_cycle()
    assert jobs() == [(True, "timed_out"), (False, "dispatched")]
    assert [run.request.issue_key for run in adm_runner.runs.values()] == ["ENG-1"]


def test_first_saves_at_once_each_answer_and_one_mode_is_kept(app, admin_headers) -> None:
    """Eight admins save a mode before any was stored, at the same moment (several workers): each
    is answered, none with a duplicate key's 500, and the mode stored is one of theirs."""
    from sqlalchemy import delete

    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Setting
    from aiimpl_core.testing.orchestrator import each_at_once

    def save(mode: str) -> Any:
        return lambda client: client.post("/api/runner-mode", json={"mode": mode}, headers=admin_headers)

    modes = ["gha", "fly", "local", "shadow"] * 2
    for _ in range(8):
        db.session.execute(delete(Setting))
        db.session.commit()
        answers = each_at_once(app, [save(mode) for mode in modes])
        assert [answer.status_code for answer in answers] == [200] * len(modes)
        assert settings.persisted_runner_mode() in modes
