"""The fake GitHub answers as GitHub's description says, and refuses what GitHub refuses."""

from __future__ import annotations

import base64
import os
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import flask
import pytest
import requests

from aiimpl_core.testing.fake_github import FakeGitHub, blob_sha, github_subset_spec
from aiimpl_core.testing.fakeserver import OpenAPIFakeServer

API = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_repo("acme", "api")
        fake.add_repo("acme", "other")
        fake.add_installation("acme")
        yield fake


def app_headers(gh: FakeGitHub, **kw: Any) -> dict[str, str]:
    return {**API, "Authorization": f"Bearer {gh.app_jwt(**kw)}"}


def token_headers(
    gh: FakeGitHub, repositories: list[str] | None = None, permissions: dict[str, str] | None = None
) -> dict[str, str]:
    inst = requests.get(f"{gh.url}/repos/acme/api/installation", headers=app_headers(gh)).json()
    body: dict[str, Any] = {}
    if repositories is not None:
        body["repositories"] = repositories
    if permissions is not None:
        body["permissions"] = permissions
    resp = requests.post(
        f"{gh.url}/app/installations/{inst['id']}/access_tokens", headers=app_headers(gh), json=body
    )
    assert resp.status_code == 201, resp.text
    return {**API, "Authorization": f"Bearer {resp.json()['token']}"}


def test_fake_server_records_and_flags_violations() -> None:
    # a deliberately wrong fake: the description needs ``ref`` in the body and 204 has no JSON
    app = flask.Flask("wrong")

    @app.post("/repos/<o>/<r>/actions/workflows/<w>/dispatches")
    def dispatch(o: str, r: str, w: str) -> Any:
        return {"unexpected": True}, 201

    with OpenAPIFakeServer(app, github_subset_spec()) as server:
        requests.post(f"{server.url}/repos/a/b/actions/workflows/x.yml/dispatches", json={"inputs": {}})
        assert len(server.requests) == 1
        assert server.requests[0].json == {"inputs": {}}
        text = "\n".join(server.violations)
        assert "request POST" in text and "ref" in text
        assert "response 201" in text
        with pytest.raises(AssertionError):
            server.assert_clean()


def test_fake_server_flags_unknown_paths() -> None:
    app = flask.Flask("unknown")

    @app.get("/nowhere")
    def nowhere() -> Any:
        return {}

    with OpenAPIFakeServer(app, github_subset_spec()) as server:
        assert requests.get(f"{server.url}/nowhere").status_code == 200
        assert server.violations and "/nowhere" in server.violations[0]


def test_installation_token_needs_a_valid_app_jwt(gh: FakeGitHub) -> None:
    resp = requests.get(f"{gh.url}/repos/acme/api/installation", headers=app_headers(gh))
    assert resp.status_code == 200
    inst_id = resp.json()["id"]
    url = f"{gh.url}/app/installations/{inst_id}/access_tokens"
    # a JWT signed by another key is refused
    from aiimpl_core.testing.fake_github import generate_private_key

    other = FakeGitHub(private_key_pem=generate_private_key()[0], app_id=gh.app_id)
    bad = requests.post(url, headers={**API, "Authorization": f"Bearer {other.app_jwt()}"}, json={})
    assert bad.status_code == 401
    # exp more than ten minutes ahead is refused
    far = requests.post(url, headers=app_headers(gh, iat_offset=0, lifetime=1200), json={})
    assert far.status_code == 401 and "exp" in far.json()["message"]
    # the wrong issuer is refused
    assert requests.post(url, headers=app_headers(gh, iss="999"), json={}).status_code == 401
    ok = requests.post(
        url, headers=app_headers(gh), json={"repositories": ["api"], "permissions": {"contents": "write"}}
    )
    assert ok.status_code == 201
    body = ok.json()
    assert body["token"].startswith("ghs_") and body["permissions"] == {"contents": "write"}
    assert [r["name"] for r in body["repositories"]] == ["api"]
    gh.assert_clean()


def test_token_scoping_is_enforced(gh: FakeGitHub) -> None:
    headers = token_headers(gh, repositories=["api"], permissions={"contents": "read"})
    gh.put_file("acme", "api", "README.md", "hello")
    gh.put_file("acme", "other", "README.md", "hello")
    assert requests.get(f"{gh.url}/repos/acme/api/contents/README.md", headers=headers).status_code == 200
    assert requests.get(f"{gh.url}/repos/acme/other/contents/README.md", headers=headers).status_code == 404
    put = requests.put(
        f"{gh.url}/repos/acme/api/contents/x.txt",
        headers=headers,
        json={"message": "m", "content": base64.b64encode(b"x").decode()},
    )
    assert put.status_code == 403
    # asking for a repository the installation cannot see is refused
    inst = requests.get(f"{gh.url}/repos/acme/api/installation", headers=app_headers(gh)).json()
    resp = requests.post(
        f"{gh.url}/app/installations/{inst['id']}/access_tokens",
        headers=app_headers(gh),
        json={"repositories": ["missing"]},
    )
    assert resp.status_code == 422
    gh.assert_clean()


