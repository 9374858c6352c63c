"""Secrets never leave the orchestrator: not in logs, stored rows, comments, step history, admin
answers, the OpenAPI description, the metrics, the UI, or the ``aiimpl`` command line.

A whole run is played with the credentials the launcher really issues (nonce, run tokens), with
every credential configured with a distinctive value; then the logs (DEBUG), every row of every
table, every comment the fake tracker received, every GET of the admin API and every UI page are
searched for each value.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from aiimpl_core.auth.signatures import github_signature
from aiimpl_core.types import Phase
from aiimpl_core.ui.views import PANELS

from .conftest import GLOBAL_SECRET, SECRETS, TEAM_SECRET, bearer, dump_rows, leaks


def _fill(rule: str, job_id: int) -> str:
    values = {"jobId": str(job_id), "teamKey": "ENG", "name": TEAM_SECRET[0], "machineId": "run-1"}
    return re.sub(r"<(?:[a-z]+:)?(\w+)>", lambda m: values.get(m.group(1), "x"), rule)


def _admin_get_bodies(app: Any, client: Any, headers: dict[str, str], job_id: int) -> dict[str, str]:
    """The body of every GET under ``/api/`` that the admin UI can call."""
    out = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or not rule.rule.startswith("/api/"):
            continue
        url = _fill(rule.rule, job_id)
        resp = client.get(url, headers=headers)
        # 501/503: the reference's "not configured" answers (Jira, secrets without Fly)
        assert resp.status_code < 500 or resp.status_code in (501, 503), (url, resp.get_data(as_text=True))
        out[url] = resp.get_data(as_text=True)
    return out


def _ui_pages(app: Any, client: Any) -> dict[str, str]:
    out = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or not rule.rule.startswith("/ui/") or "static" in rule.rule:
            continue
        urls = (
            [rule.rule]
            if "<" not in rule.rule
            else [f"/ui/{slug}" for slug in (*(slug for slug, _ in PANELS), "jira")]
        )
        for url in urls:
            resp = client.get(url)
            out[url] = resp.get_data(as_text=True)
    return out


@pytest.fixture
def played_run(app, client, sec_logs, sec_admin, sec_mapping, sec_launch, sec_tracker):
    """A planning-free implementation run, start to end, through every callback endpoint."""
    sec_mapping("ENG", extra_env={"FEATURE_FLAG": "on"})
    assert client.post(
        "/api/mappings/ENG/secrets", headers=sec_admin, json={"name": TEAM_SECRET[0], "value": TEAM_SECRET[1]}
    ).status_code in (200, 201)
    assert client.post(
        "/api/global-secrets", headers=sec_admin, json={"name": GLOBAL_SECRET[0], "value": GLOBAL_SECRET[1]}
    ).status_code in (200, 201)
    job_id, env = sec_launch("ENG-1", Phase.IMPLEMENTATION)
    # the session really received the credentials the audit searches for afterwards
    assert env["DB_PASSWORD"] == TEAM_SECRET[1]
    assert env["NPM_TOKEN"] == GLOBAL_SECRET[1]
    assert env["ANTHROPIC_API_KEY"] == SECRETS["AIIMPL_ANTHROPIC_API_KEY"]
    nonce = env["AIIMPL_NONCE"]

    ok = client.post(
        "/api/status", json={"nonce": nonce, "event": "session_created", "logUrl": "https://logs.test/1"}
    )
    assert ok.status_code == 200, ok.get_json()
    step = {"id": "clone", "type": "clone", "status": "succeeded", "started_at": "2026-01-01T00:00:00Z"}
    assert client.post("/api/step-report", json={"nonce": nonce, "step": step}).status_code == 200
    assert (
        client.post(
            "/runner/progress",
            headers=bearer(env["AIIMPL_PROGRESS_TOKEN"]),
            json={"step": {**step, "id": "agent", "type": "agent"}},
        ).status_code
        == 200
    )
    assert (
        client.get("/runner/planning-context", headers=bearer(env["AIIMPL_CONTEXT_TOKEN"])).status_code == 200
    )
    # refusals log too: a wrong admin code, a forged run token, a bad webhook signature
    assert client.post("/api/auth", json={"code": "wrong-code"}).status_code == 403
    forged = env["AIIMPL_RESULT_TOKEN"][:-4] + "AAAA"
    assert client.post("/runner/result", headers=bearer(forged), json={}).status_code == 401
    assert (
        client.post(
            "/api/github/webhook",
            data=b"{}",
            headers={"X-Hub-Signature-256": "sha256=00"},
            content_type="application/json",
        ).status_code
        == 401
    )
    body = b'{"action": "opened"}'
    signed = github_signature(SECRETS["AIIMPL_GITHUB_WEBHOOK_SECRET"], body)
    assert (
        client.post(
            "/api/github/webhook",
            data=body,
            content_type="application/json",
            headers={"X-Hub-Signature-256": signed, "X-GitHub-Event": "pull_request"},
        ).status_code
        == 200
    )
    assert (
        client.post(
            "/trigger/gap-fill", headers=bearer("not-the-secret"), json={"issueKey": "ENG-1", "prNumber": 3}
        ).status_code
        == 401
    )
    # the tracker refuses once: the outbox logs the failure and retries later
    from aiimpl_core.testing.fakes import fail_with

    sec_tracker.fail["post_comment"] = fail_with(503, "tracker unavailable")
    result = client.post(
        "/runner/result",
        headers=bearer(env["AIIMPL_RESULT_TOKEN"]),
        json={
            "outcome": "failure",
            "phase": "implementation",
            "comments": [{"body": "Tried twice."}],
            "error": "git clone failed (exit 128): repository not found",
            "logExcerpt": "fatal: repository not found",
            "logLabel": "session_failed",
        },
    )
    assert result.status_code == 200, result.get_json()
    del sec_tracker.fail["post_comment"]
    from aiimpl_core.orm import utcnow
    from aiimpl_core.services import outbox

    assert outbox.deliver(issue_keys=["ENG-1"], now=utcnow() + timedelta(hours=2))["sent"] >= 1
    # the nonce of the ended job is dead now: a late status is refused (and logged, perhaps)
    assert client.post("/api/status", json={"nonce": nonce, "event": "session_cleaned_up"}).status_code == 403
    return job_id, env


def _secret_values(env: dict[str, str]) -> dict[str, str]:
    values = dict(SECRETS)
    values["team secret"] = TEAM_SECRET[1]
    values["global secret"] = GLOBAL_SECRET[1]
    values["nonce"] = env["AIIMPL_NONCE"]
    for name in ("AIIMPL_RESULT_TOKEN", "AIIMPL_PROGRESS_TOKEN", "AIIMPL_CONTEXT_TOKEN"):
        values[name] = env[name]
        # the signature part alone is as good as the token to whoever also sees the claims
        values[name + " signature"] = env[name].rsplit(".", 1)[1]
    return values


def _assert_clean(where: str, text: str, values: dict[str, str]) -> None:
    found = leaks(text, values.values())
    names = [name for name, value in values.items() if value in found]
    assert not names, f"{where} contains {names}"


def test_no_secret_in_logs(played_run, sec_logs):
    job_id, env = played_run
    text = sec_logs.text()
    # captured at DEBUG; the outbox's warning proves the search below sees the run's records
    assert "tracker unavailable" in text, "the run's log records were not captured"
    _assert_clean("the logs", text, _secret_values(env))


def test_a_dispatch_request_a_plugin_logs_whole_holds_no_secret(played_run, sec_runner):
    """A backend that logs its request (``log.info("dispatching %r", request)``) put the job's
    nonce and run tokens, and the team's secrets, in the server log while the job ran."""
    job_id, env = played_run
    request = sec_runner.runs[job_id].request
    assert request.env == env  # (what the backend was handed)
    _assert_clean("a dispatch request's repr", repr(request), _secret_values(env))


