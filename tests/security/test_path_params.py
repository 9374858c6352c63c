"""Path parameters of the admin API: any text answers the reference's 404, never a 500."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("suffix", ["", "/steps"])
@pytest.mark.parametrize("job_id", ["2147483648", "9999999999"])
def test_job_id_beyond_the_integer_range(request, app, client, sec_admin, job_id, suffix):
    resp = client.get(f"/api/jobs/{job_id}{suffix}", headers=sec_admin)
    assert resp.status_code == 404 and resp.get_json() == {"error": "job not found"}


@pytest.mark.parametrize("suffix", ["", "/steps"])
def test_job_id_that_isdigit_but_is_not_a_number(client, sec_admin, suffix):
    resp = client.get(f"/api/jobs/%C2%B2{suffix}", headers=sec_admin)  # "²"
    assert resp.status_code == 404 and resp.get_json() == {"error": "job not found"}


@pytest.mark.parametrize("suffix", ["", "/steps"])
@pytest.mark.parametrize(
    "job_id",
    ["0", "-1", "1e3", "abc", "2147483647", "99999999999999999999", "%ED%A0%80", "x" * 3000, "%D9%A1"],
)
def test_odd_job_ids_are_not_found(client, sec_admin, job_id, suffix):
    resp = client.get(f"/api/jobs/{job_id}{suffix}", headers=sec_admin)
    assert resp.status_code == 404 and resp.get_json() == {"error": "job not found"}


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE", "POST"])
@pytest.mark.parametrize("team", ["%ED%A0%80", "%FF", "x" * 3000, "ENG%2F..", "..%2F..", "%20"])
def test_odd_team_keys_are_not_found(client, sec_admin, sec_mapping, method, team):
    sec_mapping("ENG")
    url = f"/api/mappings/{team}" if method != "POST" else f"/api/mappings/{team}/sync-workflows"
    resp = client.open(url, method=method, headers=sec_admin, json={"paused": True})
    assert resp.status_code == 404, resp.get_data(as_text=True)
    body = resp.get_json()
    if "%2F" in team:  # decoded to "/": no route matches, the generic JSON 404 answers
        assert isinstance(body, dict) and isinstance(body.get("error"), str)
    else:
        assert body in ({"error": "Team not found"}, {"deleted": False})