def test_contents_create_update_and_sha_checks(gh: FakeGitHub) -> None:
    headers = token_headers(gh)
    url = f"{gh.url}/repos/acme/api/contents/docs/a.md"
    assert requests.get(url, headers=headers).status_code == 404
    content = base64.b64encode(b"one").decode()
    created = requests.put(url, headers=headers, json={"message": "add", "content": content})
    assert created.status_code == 201 and created.json()["content"]["sha"] == blob_sha(b"one")
    again = requests.put(url, headers=headers, json={"message": "add", "content": content})
    assert again.status_code == 422 and "sha" in again.json()["message"]
    stale = requests.put(url, headers=headers, json={"message": "u", "content": content, "sha": "0" * 40})
    assert stale.status_code == 409
    got = requests.get(url, headers=headers).json()
    assert base64.b64decode(got["content"]) == b"one"
    updated = requests.put(
        url,
        headers=headers,
        json={"message": "u", "content": base64.b64encode(b"two").decode(), "sha": got["sha"]},
    )
    assert updated.status_code == 200
    assert gh.file("acme", "api", "docs/a.md") == "two" and len(gh.commits("acme", "api")) == 2
    gh.assert_clean()


WORKFLOW = """
name: Impl
run-name: "ai-implement ${{ inputs.job_id }}"
on:
  workflow_dispatch:
    inputs:
      job_id: {required: true, type: string}
jobs: {}
"""


def test_dispatch_creates_a_named_run_and_lists_it(gh: FakeGitHub) -> None:
    headers = token_headers(gh)
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW)
    gh.put_file("acme", "api", ".github/workflows/push.yml", "name: P\non: push\njobs: {}\n")
    base = f"{gh.url}/repos/acme/api/actions/workflows"
    ok = requests.post(
        f"{base}/impl.yml/dispatches", headers=headers, json={"ref": "main", "inputs": {"job_id": "7"}}
    )
    assert ok.status_code == 204
    refused = requests.post(f"{base}/push.yml/dispatches", headers=headers, json={"ref": "main"})
    assert refused.status_code == 422
    assert refused.json()["message"] == "Workflow does not have 'workflow_dispatch' trigger"
    extra = requests.post(
        f"{base}/impl.yml/dispatches",
        headers=headers,
        json={"ref": "main", "inputs": {"job_id": "1", "nope": "x"}},
    )
    assert extra.status_code == 422 and "Unexpected inputs" in extra.json()["message"]
    missing = requests.post(f"{base}/impl.yml/dispatches", headers=headers, json={"ref": "main"})
    assert missing.status_code == 422 and "job_id" in missing.json()["message"]
    assert len(gh.undocumented) == 3

    run = gh.run_named("ai-implement 7")
    listed = requests.get(
        f"{base}/impl.yml/runs", headers=headers, params={"event": "workflow_dispatch", "per_page": 100}
    )
    runs = listed.json()["workflow_runs"]
    assert [r["display_title"] for r in runs] == ["ai-implement 7"] and runs[0]["name"] == "Impl"
    assert runs[0]["status"] == "queued"
    gh.advance_run(run.id, "completed", "timed_out")
    one = requests.get(f"{gh.url}/repos/acme/api/actions/runs/{run.id}", headers=headers).json()
    assert one["conclusion"] == "timed_out" and one["display_title"] == "ai-implement 7"
    assert (
        requests.get(
            f"{gh.url}/repos/acme/api/actions/runs", headers=headers, params={"event": "push"}
        ).json()["total_count"]
        == 0
    )
    gh.assert_clean()
    # GitHub documents ``created`` as a date-time although it takes search syntax: a client
    # sending ``>=DATE`` breaks the description, and the fake says so
    requests.get(f"{gh.url}/repos/acme/api/actions/runs", headers=headers, params={"created": ">=2000-01-01"})
    assert any("created" in v for v in gh.violations)


@pytest.fixture
def full_gh(aiimpl_specs_dir: str) -> Iterator[FakeGitHub]:
    """The fake checked against GitHub's complete description (reading a workflow is not in the subset)."""
    with FakeGitHub(
        spec_path=os.path.join(aiimpl_specs_dir, "github", "rest", "api.github.com.json")
    ) as fake:
        fake.add_repo("acme", "api", branches=("topic",))
        fake.add_installation("acme")
        yield fake