def test_no_secret_in_any_stored_row(played_run):
    job_id, env = played_run
    rows = dump_rows()
    assert "jobs: " in rows and "job_steps: " in rows and "outbox" in rows
    _assert_clean("the database", rows, _secret_values(env))


def test_nonce_is_stored_only_hashed(played_run):
    job_id, env = played_run
    rows = dump_rows()
    assert env["AIIMPL_NONCE"] not in rows
    assert hashlib.sha256(env["AIIMPL_NONCE"].encode()).hexdigest() in rows


def test_no_secret_in_tracker_comments(played_run, sec_tracker):
    job_id, env = played_run
    posted = "\n".join(body for bodies in sec_tracker.comments.values() for body in bodies)
    assert "Session machine created" in posted and "Implementation failed" in posted
    _assert_clean("the tracker comments", posted, _secret_values(env))


def test_no_secret_in_admin_answers_or_openapi(played_run, app, client, sec_admin):
    job_id, env = played_run
    bodies = _admin_get_bodies(app, client, sec_admin, job_id)
    assert f"/api/jobs/{job_id}/steps" in bodies and "/api/openapi.json" in bodies
    assert TEAM_SECRET[0] in bodies["/api/mappings/ENG/secrets"]  # names are listed ...
    assert GLOBAL_SECRET[0] in bodies["/api/global-secrets"]
    for url, text in bodies.items():
        _assert_clean(f"GET {url}", text, _secret_values(env))  # ... values never


