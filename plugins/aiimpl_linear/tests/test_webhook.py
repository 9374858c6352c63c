"""``POST /api/linear/webhook``: Linear's signature, the timestamp window, and immediate dispatch."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiimpl_core.extensions import db
from aiimpl_core.orm import Job, Mapping, utcnow
from aiimpl_core.services.dispatch import CycleReport, Dispatched
from aiimpl_core.testing.orchestrator import answer_due_after, fresh, held
from aiimpl_core.webhooks import wait_for_checks

from aiimpl_linear import webhook
from aiimpl_linear.testing import FakeLinear, shape_problems

URL = "/api/linear/webhook"


@pytest.fixture
def cycles(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The dispatch checks the webhook ran, each reported as dispatching its issue (as job 7)."""
    calls: list[list[str]] = []

    def run_cycle(keys: list[str]) -> CycleReport:
        calls.append(list(keys))
        report = CycleReport(started_at=utcnow())
        report.dispatched = [Dispatched(key, 7, "implementation", "github-actions", False) for key in keys]
        return report

    monkeypatch.setattr(webhook, "run_cycle", run_cycle)
    return calls


def deliver(
    client: Any, fake: FakeLinear, payload: Any, *, secret: str | None = None, raw: bytes | None = None
) -> Any:
    body = raw if raw is not None else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "Linear-Event": "Issue",
        "Linear-Delivery": "d-1",
        "Linear-Signature": fake.sign(body, secret),
    }
    return client.post(URL, data=body, headers=headers)


def test_fake_payloads_have_linear_shapes(fake: FakeLinear) -> None:
    key = fake.add_issue("ENG", labels=["AI-Implement", "bug"])["identifier"]
    payload = fake.issue_webhook_payload(key)
    assert shape_problems(payload, "EntityWebhookPayload") == []
    assert shape_problems(payload["data"], "IssueWebhookPayload") == []
    # the check has teeth
    broken = dict(payload["data"], labels=[{"name": "AI-Implement"}], extra=1)
    problems = shape_problems(broken, "IssueWebhookPayload")
    assert any("labels[0].id" in p for p in problems) and any(".extra" in p for p in problems)


def test_trigger_label_runs_a_cycle_for_the_issue(client, fake, cycles) -> None:
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    resp = deliver(client, fake, fake.issue_webhook_payload(key))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"ok": True, "issue": key, "dispatched": True, "jobId": 7, "status": "unknown"}
    assert cycles == [[key]]


def test_a_description_holding_nul_or_half_a_surrogate_pair_still_triggers(client, fake, cycles) -> None:
    """People's text in a signed delivery is taken with U+FFFD in place of what no database
    stores: the delivery was refused as "Invalid JSON payload", on each of Linear's retries too."""
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    payload = fake.issue_webhook_payload(key)
    payload["data"]["description"] = "steps:\u0000 \ud83d"
    resp = deliver(client, fake, payload)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["dispatched"] is True and cycles == [[key]]


def test_issue_without_the_trigger_is_ignored(client, fake, cycles) -> None:
    key = fake.add_issue("ENG", labels=["bug"])["identifier"]
    resp = deliver(client, fake, fake.issue_webhook_payload(key))
    assert resp.status_code == 200 and resp.get_json()["ignored"] is True
    assert cycles == []


@pytest.mark.parametrize("change", [{"type": "Comment"}, {"action": "remove"}])
def test_other_events_are_ignored(client, fake, cycles, change: dict[str, str]) -> None:
    key = fake.add_issue("ENG")["identifier"]
    resp = deliver(client, fake, {**fake.issue_webhook_payload(key), **change})
    assert resp.status_code == 200 and cycles == []