def test_get_workflow_reports_its_state(full_gh: FakeGitHub) -> None:
    gh = full_gh
    headers = token_headers(gh)
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW)
    base = f"{gh.url}/repos/acme/api/actions/workflows"
    by_file = requests.get(f"{base}/impl.yml", headers=headers)
    assert by_file.status_code == 200
    wf = by_file.json()
    assert (wf["name"], wf["path"], wf["state"]) == ("Impl", ".github/workflows/impl.yml", "active")
    assert requests.get(f"{base}/{wf['id']}", headers=headers).json()["id"] == wf["id"]
    # registered without a file, and a file only on another branch: both are workflows to GitHub
    gh.add_workflow("acme", "api", "registered.yml", state="disabled_fork")
    assert requests.get(f"{base}/registered.yml", headers=headers).json()["state"] == "disabled_fork"
    gh.put_file("acme", "api", ".github/workflows/topic.yml", WORKFLOW, branch="topic")
    assert requests.get(f"{base}/topic.yml", headers=headers).status_code == 200

    gh.set_workflow_state("acme", "api", "impl.yml", "disabled_manually")
    assert requests.get(f"{base}/impl.yml", headers=headers).json()["state"] == "disabled_manually"
    # the state belongs to the workflow, not to one version of its file
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW + "# edited\n")
    assert requests.get(f"{base}/impl.yml", headers=headers).json()["state"] == "disabled_manually"
    assert requests.get(f"{base}/missing.yml", headers=headers).status_code == 404
    gh.assert_clean()  # answers match the description's ``workflow`` schema
    assert gh.undocumented == ["GET /repos/acme/api/actions/workflows/missing.yml -> 404: Not Found"]
    with pytest.raises(ValueError):
        gh.set_workflow_state("acme", "api", "impl.yml", "paused")


def test_get_workflow_needs_actions_read(full_gh: FakeGitHub) -> None:
    gh = full_gh
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW)
    headers = token_headers(gh, permissions={"contents": "read"})
    refused = requests.get(f"{gh.url}/repos/acme/api/actions/workflows/impl.yml", headers=headers)
    assert (
        refused.status_code == 403 and refused.json()["message"] == "Resource not accessible by integration"
    )
    gh.assert_clean()


def test_dispatch_of_a_disabled_workflow_is_refused(gh: FakeGitHub) -> None:
    headers = token_headers(gh)
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW)
    url = f"{gh.url}/repos/acme/api/actions/workflows/impl.yml/dispatches"
    for state in ("disabled_manually", "disabled_inactivity", "disabled_fork"):
        gh.set_workflow_state("acme", "api", "impl.yml", state)
        refused = requests.post(url, headers=headers, json={"ref": "main", "inputs": {"job_id": "1"}})
        assert refused.status_code == 422
        assert refused.json()["message"] == "Cannot trigger a 'workflow_dispatch' on a disabled workflow"
    assert gh.runs == {}
    gh.set_workflow_state("acme", "api", "impl.yml", "active")
    ok = requests.post(url, headers=headers, json={"ref": "main", "inputs": {"job_id": "1"}})
    assert ok.status_code == 204 and len(gh.runs) == 1
    assert len(gh.undocumented) == 3  # GitHub's description omits this 422; its body is basic-error
    gh.assert_clean()


def test_dispatch_answers_the_run_when_asked_as_the_description_says(gh: FakeGitHub) -> None:
    headers = token_headers(gh)
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW)
    url = f"{gh.url}/repos/acme/api/actions/workflows/impl.yml/dispatches"
    body = {"ref": "main", "inputs": {"job_id": "1"}}
    plain = requests.post(url, headers=headers, json=body)
    assert (plain.status_code, plain.content) == (204, b"")
    detailed = requests.post(url, headers=headers, json={**body, "return_run_details": True})
    assert detailed.status_code == 200
    run_id = detailed.json()["workflow_run_id"]
    assert detailed.json() == {
        "workflow_run_id": run_id,
        "run_url": f"{gh.url}/repos/acme/api/actions/runs/{run_id}",
        "html_url": f"https://github.com/acme/api/actions/runs/{run_id}",
    }
    run = requests.get(detailed.json()["run_url"], headers=headers).json()
    assert run["id"] == run_id and run["html_url"] == detailed.json()["html_url"]
    not_asked = requests.post(url, headers=headers, json={**body, "return_run_details": False})
    assert not_asked.status_code == 204 and len(gh.runs) == 3
    gh.assert_clean()  # requests and both forms of the answer match the description

    # a server without the parameter: answers 204 all the same, or refuses the key (making no run)
    gh.run_details = "ignored"
    assert requests.post(url, headers=headers, json={**body, "return_run_details": True}).status_code == 204
    gh.run_details = "refused"
    refused = requests.post(url, headers=headers, json={**body, "return_run_details": True})
    assert refused.status_code == 422 and "return_run_details" in refused.json()["message"]
    assert requests.post(url, headers=headers, json=body).status_code == 204
    assert len(gh.runs) == 5 and len(gh.undocumented) == 1
    gh.assert_clean()
    with pytest.raises(ValueError):
        FakeGitHub(run_details="sometimes")

    # a request off the description is flagged: return_run_details is a boolean
    requests.post(url, headers=headers, json={**body, "return_run_details": "true"})
    with pytest.raises(AssertionError, match="return_run_details"):
        gh.assert_clean()