def test_no_secret_in_the_metrics(played_run, client):
    """``GET /metrics`` exports counts and seconds: not a back-off's error text, nor any value."""
    from aiimpl_core.services import poller
    from aiimpl_core.testing.fakes import fail_with

    job_id, env = played_run
    poller.record_failure("ticketing", "fake-tracker", fail_with(503, "tracker unavailable"))
    resp = client.get("/metrics", headers=bearer(SECRETS["AIIMPL_METRICS_TOKEN"]))
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert 'aiimpl_backoff_remaining_seconds{id="fake-tracker",kind="ticketing"}' in text
    assert "tracker unavailable" not in text
    _assert_clean("GET /metrics", text, _secret_values(env))


def test_no_form_of_the_ui_can_send_a_value_in_a_url(app, client):
    """Every UI form is sent by the page's script; a form submitted before the script attached its
    handler would go out natively, by GET (the secret's or the access code's value in the URL, its
    history and any proxy's log). So every form's method is POST, and its submit button is served
    disabled, for the script to enable once the handlers are attached."""
    from html.parser import HTMLParser

    class Forms(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.forms: list[dict[str, Any]] = []
            self.inside = False

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "form":
                self.inside = True
                self.forms.append({"id": values.get("id"), "method": values.get("method"), "buttons": []})
            elif tag == "button" and self.inside and values.get("type") == "submit":
                self.forms[-1]["buttons"].append("disabled" in values)

        def handle_endtag(self, tag: str) -> None:
            if tag == "form":
                self.inside = False

    pages = _ui_pages(app, client)
    found = set()
    for url, html in pages.items():
        parser = Forms()
        parser.feed(html)
        for form in parser.forms:
            found.add(form["id"])
            assert (form["method"] or "").lower() == "post", (url, form)
            assert all(form["buttons"]), (url, form)
    assert {"signin-form", "secret-form", "mapping-form", "runner-mode-form"} <= found, found
    script = client.get("/ui/static/app.js").get_data(as_text=True)
    assert "b.disabled = false" in script


def test_no_secret_in_ui_pages(played_run, app, client):
    job_id, env = played_run
    pages = _ui_pages(app, client)
    assert "/ui/signin" in pages and "/ui/projects" in pages
    for url, text in pages.items():
        _assert_clean(f"GET {url}", text, _secret_values(env))


def test_admin_session_token_does_not_carry_the_access_code(client):
    resp = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]})
    token = resp.get_json()["token"]
    import base64

    decoded = base64.urlsafe_b64decode(token.split(".")[0] + "==").decode("latin-1")
    assert SECRETS["AIIMPL_ADMIN_ACCESS_CODE"] not in token + decoded
    assert SECRETS["AIIMPL_SECRET_KEY"] not in token + decoded


# -- the GitHub App key and installation tokens -----------------------------------------------


