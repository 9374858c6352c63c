"""The core GitHub client against the fake GitHub: App auth, token caching and scoping, REST calls."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import requests

from aiimpl_core import github
from aiimpl_core.errors import ProviderConfigError, ProviderError, ProviderNotConfigured
from aiimpl_core.github.app_auth import TokenCache, app_jwt, load_private_key
from aiimpl_core.github.client import (
    ORCHESTRATOR_PERMISSIONS,
    SESSION_PERMISSIONS,
    DispatchedRun,
    DispatchUnanswered,
    GitHub,
    github_message,
)
from aiimpl_core.http import HttpClient
from aiimpl_core.testing.fake_github import FakeGitHub


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        fake.add_repo("acme", "api")
        fake.add_repo("acme", "web")
        fake.add_installation("acme")
        yield fake
        fake.assert_clean()


def app_client(gh: FakeGitHub, **kw: Any) -> GitHub:
    return GitHub(gh.url, app_id=gh.app_id, private_key=gh.private_key_pem, cache=TokenCache(), **kw)


def test_app_jwt_is_rs256_backdated_and_short() -> None:
    gh = FakeGitHub()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    token = app_jwt(gh.app_id, gh.private_key_pem, now)
    claims = jwt.decode(token, gh.public_key_pem, algorithms=["RS256"], options={"verify_exp": False})
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims["iss"] == str(gh.app_id)
    assert claims["iat"] == int(now.timestamp()) - 60
    assert claims["exp"] - int(now.timestamp()) <= 600


def test_the_key_is_read_once_for_every_jwt_and_an_unusable_one_is_named_without_it(monkeypatch) -> None:
    """Reading a PEM key checks the RSA key whole (tens of ms of CPU): each App JWT read it again."""
    from cryptography.hazmat.primitives import serialization

    from aiimpl_core.github import app_auth

    reads: list[bytes] = []
    real = serialization.load_pem_private_key
    monkeypatch.setattr(serialization, "load_pem_private_key",
                        lambda data, **kw: reads.append(data) or real(data, **kw))
    app_auth._signing_key.cache_clear()
    gh = FakeGitHub()
    minutes = [datetime(2026, 1, 1, 0, m, tzinfo=UTC) for m in range(3)]
    tokens = {app_jwt(gh.app_id, gh.private_key_pem, when) for when in minutes}
    assert len(tokens) == 3 and len(reads) == 1
    for token in tokens:
        jwt.decode(token, gh.public_key_pem, algorithms=["RS256"], options={"verify_exp": False})
    broken = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END RSA PRIVATE KEY-----\n"
    for _ in range(2):  # refused each time, never kept as if read
        with pytest.raises(ProviderConfigError) as err:
            app_jwt(gh.app_id, broken)
        assert str(err.value) == "AIIMPL_GITHUB_PRIVATE_KEY is not a usable RSA private key"
    assert len(reads) == 3


def test_private_key_from_pem_text_escaped_text_or_path(tmp_path: Any) -> None:
    pem = FakeGitHub().private_key_pem
    assert load_private_key(pem).startswith("-----BEGIN")
    assert load_private_key(pem.replace("\n", "\\n")).strip() == pem.strip()
    path = tmp_path / "key.pem"
    path.write_text(pem)
    assert load_private_key(str(path)) == pem
    with pytest.raises(ProviderConfigError) as err:
        load_private_key("not a key")
    assert "AIIMPL_GITHUB_PRIVATE_KEY" in str(err.value)


def test_repository_token_is_scoped_to_one_repository(gh: FakeGitHub) -> None:
    client = app_client(gh)
    token, expires = client.repository_token("acme", "api")
    assert token.startswith("ghs_") and expires > datetime.now(UTC) + timedelta(minutes=50)
    issued = gh.issued_tokens[-1]
    assert issued.repositories == {"api"}
    assert issued.permissions == dict(SESSION_PERMISSIONS)
    body = gh.server.requests_to("POST", "/access_tokens")[-1].json
    assert body == {"repositories": ["api"], "permissions": dict(SESSION_PERMISSIONS)}
    # every call to GitHub names the API version
    assert all(r.header("X-GitHub-Api-Version") == "2022-11-28" for r in gh.requests)
    # the token opens its repository and not its neighbour
    gh.put_file("acme", "api", "a.txt", "a")
    gh.put_file("acme", "web", "a.txt", "a")
    import requests

    ok = requests.get(f"{gh.url}/repos/acme/api/contents/a.txt", headers={"Authorization": f"Bearer {token}"})
    other = requests.get(
        f"{gh.url}/repos/acme/web/contents/a.txt", headers={"Authorization": f"Bearer {token}"}
    )
    assert ok.status_code == 200 and other.status_code == 404


def test_repository_token_is_cached_until_five_minutes_before_expiry(gh: FakeGitHub) -> None:
    now = [datetime.now(UTC)]
    client = app_client(gh, clock=lambda: now[0])
    first = client.repository_token("acme", "api")
    assert client.repository_token("acme", "api") == first
    assert len(gh.issued_tokens) == 1
    # another repository, or other permissions, is another token
    client.repository_token("acme", "web")
    client.repository_token("acme", "api", {"contents": "read"})
    assert len(gh.issued_tokens) == 3
    # 54 minutes later the token (60 minutes) is still good; at 56 it is replaced
    now[0] = now[0] + timedelta(minutes=54)
    assert client.repository_token("acme", "api") == first
    now[0] = now[0] + timedelta(minutes=2)
    assert client.repository_token("acme", "api")[0] != first[0]
    assert len(gh.issued_tokens) == 4


def test_concurrent_callers_share_one_mint(gh: FakeGitHub) -> None:
    client = app_client(gh)
    results: list[tuple[str, datetime]] = []
    threads = [
        threading.Thread(target=lambda: results.append(client.repository_token("acme", "api")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r[0] for r in results}) == 1 and len(gh.issued_tokens) == 1


def test_not_installed_and_bad_key_are_provider_errors(gh: FakeGitHub) -> None:
    gh.add_repo("other", "x")
    with pytest.raises(ProviderError) as err:
        app_client(gh).repository_token("other", "x")
    assert err.value.status == 404 and "not installed" in err.value.message
    from aiimpl_core.testing.fake_github import generate_private_key

    wrong = GitHub(gh.url, app_id=gh.app_id, private_key=generate_private_key()[0], cache=TokenCache())
    with pytest.raises(ProviderError) as err:
        wrong.repository_token("acme", "api")
    assert err.value.status == 401
    assert "BEGIN" not in err.value.message


def test_not_configured() -> None:
    with pytest.raises(ProviderNotConfigured):
        GitHub("http://127.0.0.1:9").repository_token("acme", "api")


def test_personal_token_mode(gh: FakeGitHub) -> None:
    client = GitHub(gh.url, token=gh.personal_token)
    token, expires = client.repository_token("acme", "api")
    assert token == gh.personal_token and expires > datetime.now(UTC) + timedelta(hours=12)
    assert gh.requests == []  # no call needed
    gh.put_file("acme", "api", "README.md", "hi")
    assert client.repo("acme", "api").get_file("README.md").text == "hi"  # type: ignore[union-attr]


def test_repository_token_in_an_app_context(gh: FakeGitHub) -> None:
    from flask import Flask

    app = Flask("t")
    app.config.update(
        AIIMPL_GITHUB_API_URL=gh.url,
        AIIMPL_GITHUB_APP_ID=str(gh.app_id),
        AIIMPL_GITHUB_PRIVATE_KEY=gh.private_key_pem,
    )
    with app.app_context():
        token, _ = github.repository_token("acme", "api")
    assert token in gh.tokens


def test_repo_calls(gh: FakeGitHub) -> None:
    repo = app_client(gh).repo(
        "acme", "api", {**ORCHESTRATOR_PERMISSIONS, "pull_requests": "write", "issues": "write"}
    )
    assert repo.get_file("docs/x.md") is None
    repo.put_file("docs/x.md", b"one", "add x")
    f = repo.get_file("docs/x.md")
    assert f is not None and f.text == "one"
    repo.put_file("docs/x.md", b"two", "update x", sha=f.sha)
    assert gh.file("acme", "api", "docs/x.md") == "two"
    gh.add_workflow(
        "acme", "api", "w.yml", inputs={"job_id": {"required": True}}, run_name="r ${{ inputs.job_id }}"
    )
    repo.dispatch_workflow("w.yml", "main", {"job_id": "5"})
    runs = list(repo.iter_workflow_runs(datetime.now(UTC) - timedelta(minutes=1), workflow="w.yml"))
    assert [r["display_title"] for r in runs] == ["r 5"] and runs[0]["name"] == "w.yml"
    assert repo.get_run(runs[0]["id"])["status"] == "queued"
    gh.add_branch("acme", "api", "ai/ENG-1")
    pr = repo.create_pull("ai/ENG-1", "main", "ENG-1: title", "body")
    repo.create_issue_comment(pr["number"], "hello")
    assert [c["body"] for c in repo.list_issue_comments(pr["number"])] == ["hello"]
    with pytest.raises(ProviderError) as err:
        repo.create_pull("ai/ENG-1", "main", "again")
    assert err.value.status == 422
    assert "A pull request already exists" in github_message(err.value)


@pytest.mark.parametrize("server", ["returned", "ignored", "refused"])
def test_dispatch_names_the_run_it_made_when_the_server_can(gh: FakeGitHub, server: str) -> None:
    repo = app_client(gh).repo("acme", "api")
    gh.add_workflow("acme", "api", "w.yml", inputs={"job_id": {"required": True}})
    gh.run_details = server  # ``ignored``/``refused``: GitHub Enterprise Server before the parameter
    run = repo.dispatch_workflow("w.yml", "main", {"job_id": "5"})
    [made] = gh.runs.values()  # one run, however the server took the parameter
    if server == "returned":
        assert run == DispatchedRun(
            str(made.id),
            f"https://github.com/acme/api/actions/runs/{made.id}",
            f"{gh.url}/repos/acme/api/actions/runs/{made.id}",
        )
    else:
        assert run is None
    sent = [r.json.get("return_run_details") for r in gh.server.requests_to("POST", "/dispatches")]
    assert sent == ([True, None] if server == "refused" else [True])


def test_a_server_that_refused_run_details_is_not_asked_again_for_an_hour(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each dispatch to a GitHub Enterprise Server without the parameter would otherwise cost two
    requests, one of them refused; after an hour it is asked again (it may have been upgraded)."""
    from aiimpl_core.github import client as client_module

    repo = app_client(gh).repo("acme", "api")
    gh.add_workflow("acme", "api", "w.yml", inputs={"job_id": {"required": True}})
    gh.run_details = "refused"
    for job in ("5", "6"):
        assert repo.dispatch_workflow("w.yml", "main", {"job_id": job}) is None
    sent = [r.json.get("return_run_details") for r in gh.server.requests_to("POST", "/dispatches")]
    assert sent == [True, None, None] and len(gh.runs) == 2
    gh.run_details = "returned"  # upgraded: asked again once the hour is over
    refused = client_module._REFUSED_RUN_DETAILS
    monkeypatch.setitem(refused, repo.github.api_url,
                        refused[repo.github.api_url] - client_module.RUN_DETAILS_RECHECK)
    assert repo.dispatch_workflow("w.yml", "main", {"job_id": "7"}) is not None