def test_bad_signature_is_401(client, fake, cycles) -> None:
    key = fake.add_issue("ENG")["identifier"]
    resp = deliver(client, fake, fake.issue_webhook_payload(key), secret="not-the-secret")
    assert resp.status_code == 401 and resp.get_json() == {"error": "Invalid signature"}
    resp = client.post(URL, json=fake.issue_webhook_payload(key))  # no signature at all
    assert resp.status_code == 401 and resp.get_json() == {"error": "Invalid signature"}
    assert cycles == []


class TestAListingSettingOutOfRange:
    """A setting the webhook does not use (the listing's page size) out of range fails each call of
    the connection, and answered every delivery, unsigned ones too, with its message (400), before
    the signature was looked at: Linear kept sending deliveries that could never succeed."""

    @pytest.fixture
    def aiimpl_config(self, fake: FakeLinear) -> dict[str, Any]:
        return {**fake.config(), "AIIMPL_LINEAR_PAGE_SIZE": "500"}

    def test_deliveries_are_still_verified_and_checked(self, client, fake, cycles) -> None:
        key = fake.add_issue("ENG")["identifier"]
        resp = client.post(URL, json=fake.issue_webhook_payload(key))
        assert resp.status_code == 401 and resp.get_json() == {"error": "Invalid signature"}
        resp = deliver(client, fake, fake.issue_webhook_payload(key))
        assert resp.status_code == 200, resp.get_json()
        assert cycles == [[key]]


def test_non_ascii_signature_is_401(client, fake, cycles) -> None:
    # any byte may arrive in a header (WSGI decodes them as latin-1): refused, never a 500
    body = json.dumps(fake.issue_webhook_payload(fake.add_issue("ENG")["identifier"])).encode()
    resp = client.post(
        URL, data=body, headers={"Content-Type": "application/json", "Linear-Signature": "\u00e9" * 64}
    )
    assert resp.status_code == 401 and resp.get_json() == {"error": "Invalid signature"}
    assert cycles == []


def test_body_changed_after_signing_is_401(client, fake, cycles) -> None:
    key = fake.add_issue("ENG")["identifier"]
    body = json.dumps(fake.issue_webhook_payload(key)).encode()
    signature = fake.sign(body)
    tampered = body.replace(key.encode(), b"ENG-999")
    resp = client.post(
        URL, data=tampered, headers={"Content-Type": "application/json", "Linear-Signature": signature}
    )
    assert resp.status_code == 401 and cycles == []


@pytest.mark.parametrize("age_seconds", [120, -120])
def test_timestamp_outside_the_window_is_401(client, fake, cycles, age_seconds: int) -> None:
    key = fake.add_issue("ENG")["identifier"]
    payload = fake.issue_webhook_payload(key, timestamp_ms=(time.time() - age_seconds) * 1000)
    resp = deliver(client, fake, payload)
    assert resp.status_code == 401
    assert resp.get_json() == {"error": "Webhook timestamp outside the allowed window"}
    assert cycles == []


def test_timestamp_inside_the_window_is_accepted(client, fake, cycles) -> None:
    key = fake.add_issue("ENG")["identifier"]
    payload = fake.issue_webhook_payload(key, timestamp_ms=(time.time() - 30) * 1000)
    assert deliver(client, fake, payload).status_code == 200 and cycles == [[key]]


def test_missing_timestamp_is_400(client, fake, cycles) -> None:
    key = fake.add_issue("ENG")["identifier"]
    payload = fake.issue_webhook_payload(key)
    del payload["webhookTimestamp"]
    resp = deliver(client, fake, payload)
    assert resp.status_code == 400 and resp.get_json() == {"error": "Missing webhookTimestamp"}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_invalid_json_is_400(client, fake, cycles, raw: bytes) -> None:
    resp = deliver(client, fake, None, raw=raw)
    assert resp.status_code == 400 and resp.get_json() == {"error": "Invalid JSON payload"}