class TestGitHubAppCredentials:
    """``/api/token`` through the real GitHub client against the fake GitHub: the App's private
    key and the installation token it hands out appear nowhere but in that one answer."""

    @pytest.fixture
    def gh(self):
        from aiimpl_core.testing.fake_github import FakeGitHub

        with FakeGitHub() as fake:
            fake.add_repo("acme", "api")
            fake.add_installation("acme")
            yield fake
            fake.assert_clean()

    @pytest.fixture
    def aiimpl_config(self, gh):
        config = dict(SECRETS)
        del config["AIIMPL_GITHUB_TOKEN"]
        config.update(
            {
                "AIIMPL_GITHUB_API_URL": gh.url,
                "AIIMPL_GITHUB_APP_ID": str(gh.app_id),
                "AIIMPL_GITHUB_PRIVATE_KEY": gh.private_key_pem,
            }
        )
        return config

    def test_installation_token_and_app_key_stay_out_of_logs_and_rows(
        self, app, client, sec_logs, sec_mapping, sec_launch, gh
    ):
        sec_mapping("ENG")
        job_id, env = sec_launch("ENG-1")
        resp = client.post("/api/token", json={"nonce": env["AIIMPL_NONCE"], "owner": "acme"})
        assert resp.status_code == 200, resp.get_json()
        token = resp.get_json()["token"]
        assert token
        # a wrong owner is refused without echoing anything secret
        refused = client.post("/api/token", json={"nonce": env["AIIMPL_NONCE"], "owner": "evil"})
        assert refused.status_code == 403 and refused.get_json() == {"error": "Owner mismatch"}
        key_body = "".join(line for line in gh.private_key_pem.splitlines() if "-----" not in line)
        logs = sec_logs.text()
        assert "urllib3" in logs  # the client's requests to the fake GitHub were logged at DEBUG
        for where, text in (("the logs", logs), ("the database", dump_rows())):
            assert token not in text, where
            assert key_body[:40] not in text, where
            assert env["AIIMPL_NONCE"] not in text, where