def test_dispatch_refusals_other_than_the_parameter_are_not_sent_again(gh: FakeGitHub) -> None:
    repo = app_client(gh).repo("acme", "api")
    gh.add_workflow("acme", "api", "w.yml", inputs={"job_id": {"required": True}})
    gh.run_details = "refused"
    with pytest.raises(ProviderError) as err:
        repo.dispatch_workflow("w.yml", "main", {"job_id": "5", "other": "x"})
    # refused for its key first, then for the input: GitHub's second answer is raised
    assert err.value.status == 422 and "Unexpected inputs" in github_message(err.value)
    gh.run_details = "returned"
    with pytest.raises(ProviderError):
        repo.dispatch_workflow("w.yml", "main", {"job_id": "5", "other": "x"})
    assert len(gh.server.requests_to("POST", "/dispatches")) == 3 and gh.runs == {}


def test_dispatch_answered_with_an_unreadable_body_names_no_run(
    gh: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    repo = app_client(gh).repo("acme", "api")
    gh.add_workflow("acme", "api", "w.yml")
    gh.garble_next("POST", "/dispatches$")  # a proxy's page in place of GitHub's 200
    assert repo.dispatch_workflow("w.yml", "main", {}) is None
    assert len(gh.runs) == 1 and "named no run" in caplog.text


def test_a_dispatch_that_may_have_been_done_is_told_from_one_that_was_not(gh: FakeGitHub) -> None:
    """A dispatch whose answer was lost (none came back, or a 5xx) may have made its run, so it is
    :class:`DispatchUnanswered` (the runner backend does not send it again); a refusal, or a
    dispatch never sent (no token, no connection), made none and is a plain ``ProviderError``."""
    gh.add_workflow("acme", "api", "w.yml")
    sleeps: list[float] = []

    def client_of(timeout: float) -> Any:
        return app_client(gh, http=lambda base, **kw: HttpClient(base, **{**kw, "timeout": timeout,
                                                                          "sleep": sleeps.append}))

    # (the short read timeout for the one request meant to outlast it: a loaded machine once took
    # more than a second to answer the 502, which then read as no answer at all)
    client = client_of(20.0)
    repo = client.repo("acme", "api")
    gh.fail_next("POST", "/dispatches$", 502, "Server Error", done=True)
    with pytest.raises(DispatchUnanswered) as err:
        repo.dispatch_workflow("w.yml", "main", {})
    assert err.value.status == 502 and len(gh.runs) == 1
    gh.delay_next("POST", "/dispatches$", 1.5)  # no answer within the client's read timeout
    with pytest.raises(DispatchUnanswered) as err:
        client_of(1.0).repo("acme", "api").dispatch_workflow("w.yml", "main", {})
    assert err.value.status is None and len(gh.runs) == 2

    gh.set_workflow_state("acme", "api", "w.yml", "disabled_manually")
    with pytest.raises(ProviderError) as err:
        repo.dispatch_workflow("w.yml", "main", {})
    assert err.value.status == 422 and not isinstance(err.value, DispatchUnanswered)
    gh.set_workflow_state("acme", "api", "w.yml", "active")
    # no token: the dispatch is never sent, whatever the token's failure
    gh.fail_next("POST", "/access_tokens$", 503, "Service Unavailable", times=10)
    with pytest.raises(ProviderError) as err:
        client.repo("acme", "web").dispatch_workflow("w.yml", "main", {})
    assert err.value.status == 503 and not isinstance(err.value, DispatchUnanswered)
    assert len(gh.server.requests_to("POST", "/repos/acme/web/")) == 0
    gh.failures.clear()
    # no connection: nothing was sent
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    nowhere = GitHub(f"http://127.0.0.1:{port}", token="ghp_" + "0" * 36,
                     http=lambda base, **kw: HttpClient(base, **{**kw, "sleep": sleeps.append}))
    with pytest.raises(ProviderError) as err:
        nowhere.repo("acme", "api").dispatch_workflow("w.yml", "main", {})
    assert err.value.status is None and not isinstance(err.value, DispatchUnanswered)


def test_runs_listing_stops_at_older_runs(gh: FakeGitHub) -> None:
    repo = app_client(gh).repo("acme", "api")
    gh.add_workflow("acme", "api", "w.yml")
    for _ in range(3):
        repo.dispatch_workflow("w.yml", "main", {})
    old = list(gh.runs.values())[0]
    old.created_at = datetime.now(UTC) - timedelta(days=2)
    recent = list(
        repo.iter_workflow_runs(datetime.now(UTC) - timedelta(hours=1), workflow="w.yml", per_page=1)
    )
    assert len(recent) == 2 and old.id not in {r["id"] for r in recent}


def test_secondary_rate_limit_is_retried(gh: FakeGitHub) -> None:
    sleeps: list[float] = []
    from aiimpl_core.http import HttpClient

    client = GitHub(
        gh.url, token=gh.personal_token, http=lambda base, **kw: HttpClient(base, sleep=sleeps.append, **kw)
    )
    gh.put_file("acme", "api", "a.txt", "a")
    gh.fail_next(
        "GET", "/contents/", 403, "You have exceeded a secondary rate limit", headers={"Retry-After": "2"}
    )
    assert client.repo("acme", "api").get_file("a.txt") is not None
    assert sleeps == [2.0]


def test_a_post_refused_by_the_secondary_rate_limit_is_sent_again_once(gh: FakeGitHub) -> None:
    """GitHub carries out nothing it refuses for a rate limit: a POST so refused (403 saying when to
    come back) was given up, though sending it again creates the pull request once."""
    sleeps: list[float] = []
    from aiimpl_core.http import HttpClient

    client = GitHub(
        gh.url, token=gh.personal_token, http=lambda base, **kw: HttpClient(base, sleep=sleeps.append, **kw)
    )
    gh.add_repo("acme", "api", branches=("ai/ENG-1",))
    gh.fail_next("POST", "/pulls$", 403, "You have exceeded a secondary rate limit",
                 headers={"Retry-After": "3"})
    pr = client.repo("acme", "api").create_pull(title="t", body="b", head="ai/ENG-1", base="main")
    assert sleeps == [3.0] and [p.number for p in gh.pulls[("acme", "api")]] == [pr["number"]]
    # a 403 that says no such thing is a refusal: not sent again
    gh.fail_next("POST", "/pulls$", 403, "Resource not accessible by integration")
    with pytest.raises(ProviderError) as err:
        client.repo("acme", "api").create_pull(title="t", body="b", head="ai/ENG-1", base="main")
    assert err.value.status == 403 and sleeps == [3.0]


def test_an_installation_token_revoked_before_its_expiry_is_minted_anew(gh: FakeGitHub) -> None:
    """GitHub revokes installation tokens early (the App suspended or reinstalled, a token found
    pushed somewhere public): the cached one failed every call on the repository with 401 Bad
    credentials, poll after poll, for the rest of its hour."""
    client = app_client(gh)
    gh.add_workflow("acme", "api", "w.yml")
    repo = client.repo("acme", "api")
    gh.put_file("acme", "api", "a.txt", "a")
    assert repo.get_file("a.txt") is not None and len(gh.issued_tokens) == 1
    gh.tokens.clear()  # revoked
    assert repo.get_file("a.txt") is not None and len(gh.issued_tokens) == 2
    gh.tokens.clear()
    repo.dispatch_workflow("w.yml", "main", {})  # (a dispatch refused with 401 did nothing)
    assert len(gh.issued_tokens) == 3 and len(gh.runs) == 1
    # a token refused again right after a fresh one is GitHub's answer: said, not looped over
    gh.fail_next("GET", "/contents/", 401, "Bad credentials", times=2)
    with pytest.raises(ProviderError) as err:
        repo.get_file("a.txt")
    assert err.value.status == 401 and len(gh.issued_tokens) == 4


def test_a_repositorys_installation_is_looked_up_once_for_the_tokens_of_each_use(gh: FakeGitHub) -> None:
    """Each use asks for a token with its own permissions (a run's, a check's, a workflow sync's, a
    session's): the installation lookup before each mint was a second App call per token."""
    client = app_client(gh)
    client.repository_token("acme", "api", ORCHESTRATOR_PERMISSIONS)
    client.repository_token("acme", "api", SESSION_PERMISSIONS)
    client.repository_token("acme", "api", {"actions": "read"})
    client.repository_token("acme", "web", {"actions": "read"})
    assert len(gh.issued_tokens) == 4
    assert [r.path for r in gh.server.requests_to("GET", "/installation")] == [
        "/repos/acme/api/installation", "/repos/acme/web/installation"]


def test_an_app_installed_anew_is_looked_up_again(gh: FakeGitHub) -> None:
    client = app_client(gh)
    (old,) = gh.installations
    client.repository_token("acme", "api", SESSION_PERMISSIONS)
    del gh.installations[old]  # uninstalled, then installed again: another installation id
    new = gh.add_installation("acme")
    token, _ = client.repository_token("acme", "api", ORCHESTRATOR_PERMISSIONS)
    assert gh.tokens[token].installation_id == new
    assert len(gh.server.requests_to("POST", f"/app/installations/{old}/access_tokens")) == 2  # (one refused)
    client.repository_token("acme", "api", {"actions": "read"})  # the new one is remembered
    assert len(gh.server.requests_to("GET", "/installation")) == 2
    assert len(gh.server.requests_to("POST", f"/app/installations/{new}/access_tokens")) == 2


def test_an_installation_looked_up_anew_is_the_one_tokens_are_asked_for_under(gh: FakeGitHub) -> None:
    """``aiimpl check`` reads the installation afresh: what it finds serves the next token."""
    client = app_client(gh)
    (old,) = gh.installations
    client.repository_token("acme", "api", SESSION_PERMISSIONS)
    del gh.installations[old]
    new = gh.add_installation("acme")
    assert client.installation_id("acme", "api") == new
    client.repository_token("acme", "api", ORCHESTRATOR_PERMISSIONS)
    assert len(gh.server.requests_to("POST", f"/app/installations/{old}/access_tokens")) == 1  # none refused
    assert len(gh.server.requests_to("GET", "/installation")) == 2


def test_a_repository_taken_out_of_the_installation_is_said_to_be_so(gh: FakeGitHub) -> None:
    client = app_client(gh)
    (installation,) = gh.installations.values()
    client.repository_token("acme", "api", SESSION_PERMISSIONS)
    installation.repositories = {"web"}
    with pytest.raises(ProviderError) as err:
        client.repository_token("acme", "api", ORCHESTRATOR_PERMISSIONS)  # 422, then the lookup's 404
    assert err.value.status == 404 and "not installed on acme/api" in err.value.message
    # a permission the installation does not grant is GitHub's 422, its installation the same
    installation.repositories = None
    with pytest.raises(ProviderError) as err:
        client.repository_token("acme", "api", {"administration": "write"})
    assert err.value.status == 422 and "permissions requested are not granted" in err.value.message
    client.repository_token("acme", "api", ORCHESTRATOR_PERMISSIONS)
    # the first lookup, the one that found the repository gone, the one after it; none since
    assert len(gh.server.requests_to("GET", "/installation")) == 3


def test_token_mint_is_retried_after_a_server_error(gh: FakeGitHub) -> None:
    sleeps: list[float] = []
    from aiimpl_core.http import HttpClient

    client = GitHub(
        gh.url,
        app_id=gh.app_id,
        private_key=gh.private_key_pem,
        cache=TokenCache(),
        http=lambda base, **kw: HttpClient(base, sleep=sleeps.append, **kw),
    )
    gh.fail_next("POST", "/access_tokens", 502, "Server Error")
    token, _ = client.repository_token("acme", "api")
    assert token in gh.tokens and len(sleeps) == 1


def test_exhausted_primary_rate_limit_raises_with_the_reset_time(gh: FakeGitHub) -> None:
    import time

    sleeps: list[float] = []
    from aiimpl_core.http import HttpClient

    client = GitHub(
        gh.url, token=gh.personal_token, http=lambda base, **kw: HttpClient(base, sleep=sleeps.append, **kw)
    )
    gh.put_file("acme", "api", "a.txt", "a")
    reset = int(time.time()) + 1800
    gh.fail_next(
        "GET",
        "/contents/",
        403,
        "API rate limit exceeded for installation ID 1.",
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
    )
    with pytest.raises(ProviderError) as err:
        client.repo("acme", "api").get_file("a.txt")
    # too long to sleep through: the caller learns when to come back instead
    assert sleeps == [] and err.value.status == 403
    assert err.value.retry_after is not None and 1700 < err.value.retry_after <= 1800
    assert "rate limit" in github_message(err.value)


def test_client_calls_against_the_full_description(aiimpl_specs_dir: str) -> None:
    import os

    path = os.path.join(aiimpl_specs_dir, "github", "rest", "api.github.com.json")
    with FakeGitHub(spec_path=path) as full:
        full.add_repo("acme", "api", branches=("ai/ENG-1",))
        full.add_installation("acme")
        client = GitHub(full.url, app_id=full.app_id, private_key=full.private_key_pem, cache=TokenCache())
        repo = client.repo(
            "acme", "api", {**ORCHESTRATOR_PERMISSIONS, **SESSION_PERMISSIONS, "actions": "write"}
        )
        repo.put_file("docs/a.md", b"a", "add")
        assert repo.get_file("docs/a.md") is not None
        pr = repo.create_pull("ai/ENG-1", "main", "ENG-1", "body")
        repo.create_issue_comment(pr["number"], "hi")
        assert repo.list_issue_comments(pr["number"])[0]["body"] == "hi"
        full.add_workflow("acme", "api", "w.yml")
        repo.dispatch_workflow("w.yml", "main", {})
        assert repo.list_workflow_runs("w.yml")["total_count"] == 1
        workflow = repo.get_workflow("w.yml")
        assert workflow is not None and workflow["state"] == "active"
        assert repo.get_workflow(str(workflow["id"])) == workflow
        assert repo.get_workflow("missing.yml") is None  # not a workflow GitHub knows
        full.set_workflow_state("acme", "api", "w.yml", "disabled_manually")
        workflow = repo.get_workflow("w.yml")
        assert workflow is not None and workflow["state"] == "disabled_manually"
        with pytest.raises(ProviderError) as err:
            repo.dispatch_workflow("w.yml", "main", {})
        assert err.value.status == 422
        assert github_message(err.value) == "Cannot trigger a 'workflow_dispatch' on a disabled workflow"
        full.assert_clean()


# -- paged reads: a page that says less than all, or that cannot be read, is never the end --------


class Proxy(requests.Session):
    """What sits between the client and the fake GitHub, rewriting the query of a request
    (``query(path, params) -> params``) or the JSON of its answer (``answer(path, body) -> body``):
    every request still reaches the fake."""

    def __init__(
        self,
        query: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
        answer: Callable[[str, Any], Any] | None = None,
    ) -> None:
        super().__init__()
        self.trust_env = False
        self.query = query
        self.answer = answer

    def request(self, method: str, url: str, *args: Any, **kw: Any) -> requests.Response:  # type: ignore[override]
        path = urlsplit(url).path
        if self.query is not None and kw.get("params") is not None:
            kw["params"] = self.query(path, dict(kw["params"]))
        resp = super().request(method, url, *args, **kw)
        if self.answer is not None and resp.ok and resp.content:
            resp._content = json.dumps(self.answer(path, resp.json())).encode()
        return resp


def proxied(gh: FakeGitHub, proxy: Proxy) -> GitHub:
    return app_client(gh, http=lambda base, **kw: HttpClient(base, session=proxy, **kw))


def dispatched(gh: FakeGitHub, client: GitHub, runs: int) -> list[int]:
    """``runs`` runs of w.yml, a minute apart, the newest now; their ids, newest first."""
    gh.add_workflow("acme", "api", "w.yml")
    for _ in range(runs):
        client.repo("acme", "api").dispatch_workflow("w.yml", "main", {})
    made = sorted(gh.runs_of("acme", "api"), key=lambda r: r.id, reverse=True)
    for age, run in enumerate(made):
        run.created_at = datetime.now(UTC) - timedelta(minutes=age)
    return [r.id for r in made]


def test_a_runs_page_short_of_githubs_total_count_is_a_listing_cut_short(gh: FakeGitHub) -> None:
    """A server that answers fewer runs a page than asked for (a proxy or an Enterprise Server
    capping ``per_page``): the short first page ended the listing, and every run past it was taken
    for missing."""
    capped = Proxy(query=lambda path, q: {**q, "per_page": 2} if path.endswith("/runs") else q)
    client = proxied(gh, capped)
    ids = dispatched(gh, client, 5)
    seen: list[int] = []
    with pytest.raises(github.ListingIncomplete) as err:
        for run in client.repo("acme", "api").iter_workflow_runs(
            datetime.now(UTC) - timedelta(hours=1), event="workflow_dispatch"
        ):
            seen.append(run["id"])
    assert seen == ids[:2], "the runs read are handed out before the failure"
    assert err.value.reached is not None and err.value.message == (
        "github: page 1 of the workflow runs of acme/api holds 2 runs of the 100 asked for, though "
        "GitHub counts 5: the runs past the 2 listed were not read"
    )
    assert len(gh.server.requests_to("GET", "/actions/runs")) == 1


def test_a_filtered_listing_ends_where_github_stops_listing_it(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GitHub lists at most 1,000 runs of a listing filtered by ``event`` though its ``total_count``
    counts them all: the short page at that limit is the end of what can be read."""
    from aiimpl_core.github import client as github_client

    monkeypatch.setattr(github_client, "FILTERED_RUNS_LIMIT", 3)
    counted = Proxy(answer=lambda path, body: {**body, "total_count": 40} if path.endswith("/runs") else body)
    client = proxied(gh, counted)
    ids = dispatched(gh, client, 3)
    runs = client.repo("acme", "api").iter_workflow_runs(
        datetime.now(UTC) - timedelta(hours=1), event="workflow_dispatch", per_page=2
    )
    assert [r["id"] for r in runs] == ids


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda body: {"total_count": body["total_count"]}, id="no workflow_runs"),
        pytest.param(lambda body: {**body, "workflow_runs": None}, id="workflow_runs null"),
        pytest.param(lambda body: body["workflow_runs"], id="a list, not the object"),
        pytest.param(lambda body: {**body, "workflow_runs": ["run"]}, id="a run that is no object"),
        pytest.param(lambda body: {**body, "workflow_runs": [
            {k: v for k, v in r.items() if k != "created_at"} for r in body["workflow_runs"]]},
            id="a run without created_at"),
        pytest.param(lambda body: {**body, "workflow_runs": [
            {**r, "created_at": "yesterday"} for r in body["workflow_runs"]]}, id="an unreadable created_at"),
    ],
)
def test_a_runs_page_that_cannot_be_read_fails_the_listing(
    gh: FakeGitHub, broken: Callable[[Any], Any]
) -> None:
    """A page without its runs ended the listing as if GitHub had none (or crashed it with an
    AttributeError): the runs were taken for missing."""
    garbled = Proxy(answer=lambda path, body: broken(body) if path.endswith("/runs") else body)
    client = proxied(gh, garbled)
    dispatched(gh, client, 2)
    with pytest.raises(ProviderError) as err:
        list(client.repo("acme", "api").iter_workflow_runs(datetime.now(UTC) - timedelta(hours=1)))
    assert not isinstance(err.value, github.ListingIncomplete)
    assert err.value.message.startswith("github: page 1 of the workflow runs of acme/api could not be read (")


def test_a_runs_page_repeating_the_one_before_ends_the_listing_as_cut_short(gh: FakeGitHub) -> None:
    """A proxy that drops ``page`` answers page 1 again and again: its runs were handed out ten
    times over and the listing ended at its page limit as if it were complete."""
    dropped = Proxy(query=lambda path, q: {k: v for k, v in q.items() if k != "page"})
    client = proxied(gh, dropped)
    ids = dispatched(gh, client, 5)
    seen: list[int] = []
    with pytest.raises(github.ListingIncomplete) as err:
        for run in client.repo("acme", "api").iter_workflow_runs(
            datetime.now(UTC) - timedelta(hours=1), per_page=2
        ):
            seen.append(run["id"])
    assert seen == ids[:2]
    assert "page 2 of the workflow runs of acme/api repeats page 1" in err.value.message
    assert len(gh.server.requests_to("GET", "/actions/runs")) == 2


def test_runs_past_the_pages_read_end_the_listing_as_cut_short(gh: FakeGitHub) -> None:
    """Every page read full and no run older than asked for yet: the runs past the last page are
    unknown, not missing."""
    client = app_client(gh)
    ids = dispatched(gh, client, 3)
    seen: list[dict[str, Any]] = []
    with pytest.raises(github.ListingIncomplete) as err:
        for run in client.repo("acme", "api").iter_workflow_runs(
            datetime.now(UTC) - timedelta(hours=1), per_page=1, max_pages=2
        ):
            seen.append(run)
    assert [r["id"] for r in seen] == ids[:2]
    assert err.value.reached == datetime.fromisoformat(seen[-1]["created_at"].replace("Z", "+00:00"))
    assert "fill all 2 pages of 1 read" in err.value.message
    # reaching a run older than asked for on the last page is the end
    since = datetime.fromisoformat(seen[-1]["created_at"].replace("Z", "+00:00"))
    assert [r["id"] for r in client.repo("acme", "api").iter_workflow_runs(since, per_page=1, max_pages=3)] \
        == ids[:2]


def test_the_token_never_follows_a_redirect_to_another_host(gh: FakeGitHub) -> None:
    """Pages are asked for by number, never from an answer's ``Link``; an answer that redirects
    elsewhere is followed without the token (requests drops ``Authorization`` for another host or
    port)."""
    with FakeGitHub() as elsewhere:
        elsewhere.add_repo("acme", "api")
        gh.fail_next("GET", r"/actions/runs$", 302, "Found",
                     headers={"Location": f"{elsewhere.url}/repos/acme/api/actions/runs?page=2"})
        # (the other host's 401 is taken for the token refused: asked again, with a fresh one)
        assert list(app_client(gh).repo("acme", "api").iter_workflow_runs(datetime.now(UTC))) == []
        [followed] = elsewhere.server.requests_to("GET", "/actions/runs")
        assert "Authorization" not in followed.headers
    asked = gh.server.requests_to("GET", "/actions/runs")
    assert len(asked) == 2 and all(r.headers["Authorization"].startswith("Bearer ") for r in asked)


def many_comments(gh: FakeGitHub, count: int) -> int:
    """A pull request of acme/api with ``count`` comments; its number."""
    gh.add_branch("acme", "api", "ai/ENG-1")
    pr = app_client(gh).repo("acme", "api", SESSION_PERMISSIONS).create_pull("ai/ENG-1", "main", "ENG-1")
    from aiimpl_core.testing.fake_github import IssueComment

    gh.comments[("acme", "api", pr["number"])] = [
        IssueComment(10_000 + n, pr["number"], f"comment {n}") for n in range(count)
    ]
    return int(pr["number"])


def test_every_comment_is_read_page_by_page(gh: FakeGitHub) -> None:
    """Only the first hundred comments were read, the rest left out unsaid."""
    number = many_comments(gh, 150)
    repo = app_client(gh).repo("acme", "api", SESSION_PERMISSIONS)
    assert [c["body"] for c in repo.list_issue_comments(number)] == [f"comment {n}" for n in range(150)]
    pages = gh.server.requests_to("GET", f"/issues/{number}/comments")
    assert [(r.query["per_page"], r.query["page"]) for r in pages] == [(["100"], ["1"]), (["100"], ["2"])]


def test_a_comments_page_repeated_unreadable_or_past_the_limit_fails_the_read(
    gh: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = many_comments(gh, 150)
    dropped = Proxy(query=lambda path, q: {k: v for k, v in q.items() if k != "page"})
    with pytest.raises(ProviderError) as err:
        proxied(gh, dropped).repo("acme", "api", SESSION_PERMISSIONS).list_issue_comments(number)
    assert f"page 2 of the comments of #{number} in acme/api repeats page 1" in err.value.message

    garbled = Proxy(answer=lambda path, body: {"comments": body} if path.endswith("/comments") else body)
    with pytest.raises(ProviderError) as err:
        proxied(gh, garbled).repo("acme", "api", SESSION_PERMISSIONS).list_issue_comments(number)
    assert "could not be read (not a list of comments)" in err.value.message

    from aiimpl_core.github import client as github_client

    monkeypatch.setattr(github_client, "COMMENT_PAGES", 1)
    with pytest.raises(ProviderError) as err:
        app_client(gh).repo("acme", "api", SESSION_PERMISSIONS).list_issue_comments(number)
    assert err.value.message == f"github: #{number} in acme/api has more than 100 comments: not all were read"