def test_webhook_is_described_in_the_openapi_document(client) -> None:
    spec = client.get("/api/openapi.json").get_json()
    operation = spec["paths"]["/api/linear/webhook"]["post"]
    assert operation["security"] == []  # public: it authenticates itself with the signature
    assert {"200", "400", "401", "501"} <= set(operation["responses"])
    assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorSchema"
    }


class TestNotConfigured:
    @pytest.fixture
    def aiimpl_config(self, fake: FakeLinear) -> dict[str, Any]:
        return {"AIIMPL_LINEAR_API_URL": fake.url, "AIIMPL_LINEAR_API_KEY": fake.api_key}

    def test_without_a_secret_the_webhook_is_501(self, client, fake, cycles) -> None:
        key = fake.add_issue("ENG")["identifier"]
        resp = deliver(client, fake, fake.issue_webhook_payload(key))
        assert resp.status_code == 501 and resp.get_json() == {"error": "Linear webhook not configured"}
        assert cycles == []


@pytest.fixture
def add_mapping(app: Any) -> Callable[..., Mapping]:
    def make(team_key: str = "ENG") -> Mapping:
        row = Mapping(
            team_key=team_key,
            owner="acme",
            repo="api",
            default_branch="main",
            execution_mode="github-actions",
            ticketing={"provider": "linear"},
        )
        db.session.add(row)
        db.session.commit()
        return row

    return make


def test_label_added_in_linear_dispatches_at_once(app, client, fake, runner, add_mapping) -> None:
    # the real engine, no monkeypatch: webhook -> run_cycle_for_issues -> job -> AI-Working
    add_mapping("ENG")
    key = fake.add_issue("ENG", "Add export", labels=["feature"])["identifier"]
    fake.add_labels(key, "AI-Implement")  # a person adds the trigger; Linear sends the delivery

    payload = fake.issue_webhook_payload(key)
    resp = deliver(client, fake, payload)

    db.session.expire_all()
    jobs = db.session.scalars(db.select(Job).where(Job.issue_key == key)).all()
    assert [j.status for j in jobs] == ["dispatched"]
    assert resp.status_code == 200
    assert resp.get_json() == {
        "ok": True, "issue": key, "dispatched": True, "jobId": jobs[0].id, "status": "dispatched"}
    assert fake.labels_of(key) == ["AI-Working", "feature"]
    # the same delivery again (Linear retries) dispatches nothing more: the issue is re-read, and
    # has lost the trigger to the stage change
    again = deliver(client, fake, payload)
    assert again.status_code == 200
    assert again.get_json() == {"ok": True, "issue": key, "dispatched": False, "reason": "not triggered"}
    db.session.expire_all()
    assert len(db.session.scalars(db.select(Job).where(Job.issue_key == key)).all()) == 1


def test_an_issue_of_a_team_mapped_under_its_key_in_lower_case_dispatches_at_once(
    app, client, fake, runner, add_mapping
) -> None:
    """Linear's team keys are upper-case (its delivery names ENG-1): the check of an issue of a team
    mapped as ``eng`` found no mapping, and dispatched nothing."""
    add_mapping("eng")
    key = fake.add_issue("ENG", "Add export", labels=["AI-Implement"])["identifier"]

    resp = deliver(client, fake, fake.issue_webhook_payload(key))

    [job] = jobs_of(key)
    assert resp.status_code == 200
    assert resp.get_json() == {
        "ok": True, "issue": key, "dispatched": True, "jobId": job.id, "status": "dispatched"}
    assert fake.labels_of(key) == ["AI-Working"]