# -- the command line -------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> str:
    from aiimpl_core.cli import cli

    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_aiimpl_config_shows_no_secret_value(tmp_path):
    env = {**SECRETS, "AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    out = _cli(["config"], env)
    assert "AIIMPL_ANTHROPIC_API_KEY" in out and "AIIMPL_LINEAR_API_KEY" in out  # plugins' vars too
    assert "(set)" in out
    found = leaks(out, SECRETS.values())
    assert not found, f"aiimpl config printed {found}"


def test_aiimpl_plugins_list_shows_no_secret_value(tmp_path):
    env = {**SECRETS, "AIIMPL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    out = _cli(["plugins", "list"], env) + _cli(["plugins", "list", "--json"], env)
    assert "linear" in out and "jira" in out
    found = leaks(out, SECRETS.values())
    assert not found, f"aiimpl plugins list printed {found}"


def test_aiimpl_config_hides_the_database_password():
    out = _cli(["config"], {"AIIMPL_DATABASE_URL": "postgresql+psycopg://aiimpl:db-pass-9f8e7d6c@db/aiimpl"})
    assert "AIIMPL_DATABASE_URL" in out
    assert "db-pass-9f8e7d6c" not in out


# -- what runners send back -------------------------------------------------------------------
# The session program redacts what it knows; the orchestrator knows the values it handed out
# (stored secrets, the model key, its own credentials) and should not pass them on unchecked
# when a runner that was not the session program (a customised workflow, an older image) sends
# them back.

_REDACTION_GAP = (
    "aiimpl_core/services/callbacks.py:record_result/_upsert_step — runner-supplied error, "
    "logExcerpt, comments and step detail are stored and posted to the tracker verbatim, without "
    "redacting the secret values the orchestrator itself gave the session (team/global secrets, "
    "model API key); fix: mask the job's secret env values (secrets.values_for_team + "
    "model.session_env + sensitive config) before enqueue_comment/end_job/_upsert_step"
)


def test_runner_result_text_is_redacted_of_known_secrets(
    app, client, sec_admin, sec_mapping, sec_launch, sec_tracker
):
    sec_mapping("ENG")
    client.post(
        "/api/mappings/ENG/secrets", headers=sec_admin, json={"name": TEAM_SECRET[0], "value": TEAM_SECRET[1]}
    )
    job_id, env = sec_launch("ENG-1")
    leaked = f"psql: password {TEAM_SECRET[1]} rejected; key {SECRETS['AIIMPL_ANTHROPIC_API_KEY']}"
    resp = client.post(
        "/runner/result",
        headers=bearer(env["AIIMPL_RESULT_TOKEN"]),
        json={
            "outcome": "failure",
            "phase": "implementation",
            "error": leaked,
            "logExcerpt": leaked,
            "comments": [{"body": leaked}],
        },
    )
    assert resp.status_code == 200, resp.get_json()
    posted = "\n".join(body for bodies in sec_tracker.comments.values() for body in bodies)
    assert "Implementation failed" in posted
    assert not leaks(posted + dump_rows(), [TEAM_SECRET[1], SECRETS["AIIMPL_ANTHROPIC_API_KEY"]])


def test_step_detail_is_redacted_of_known_secrets(app, client, sec_admin, sec_mapping, sec_launch):
    sec_mapping("ENG")
    client.post(
        "/api/global-secrets", headers=sec_admin, json={"name": GLOBAL_SECRET[0], "value": GLOBAL_SECRET[1]}
    )
    job_id, env = sec_launch("ENG-1")
    step = {
        "id": "setup",
        "type": "setup",
        "status": "failed",
        "started_at": "2026-01-01T00:00:00Z",
        "detail": {"output": f"npm ERR! token {GLOBAL_SECRET[1]} expired"},
    }
    report = client.post("/api/step-report", json={"nonce": env["AIIMPL_NONCE"], "step": step})
    assert report.status_code == 200
    steps = client.get(f"/api/jobs/{job_id}/steps", headers=sec_admin).get_data(as_text=True)
    assert "npm ERR!" in steps
    assert GLOBAL_SECRET[1] not in steps + dump_rows()


def test_every_text_a_runner_sends_is_redacted(app, client, sec_admin, sec_mapping, sec_launch, sec_tracker):
    """Not only details and reasons: a status event's log and PR links, and a step's id, type,
    status, times and detail keys, on both step endpoints; none reaches a row, an admin answer or
    a comment."""
    sec_mapping("ENG")
    client.post(
        "/api/global-secrets", headers=sec_admin, json={"name": GLOBAL_SECRET[0], "value": GLOBAL_SECRET[1]}
    )
    secret = GLOBAL_SECRET[1]
    job_id, env = sec_launch("ENG-1")
    nonce = env["AIIMPL_NONCE"]
    events = [
        {"event": "session_created", "logUrl": f"https://logs.example/run?token={secret}"},
        {"event": "pr_opened", "prUrl": f"https://github.com/acme/api/pull/7?t={secret}"},
    ]
    for event in events:
        resp = client.post("/api/status", json={"nonce": nonce, **event})
        assert resp.status_code == 200, resp.get_json()

    def step(n: int) -> dict[str, Any]:
        return {"id": f"clone-{n}-{secret}", "type": f"git clone https://x:{secret}@github.com",
                "status": f"failed {secret}", "started_at": secret, "finished_at": secret,
                "detail": {secret: "key", "nested": [{secret: secret}]}}

    report = client.post("/api/step-report", json={"nonce": nonce, "step": step(1)})
    assert report.status_code == 200 and secret not in report.get_data(as_text=True)
    progress = client.post("/runner/progress", headers=bearer(env["AIIMPL_PROGRESS_TOKEN"]),
                           json={"step": step(2)})
    assert progress.status_code == 200 and secret not in progress.get_data(as_text=True)

    job = client.get(f"/api/jobs/{job_id}", headers=sec_admin).get_json()
    assert job["logUrl"] == "https://logs.example/run?token=[REDACTED]"
    assert job["prUrl"] == "https://github.com/acme/api/pull/7?t=[REDACTED]"
    steps = client.get(f"/api/jobs/{job_id}/steps", headers=sec_admin).get_data(as_text=True)
    assert "git clone https://x:[REDACTED]@github.com" in steps
    posted = "\n".join(body for bodies in sec_tracker.comments.values() for body in bodies)
    assert "logs.example" in posted
    assert not leaks(json.dumps(job) + steps + posted + dump_rows(), [secret])


def test_a_runner_text_is_redacted_of_the_jobs_own_nonce_and_tokens(
    app, client, sec_admin, sec_mapping, sec_launch, sec_tracker
):
    """The job's nonce and run tokens are no secret row, yet a session's environment: a step or
    status event quoting them (a tool that printed its environment) has them masked, on the
    progress endpoint, the step report and the status event alike."""
    sec_mapping("ENG")
    job_id, env = sec_launch("ENG-1")
    nonce, credentials = env["AIIMPL_NONCE"], [env["AIIMPL_NONCE"], env["AIIMPL_PROGRESS_TOKEN"],
                                              env["AIIMPL_RESULT_TOKEN"]]
    printed = " ".join(f"{n}={v}" for n, v in zip(("NONCE", "PROGRESS", "RESULT"), credentials, strict=True))

    def step(n: int) -> dict[str, Any]:
        return {"id": f"env-{n}", "type": "setup", "status": "failed", "started_at": "2026-01-01T00:00:00Z",
                "detail": {"output": printed}}

    assert client.post("/api/step-report", json={"nonce": nonce, "step": step(1)}).status_code == 200
    progress = client.post("/runner/progress", headers=bearer(env["AIIMPL_PROGRESS_TOKEN"]),
                           json={"step": step(2)})
    assert progress.status_code == 200, progress.get_json()
    failed = client.post("/api/status", json={"nonce": nonce, "event": "session_failed", "reason": printed})
    assert failed.status_code == 200, failed.get_json()

    steps = client.get(f"/api/jobs/{job_id}/steps", headers=sec_admin).get_data(as_text=True)
    assert steps.count("NONCE=[REDACTED] PROGRESS=[REDACTED] RESULT=[REDACTED]") == 2
    posted = "\n".join(body for bodies in sec_tracker.comments.values() for body in bodies)
    assert r"NONCE=\[REDACTED] PROGRESS=\[REDACTED] RESULT=\[REDACTED]" in posted  # (Markdown-escaped)
    assert not leaks(steps + posted + dump_rows(), credentials)


def _report_detail(client: Any, token: str, job_id: int, n: int, text: str) -> str:
    """Post a finished step whose detail carries ``text``; the detail as stored."""
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import JobStep

    step = {"id": f"s{n}", "type": "agent", "status": "succeeded", "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:01:00Z", "detail": {"output": text}}
    resp = client.post("/runner/progress", headers=bearer(token), json={"step": step})
    assert resp.status_code == 200, resp.get_json()
    stored = db.session.scalar(
        db.select(JobStep.detail).where(JobStep.job_id == job_id, JobStep.step_id == f"s{n}")
    )
    db.session.commit()
    return json.dumps(stored)


def test_a_secret_changed_after_a_report_is_redacted_from_the_next_one(
    app, client, sec_admin, sec_mapping, sec_launch
):
    """Redactors are kept per process, keyed by the state of the secrets table: a secret added or
    changed between two reports is known to the second one at once."""
    sec_mapping("ENG")
    job_id, env = sec_launch("ENG-1")
    token = env["AIIMPL_PROGRESS_TOKEN"]
    first, second = "first-value-4d9a7c1e5b", "second-value-8e2f6a0d3c"
    assert first in _report_detail(client, token, job_id, 1, f"using {first}")  # not a secret yet
    for value in (first, second):  # created, then changed
        saved = client.post("/api/global-secrets", headers=sec_admin,
                            json={"name": "LATE_TOKEN", "value": value})
        assert saved.status_code in (200, 201), saved.get_json()
    assert second not in _report_detail(client, token, job_id, 2, f"using {second}")
    saved = client.post("/api/mappings/ENG/secrets", headers=sec_admin,
                        json={"name": TEAM_SECRET[0], "value": TEAM_SECRET[1]})
    assert saved.status_code in (200, 201), saved.get_json()
    assert TEAM_SECRET[1] not in _report_detail(client, token, job_id, 3, f"password {TEAM_SECRET[1]}")


def _statements_of_report(client: Any, token: str, job_id: int, n: int, text: str) -> tuple[str, list[str]]:
    """:func:`_report_detail`, with the statements the report sent (upper case, one line each)."""
    from sqlalchemy import event

    from aiimpl_core.extensions import db

    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()).upper())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        stored = _report_detail(client, token, job_id, n, text)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    # the test's read
    return stored, [s for s in sent if not s.startswith(("BEGIN", "SELECT JOB_STEPS.DETAIL"))]


