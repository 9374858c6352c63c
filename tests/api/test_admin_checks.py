"""``GET /api/checks``: ``aiimpl check`` for the admin UI."""

from __future__ import annotations

import pytest

URL = "/api/checks"


@pytest.fixture
def aiimpl_plugins(adm_plugins) -> list[object]:
    return adm_plugins


def test_checks_every_connection(client, admin_headers, adm_mapping) -> None:
    adm_mapping("ENG")
    resp = client.get(URL, headers=admin_headers)
    assert resp.status_code == 200
    body = resp.get_json()
    got = {(c["kind"], c["provider"], c["name"]): c["status"] for c in body["checks"]}
    assert got[("ticketing", "fake-tracker", "configured")] == "ok"
    assert got[("runner", "github-actions", "configured")] == "ok"
    assert got[("runner", "fly-machines", "configured")] == "ok"
    # no GitHub credentials, and a mapping whose sessions push to GitHub; no model key for the
    # sessions of a backend that keeps secrets (the admin plugins' github-actions fake does)
    assert got[("github", "github", "configured")] == "failed"
    assert got[("model", "anthropic", "session environment")] == "failed"
    assert body["failed"] == 2
    # the last line of `aiimpl check`, which the Checks panel shows
    skipped = sum(c["status"] == "skipped" for c in body["checks"])
    passed = len(body["checks"]) - skipped - 2
    assert body["summary"] == (f"{len(body['checks'])} checks: {passed} passed, 2 failed"
                               + (f", {skipped} skipped" if skipped else ""))
    assert set(body["checks"][0]) == {"kind", "provider", "name", "status", "detail"}


def test_an_install_without_mappings_fails_nothing(client, admin_headers) -> None:
    body = client.get(URL, headers=admin_headers).get_json()
    assert body["failed"] == 0
    assert body["summary"].startswith(f"{len(body['checks'])} checks: ") and "failed" not in body["summary"]
    assert {c["status"] for c in body["checks"] if c["kind"] == "github"} == {"skipped"}


def test_an_admin_session_is_required(client) -> None:
    resp = client.get(URL)
    assert (resp.status_code, resp.get_json()) == (401, {"error": "Unauthorized"})