def test_a_late_failure_or_delay_does_the_work_first(gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiimpl_core.testing import fake_github

    headers = token_headers(gh)
    gh.put_file("acme", "api", ".github/workflows/impl.yml", WORKFLOW)
    url = f"{gh.url}/repos/acme/api/actions/workflows/impl.yml/dispatches"
    body = {"ref": "main", "inputs": {"job_id": "1"}}
    gh.fail_next("POST", "/dispatches$", 504, "We couldn't respond to your request in time.", done=True)
    late = requests.post(url, headers=headers, json=body)
    assert late.status_code == 504 and late.json()["message"].startswith("We couldn't respond")
    assert len(gh.runs) == 1 and gh.undocumented  # made, though the answer says otherwise
    gh.delay_next("POST", "/dispatches$", 0.5)
    # the delay is held until the test has looked (a loaded machine may reach the request after the
    # client's 0.2 s are up): the run is made while its answer is still held back
    answer, delays = threading.Event(), []

    def held(seconds: float) -> None:
        delays.append(seconds)
        assert answer.wait(30), "never answered"

    monkeypatch.setattr(fake_github, "time", types.SimpleNamespace(sleep=held))
    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            requests.post(url, headers=headers, json=body, timeout=0.2)
        deadline = time.monotonic() + 30
        while not delays and time.monotonic() < deadline:
            time.sleep(0.02)
        assert delays == [0.5] and len(gh.runs) == 2
    finally:
        answer.set()
    assert requests.post(url, headers=headers, json=body, timeout=5).status_code == 204  # used once
    gh.assert_clean()


def test_pulls_and_comments(gh: FakeGitHub) -> None:
    headers = token_headers(gh)
    gh.add_branch("acme", "api", "ai/ENG-1")
    url = f"{gh.url}/repos/acme/api/pulls"
    pr = requests.post(
        url, headers=headers, json={"title": "ENG-1", "head": "ai/ENG-1", "base": "main", "body": "b"}
    )
    assert pr.status_code == 201 and pr.json()["number"] == 1
    dup = requests.post(url, headers=headers, json={"title": "ENG-1", "head": "ai/ENG-1", "base": "main"})
    assert dup.status_code == 422 and "already exists" in dup.json()["errors"][0]["message"]
    c = requests.post(f"{gh.url}/repos/acme/api/issues/1/comments", headers=headers, json={"body": "hi"})
    assert c.status_code == 201
    listed = requests.get(f"{gh.url}/repos/acme/api/issues/1/comments", headers=headers).json()
    assert [x["body"] for x in listed] == ["hi"] and gh.issue_comments("acme", "api", 1) == ["hi"]
    gh.assert_clean()


def test_personal_token_and_bad_credentials(gh: FakeGitHub) -> None:
    gh.put_file("acme", "api", "a.txt", "a")
    ok = requests.get(
        f"{gh.url}/repos/acme/api/contents/a.txt",
        headers={**API, "Authorization": f"Bearer {gh.personal_token}"},
    )
    assert ok.status_code == 200
    bad = requests.get(
        f"{gh.url}/repos/acme/api/contents/a.txt", headers={**API, "Authorization": "Bearer nope"}
    )
    assert bad.status_code == 401 and bad.json()["message"] == "Bad credentials"
    gh.assert_clean()


def test_fail_next_injects_rate_limits(gh: FakeGitHub) -> None:
    gh.put_file("acme", "api", "a.txt", "a")
    gh.fail_next(
        "GET", r"/contents/", 403, "You have exceeded a secondary rate limit", headers={"Retry-After": "1"}
    )
    headers = {**API, "Authorization": f"Bearer {gh.personal_token}"}
    first = requests.get(f"{gh.url}/repos/acme/api/contents/a.txt", headers=headers)
    assert first.status_code == 403 and first.headers["Retry-After"] == "1"
    assert requests.get(f"{gh.url}/repos/acme/api/contents/a.txt", headers=headers).status_code == 200
    gh.assert_clean()


def test_descriptions_are_parsed_once_per_file() -> None:
    from aiimpl_core.testing.fakeserver import load_spec

    first = load_spec(github_subset_spec())
    assert load_spec(github_subset_spec()) is first
    assert load_spec(github_subset_spec(), "/api/v3") is not first  # another base is another server entry
    # GitHub's contents path may span segments; validation sees it escaped
    assert any("path" in names for _, names in first.multi_segment)