def test_a_dispatch_slower_than_linear_waits_is_answered_in_time_and_goes_on(
    app, client, fake, runner, add_mapping, monkeypatch
) -> None:
    """Linear counts a delivery not answered within 5 s as failed: the answer comes within
    ``AIIMPL_WEBHOOK_ANSWER_SECONDS`` with what the check had done (the job claimed, its launch
    under way), and the check goes on to its end."""
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = 1
    add_mapping("ENG")
    key = fake.add_issue("ENG", "Add export", labels=["AI-Implement"])["identifier"]
    # a backend slower than Linear waits
    called, release = held(monkeypatch, runner.backend_class, "dispatch")
    answer_due_after(monkeypatch, called)
    try:
        resp = deliver(client, fake, fake.issue_webhook_payload(key))
        took = time.monotonic() - called.at
    finally:
        release.set()
    # the answer's second, and room for a loaded machine to build it: an answer that waited for the
    # dispatch (held 30 s) would come far later
    assert resp.status_code == 200 and took < 1 + 10, took
    [job] = jobs_of(key)
    assert resp.get_json() == {
        "ok": True, "issue": key, "dispatched": True, "jobId": job.id, "status": "unknown", "running": True}
    assert wait_for_checks(30)
    [job] = jobs_of(key)
    assert job.status == "dispatched" and list(runner.runs) == [job.id]
    assert fake.labels_of(key) == ["AI-Working"]


def test_a_linear_read_slower_than_linear_waits_is_answered_without_an_outcome(
    app, client, fake, runner, add_mapping
) -> None:
    app.config["AIIMPL_WEBHOOK_ANSWER_SECONDS"] = 1
    add_mapping("ENG")
    key = fake.add_issue("ENG", "Add export", labels=["AI-Implement"])["identifier"]
    release = threading.Event()
    fake.before("IssueWithComments", lambda: release.wait(30))  # Linear slow to answer the read
    try:
        resp = deliver(client, fake, fake.issue_webhook_payload(key))
    finally:
        release.set()
    assert resp.get_json() == {"ok": True, "issue": key, "dispatched": False, "running": True,
                               "reason": "dispatch check still running when the answer was due; it goes on"
                                         " in the background"}
    assert wait_for_checks(30)
    assert [j.status for j in jobs_of(key)] == ["dispatched"]


def jobs_of(key: str) -> list[Job]:
    fresh()  # (what the webhook's check committed, from a thread of its own)
    return list(db.session.scalars(db.select(Job).where(Job.issue_key == key)).all())


def test_the_answer_names_the_blocker_that_holds_the_issue(app, client, fake, runner, add_mapping) -> None:
    row = add_mapping("ENG")
    row.max_in_progress = 1
    db.session.commit()
    first, second = (fake.add_issue("ENG", title, labels=["AI-Implement"])["identifier"]
                     for title in ("Add export", "Add import"))
    assert deliver(client, fake, fake.issue_webhook_payload(first)).get_json()["dispatched"] is True

    resp = deliver(client, fake, fake.issue_webhook_payload(second))

    assert resp.status_code == 200
    assert resp.get_json() == {
        "ok": True, "issue": second, "dispatched": False, "blocker": "concurrency",
        "reason": "at concurrency cap (1/1). Waiting for a slot.",
    }
    db.session.expire_all()
    assert [j.issue_key for j in db.session.scalars(db.select(Job))] == [first]


def test_an_issue_whose_trigger_label_is_retired_is_not_dispatched(
    app, client, fake, runner, add_mapping
) -> None:
    """A delivery names the issue's labels without their ``retiredAt``: the check reads the issue,
    whose only trigger label is retired, and dispatches nothing."""
    add_mapping("ENG")
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    fake.retire_label(fake.issue(key)["labelIds"][0])

    resp = deliver(client, fake, fake.issue_webhook_payload(key))

    assert resp.status_code == 200
    assert resp.get_json() == {"ok": True, "issue": key, "dispatched": False, "reason": "not triggered"}
    assert db.session.scalars(db.select(Job)).all() == []
    assert fake.labels_of(key) == ["AI-Implement"]