def test_a_report_with_a_detail_reuses_the_redactor_while_nothing_changes(
    app, client, sec_admin, sec_mapping, sec_launch
):
    """Building a redactor reads and decrypts every secret; a report whose secrets and mapping are
    unchanged since this process saw the job last is redacted with the redactor it keeps, and its
    write returns their state to check that: one statement, as a report without a detail. The
    job's first report reads that state before its write, the same as the write returns it, so
    it is written once too."""
    sec_mapping("ENG")
    sec_mapping("OPS")  # another team, its job and its secret: none of them is the first report's
    saved = client.post("/api/global-secrets", headers=sec_admin,
                        json={"name": GLOBAL_SECRET[0], "value": GLOBAL_SECRET[1]})
    assert saved.status_code in (200, 201), saved.get_json()
    saved = client.post("/api/mappings/OPS/secrets", headers=sec_admin,
                        json={"name": TEAM_SECRET[0], "value": TEAM_SECRET[1]})
    assert saved.status_code in (200, 201), saved.get_json()
    sec_launch("OPS-1")
    job_id, env = sec_launch("ENG-1")
    token = env["AIIMPL_PROGRESS_TOKEN"]
    stored, first = _statements_of_report(client, token, job_id, 1, f"token {GLOBAL_SECRET[1]}")
    assert GLOBAL_SECRET[1] not in stored
    assert sum(s.startswith("INSERT INTO JOB_STEPS") for s in first) == 1, first
    stored, mine = _statements_of_report(client, token, job_id, 2, f"token {GLOBAL_SECRET[1]}")
    assert GLOBAL_SECRET[1] not in stored
    assert len(mine) == 1 and mine[0].startswith("INSERT INTO JOB_STEPS"), mine
    assert not any("VALUE_ENCRYPTED" in s for s in mine), mine