def test_an_issue_of_a_team_without_a_mapping_is_not_dispatched(
    app, client, fake, runner, add_mapping
) -> None:
    add_mapping("ENG")
    fake.add_team("OPS")
    key = fake.add_issue("OPS", labels=["AI-Implement"])["identifier"]
    resp = deliver(client, fake, fake.issue_webhook_payload(key))
    assert resp.status_code == 200
    assert resp.get_json() == {
        "ok": True, "issue": key, "dispatched": False, "blocker": "no-mapping",
        "reason": "No mapping for team OPS. Add one in Projects.",
    }
    assert db.session.scalars(db.select(Job)).all() == []


def test_a_check_that_could_not_read_the_issue_says_so_and_the_poll_catches_up(
    app, client, fake, runner, add_mapping, caplog
) -> None:
    from aiimpl_core.services.dispatch import run_cycle

    add_mapping("ENG")
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    fake.fail("IssueWithComments", "Linear is having a moment", times=1)

    resp = deliver(client, fake, fake.issue_webhook_payload(key))

    # acknowledged (a retry would meet the same outage), with what happened, and no remote text
    assert resp.status_code == 200
    assert resp.get_json() == {"ok": True, "issue": key, "dispatched": False, "reason": webhook.CHECK_FAILED}
    assert "Linear is having a moment" in caplog.text
    assert db.session.scalars(db.select(Job)).all() == []
    # the next poll cycle dispatches it
    report = run_cycle()
    assert [d.issue_key for d in report.dispatched] == [key], report.as_dict()


def test_a_launch_the_backend_refused_is_answered_with_the_failed_job(
    app, client, fake, runner, add_mapping
) -> None:
    from aiimpl_core.testing.fakes import dispatch_refused

    add_mapping("ENG")
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    runner.dispatch_error = dispatch_refused()

    resp = deliver(client, fake, fake.issue_webhook_payload(key))

    db.session.expire_all()
    [job] = db.session.scalars(db.select(Job).where(Job.issue_key == key)).all()
    assert job.status == "failed"
    assert resp.status_code == 200
    assert resp.get_json() == {
        "ok": True, "issue": key, "dispatched": True, "jobId": job.id, "status": "failed"}


def test_a_launch_the_backend_rate_limited_is_answered_with_the_waiting_job(
    app, client, fake, runner, add_mapping
) -> None:
    from aiimpl_core.testing.fakes import fail_with

    add_mapping("ENG")
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    runner.dispatch_error = fail_with(429, "rate limited", retry_after=60)

    resp = deliver(client, fake, fake.issue_webhook_payload(key))

    db.session.expire_all()
    [job] = db.session.scalars(db.select(Job).where(Job.issue_key == key)).all()
    assert (job.status, job.launch_after is not None) == ("unknown", True)
    body = resp.get_json()
    assert body.pop("deferredUntil").startswith(job.launch_after.strftime("%Y-%m-%dT%H:%M:%S"))
    assert body == {"ok": True, "issue": key, "dispatched": True, "jobId": job.id, "status": "unknown"}


def test_an_issue_moved_to_another_team_is_answered_under_its_new_identifier(
    client, fake, monkeypatch, caplog
) -> None:
    # The delivery names ENG-1; by the time the check reads it the issue has moved to OPS (Linear
    # resolves a previous identifier), so the core reports it under its identifier now.
    key = fake.add_issue("ENG", labels=["AI-Implement"])["identifier"]
    asked: list[list[str]] = []

    def run_cycle(keys: list[str]) -> CycleReport:
        asked.append(list(keys))
        report = CycleReport(started_at=utcnow())
        report.dispatched = [Dispatched("OPS-3", 7, "implementation", "github-actions", False)]
        return report

    monkeypatch.setattr(webhook, "run_cycle", run_cycle)
    resp = deliver(client, fake, fake.issue_webhook_payload(key))
    assert asked == [[key]]
    assert resp.status_code == 200
    assert resp.get_json() == {
        "ok": True, "issue": "OPS-3", "dispatched": True, "jobId": 7, "status": "unknown"}
    assert "did not run to its end" not in caplog.text