def test_another_teams_secret_keeps_the_redactor(app, client, sec_admin, sec_mapping, sec_launch):
    """A report's redaction is keyed by the global secrets and its own team's: a secret another
    team adds or changes is not among them (the state a report reads leaves other teams' secrets
    out), so the next report of this team is still one statement that reads no secret, while that
    team's reports mask it at once."""
    sec_mapping("ENG")
    sec_mapping("OPS")
    eng_job, eng_env = sec_launch("ENG-1")
    ops_job, ops_env = sec_launch("OPS-1")
    eng_token, ops_token = eng_env["AIIMPL_PROGRESS_TOKEN"], ops_env["AIIMPL_PROGRESS_TOKEN"]
    ops_secret = "ops-team-secret-value-5e1b9d"
    assert ops_secret in _report_detail(client, eng_token, eng_job, 1, f"using {ops_secret}")
    assert ops_secret in _report_detail(client, ops_token, ops_job, 1, f"using {ops_secret}")  # not yet one
    saved = client.post("/api/mappings/OPS/secrets", headers=sec_admin,
                        json={"name": "OPS_TOKEN", "value": ops_secret})
    assert saved.status_code in (200, 201), saved.get_json()
    stored, mine = _statements_of_report(client, eng_token, eng_job, 2, f"using {ops_secret}")
    assert ops_secret in stored  # not ENG's secret: its sessions are never handed it
    assert len(mine) == 1 and mine[0].startswith("INSERT INTO JOB_STEPS"), mine
    assert not any("VALUE_ENCRYPTED" in s for s in mine), mine
    assert ops_secret not in _report_detail(client, ops_token, ops_job, 2, f"using {ops_secret}")


# -- access logs ------------------------------------------------------------------------------


def test_gunicorn_access_log_has_no_query_string_or_headers():
    """The Jira webhook accepts its secret as ``?secret=``; the production access log line must
    carry the path only (``%(U)s``), never the query (``%(q)s``, ``%(r)s``) or a header."""
    from aiimpl_core import gunicorn_conf

    fmt = gunicorn_conf.access_log_format
    assert "%(U)s" in fmt
    for leaky in ("%(r)s", "%(q)s", "%(f)s", "i)s"):
        assert leaky not in fmt, leaky


def test_dev_server_access_log_does_not_carry_the_jira_secret(full_app, sec_logs):
    import requests

    from aiimpl_core.cli.devserver import make_dev_server
    from aiimpl_core.testing.serving import ServerThread

    with ServerThread(make_dev_server("127.0.0.1", 0, full_app)) as live:
        secret = SECRETS["AIIMPL_JIRA_WEBHOOK_SECRET"]
        resp = requests.post(f"{live.url}/api/jira/webhook?secret={secret}",
                             json={"webhookEvent": "comment_created"}, timeout=10)
        assert resp.status_code == 200
    # the server's own records only (the test's HTTP client logs its URL too, at DEBUG)
    text = "\n".join(r.getMessage() for r in sec_logs.records if r.name == "werkzeug")
    assert "/api/jira/webhook" in text  # the request was logged ...
    assert secret not in text  # ... without its secret


@pytest.mark.parametrize(("request_line", "status", "phrase"), [
    (b"GET /api/jira/webhook?secret={} HTTP/1.1 extra", 400, "Bad Request"),  # http.server quoted it
    (b"GET /api/jira/webhook?secret={} HTTP/9.x", 400, "Bad Request"),
    # HTTP/0.9, which has only GET (and, that refused, was answered with no status line)
    (b"POST /api/jira/webhook?secret={}", 400, "Bad Request"),
    (b"GET /api/jira/webhook?secret={} HTTP/2.0", 505, "HTTP Version Not Supported"),
    (b"GET /api/jira/webhook?secret={}&pad=" + b"a" * 70_000 + b" HTTP/1.1", 414, "Request-URI Too Long"),
    (b"GET /api/jira/webhook?secret={} HTTP/1.1\r\nX-Pad: " + b"b" * 70_000, 431,
     "Request Header Fields Too Large"),
], ids=["syntax", "version", "http0.9-post", "http2", "long-line", "long-header"])
def test_dev_server_answers_a_request_it_cannot_read_in_json_quoting_nothing(
    full_app, sec_logs, request_line: bytes, status: int, phrase: str
):
    """``http.server``'s own answers, before the app sees the request, were HTML pages quoting
    the request line, and its log lines quoted it whole, query string and secret included."""
    import requests

    from aiimpl_core.cli.devserver import make_dev_server
    from aiimpl_core.testing.serving import ServerThread, raw_exchange

    secret = SECRETS["AIIMPL_JIRA_WEBHOOK_SECRET"]
    with ServerThread(make_dev_server("127.0.0.1", 0, full_app)) as live:
        answer = raw_exchange(live.port, request_line.replace(b"{}", secret.encode()) + b"\r\n\r\n")
        after = requests.get(f"{live.url}/healthz", timeout=10)  # and the server goes on
    line, headers, body = answer
    assert line == f"HTTP/1.1 {status} {phrase}", answer
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body) == {"error": phrase}
    assert secret not in repr(answer)
    text = "\n".join(r.getMessage() for r in sec_logs.records if r.name == "werkzeug")
    assert f"code {status}, {phrase}: the request could not be read (not quoted)" in text
    assert secret not in text and "pad=" not in text
    assert after.status_code == 200


def test_no_secret_in_any_get_answer_with_the_real_plugins(full_app, sec_logs):
    """The same search over the app with every installed plugin (their admin routes, their part
    of the OpenAPI description, their UI panels), signed in, and over what it logged."""
    client = full_app.test_client()
    token = client.post("/api/auth", json={"code": SECRETS["AIIMPL_ADMIN_ACCESS_CODE"]}).get_json()["token"]
    bodies = _admin_get_bodies(full_app, client, bearer(token), 1)
    bodies.update(_ui_pages(full_app, client))
    assert "/api/openapi.json" in bodies and "/ui/jira" in bodies
    assert "/api/linear/webhook" in bodies["/api/openapi.json"]
    for url, text in bodies.items():
        found = leaks(text, SECRETS.values())
        assert not found, f"GET {url} contains {found}"
    assert not leaks(sec_logs.text(), SECRETS.values())


def test_a_backends_refusal_quoting_a_secret_is_redacted(
    app, client, sec_admin, sec_mapping, sec_runner, sec_tracker
):
    """A runtime's refusal may quote the session's environment, a value escaped as it prints it
    (runc: ``"TEAM_TOKEN=sek\\x00rit"``): the job's reason, its comment and the log never carry
    the secret, in whichever encoding the job's redactor knows."""
    from sqlalchemy import select

    from aiimpl_core.errors import DispatchError
    from aiimpl_core.extensions import db
    from aiimpl_core.orm import Job, Mapping
    from aiimpl_core.services import launch

    sec_mapping("ENG")
    client.post(
        "/api/mappings/ENG/secrets", headers=sec_admin, json={"name": TEAM_SECRET[0], "value": TEAM_SECRET[1]}
    )
    quoted = json.dumps(f"{TEAM_SECRET[0]}={TEAM_SECRET[1]}")
    sec_runner.dispatch_error = DispatchError(
        f"the runtime refused the session: invalid environment {quoted} ({TEAM_SECRET[1]})",
        provider="github-actions",
    )
    mapping = db.session.scalar(select(Mapping).where(Mapping.team_key == "ENG"))
    job = launch.create_job(mapping, "ENG-1", phase=Phase.IMPLEMENTATION, provider="fake-tracker",
                            choice=launch.choose_backend(mapping))
    db.session.commit()
    with pytest.raises(DispatchError) as refused:
        launch.launch(job)
    ended = db.session.get(Job, job.id)
    assert ended.status == "failed" and "the runtime refused the session" in ended.error
    assert not leaks(ended.error + refused.value.message + dump_rows(), [TEAM_SECRET[1]])
