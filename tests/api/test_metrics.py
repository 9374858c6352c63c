"""``GET /metrics``: the install's state for Prometheus, read from the database at each scrape.

The output is parsed with ``prometheus_client``'s own parser and checked value by value; one
scrape costs the same few statements whatever the number of rows; a database that does not answer
still gets a 200 with ``aiimpl_database_up 0``; the endpoint is off until its token is set.
"""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine

from aiimpl_core import __version__, hookimpl
from aiimpl_core.api import metrics as metrics_api
from aiimpl_core.extensions import db
from aiimpl_core.orm import Blocker, Job, Mapping, Setting, utcnow
from aiimpl_core.testing.fakes import FakeTracker, queue_outbox_item
from aiimpl_core.testing.sql import statements

URL = "/metrics"
TOKEN = "metrics-token-for-tests-5e1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: what a back-off's stored error may quote (never exported)
ERROR_TEXT = "POST https://api.linear.app/graphql?key=lin_api_do-not-export failed with HTTP 503"


@pytest.fixture
def aiimpl_config() -> dict[str, Any]:
    return {"AIIMPL_METRICS_TOKEN": TOKEN}


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The scrape's clock, fixed so that ages and remaining seconds are exact."""
    fixed = utcnow().replace(microsecond=0)
    monkeypatch.setattr(metrics_api, "utcnow", lambda: fixed)
    return fixed


def scrape(client: Any) -> dict[str, list[Any]]:
    """The samples of one scrape by name; a family without samples maps to ``[]``."""
    resp = client.get(URL, headers=AUTH)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    out: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        out.setdefault(family.name, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def by(samples: dict[str, list[Any]], name: str, *labels: str) -> dict[Any, float]:
    """``name``'s values keyed by its label values (a tuple when several labels are named)."""
    out = {}
    for sample in samples[name]:
        key = tuple(sample.labels[label] for label in labels)
        out[key if len(key) != 1 else key[0]] = sample.value
    return out


def value(samples: dict[str, list[Any]], name: str) -> float:
    [sample] = samples[name]
    return sample.value


def add_mappings(*teams: str) -> None:
    for team in teams:
        db.session.add(Mapping(team_key=team, owner="acme", repo=team.lower(), default_branch="main",
                               execution_mode="github-actions", ticketing={"provider": "fake-tracker"}))
    db.session.commit()


def add_jobs(*jobs: tuple[str, str, str]) -> None:
    """Jobs as ``(issue key, phase, status)``; the team is the key's prefix."""
    for issue_key, phase, status in jobs:
        db.session.add(Job(issue_key=issue_key, team_key=issue_key.rsplit("-", 1)[0], phase=phase,
                           status=status, provider="fake-tracker", backend="github-actions"))
    db.session.commit()


def add_blockers(*blockers: tuple[str, str]) -> None:
    for issue_key, reason in blockers:
        db.session.add(Blocker(issue_key=issue_key, team_key=issue_key.rsplit("-", 1)[0], reason=reason,
                               message=f"{issue_key} waits"))
    db.session.commit()


def set_backoff(kind: str, provider_id: str, until: datetime) -> None:
    db.session.add(Setting(key=f"backoff:{kind}:{provider_id}",
                           value={"until": until.isoformat(), "failures": 3, "error": ERROR_TEXT}))
    db.session.commit()


def test_metrics_report_the_install_s_state(client, now):
    add_mappings("ENG", "OPS", "IDLE")
    add_jobs(
        ("ENG-1", "implementation", "running"),
        ("ENG-2", "planning", "dispatched"),
        ("ENG-3", "implementation", "completed"),
        ("ENG-3", "implementation", "completed"),  # a second run of the same issue
        ("ENG-4", "implementation", "failed"),
        ("ENG-5", "gap-analysis", "completed"),
        ("OPS-1", "implementation", "unknown"),
        ("OPS-2", "planning", "timed_out"),
        ("OPS-3", "implementation", "review_failed"),
        ("GONE-1", "implementation", "running"),  # a team whose mapping was deleted
    )
    queue_outbox_item("ENG-1", created_at=now - timedelta(seconds=300))
    queue_outbox_item("ENG-2", op="stage", created_at=now - timedelta(seconds=60))
    queue_outbox_item("ENG-3", state="sending", created_at=now - timedelta(seconds=1800))
    queue_outbox_item("ENG-4", state="done", created_at=now - timedelta(days=10), done_at=now)
    queue_outbox_item("ENG-5", state="dead", created_at=now - timedelta(days=5))
    queue_outbox_item("OPS-1", state="shadow", created_at=now - timedelta(days=20))
    add_blockers(("ENG-6", "concurrency"), ("ENG-7", "concurrency"), ("OPS-4", "blocked-by"),
                 ("NEW-1", "no-mapping"))
    set_backoff("ticketing", "fake-tracker", now + timedelta(seconds=90))
    set_backoff("runner", "fly-machines", now + timedelta(seconds=600))
    set_backoff("runner", "github-actions", now - timedelta(seconds=10))  # over: not exported

    m = scrape(client)

    assert by(m, "aiimpl_info", "version") == {__version__: 1}
    assert value(m, "aiimpl_database_up") == 1
    assert value(m, "aiimpl_plugin_load_failures") == 0
    jobs = by(m, "aiimpl_jobs", "status", "phase")
    assert len(jobs) == 7 * 3  # every status and phase, 0 when no job has them
    assert {k: v for k, v in jobs.items() if v} == {
        ("running", "implementation"): 2,
        ("dispatched", "planning"): 1,
        ("completed", "implementation"): 2,
        ("failed", "implementation"): 1,
        ("completed", "gap-analysis"): 1,
        ("unknown", "implementation"): 1,
        ("timed_out", "planning"): 1,
        ("review_failed", "implementation"): 1,
    }
    assert by(m, "aiimpl_jobs_active", "team") == {"ENG": 2, "OPS": 1, "GONE": 1, "IDLE": 0}
    assert by(m, "aiimpl_outbox_items", "state") == {
        "pending": 2, "sending": 1, "done": 1, "dead": 1, "shadow": 1
    }
    assert value(m, "aiimpl_outbox_oldest_pending_age_seconds") == 1800
    assert by(m, "aiimpl_blocked_issues", "reason") == {
        "no-mapping": 1, "paused": 0, "concurrency": 2, "dedup": 0, "blocked-by": 1,
        "global-cap": 0, "backend-cap": 0, "backend-unavailable": 0,
    }
    assert by(m, "aiimpl_backoff_remaining_seconds", "kind", "id") == {
        ("ticketing", "fake-tracker"): 90, ("runner", "fly-machines"): 600
    }
    # the process's own metrics come along
    assert "python_info" in m and "python_gc_objects_collected_total" in m


def test_a_write_an_operator_retried_is_as_old_as_its_retry(client, now):
    """A write retried days after it was first queued does not raise the backlog age (and its
    alert) as if it had waited all that time: it waits since the retry."""
    queue_outbox_item("ENG-1", created_at=now - timedelta(days=3), requeued_at=now - timedelta(seconds=100))
    queue_outbox_item("ENG-2", created_at=now - timedelta(seconds=50))
    assert value(scrape(client), "aiimpl_outbox_oldest_pending_age_seconds") == 100


def test_an_empty_install_reads_zero(client, now):
    m = scrape(client)
    assert value(m, "aiimpl_database_up") == 1
    assert set(by(m, "aiimpl_jobs", "status", "phase").values()) == {0}
    assert by(m, "aiimpl_jobs_active", "team") == {}
    assert set(by(m, "aiimpl_outbox_items", "state").values()) == {0}
    assert value(m, "aiimpl_outbox_oldest_pending_age_seconds") == 0
    assert m["aiimpl_backoff_remaining_seconds"] == []  # described, without samples
    assert value(m, "aiimpl_poller_last_cycle_timestamp_seconds") == 0  # no poll loop ran yet


def test_the_latest_poll_loop_cycle_is_reported(app, client):
    from aiimpl_core.services.poller import Poller

    before = utcnow()
    Poller(60).run_once()
    m = scrape(client)
    finished = value(m, "aiimpl_poller_last_cycle_timestamp_seconds")
    assert before.timestamp() <= finished <= utcnow().timestamp()
    assert value(m, "aiimpl_poller_last_cycle_errors") == 0
    second = Poller(60)
    second.holder = "another-host:1:1"
    second.run_once()  # any poll loop's cycle counts: the row is overwritten, not added to
    assert value(scrape(client), "aiimpl_poller_last_cycle_timestamp_seconds") >= finished
    assert db.session.scalar(db.select(db.func.count()).select_from(Setting)
                             .where(Setting.key == "poller:last_cycle")) == 1


_FAILING = FakeTracker()


@pytest.mark.parametrize("aiimpl_plugins", [[_FAILING.plugin]])
def test_a_tracker_listing_that_failed_is_an_error_of_the_cycle(app, client):
    """As the metric's help says: the cycle read none of that tracker's issues."""
    from aiimpl_core.errors import ProviderError
    from aiimpl_core.services.poller import Poller

    tracker = _FAILING
    add_mappings("ENG")
    tracker.fail["iter_triggered"] = ProviderError("fake-tracker: HTTP 503", provider="fake-tracker")
    Poller(60).run_once()
    assert value(scrape(client), "aiimpl_poller_last_cycle_errors") == 1
    Poller(60).run_once()  # backing off: still not read, still an error (an alert does not clear)
    assert value(scrape(client), "aiimpl_poller_last_cycle_errors") == 1
    del tracker.fail["iter_triggered"]
    db.session.execute(db.delete(Setting).where(Setting.key.like("backoff:%")))  # tried again at once
    db.session.commit()
    Poller(60).run_once()
    assert value(scrape(client), "aiimpl_poller_last_cycle_errors") == 0


def test_no_error_text_or_secret_is_exported(client, now):
    set_backoff("ticketing", "fake-tracker", now + timedelta(seconds=30))
    queue_outbox_item("ENG-1", state="dead", body="the body of a comment")
    text = client.get(URL, headers=AUTH).get_data(as_text=True)
    assert 'aiimpl_backoff_remaining_seconds{id="fake-tracker",kind="ticketing"} 30.0' in text
    for secret in (ERROR_TEXT, "lin_api_do-not-export", "HTTP 422", "the body of a comment", TOKEN):
        assert secret not in text


class _UnknownHook:
    @hookimpl
    def aiimpl_no_such_hook(self) -> None:
        pass


@pytest.mark.parametrize("aiimpl_plugins", [[_UnknownHook()]])
def test_plugin_load_failures_are_counted(client):
    assert client.application.extensions["aiimpl"].failures()
    assert value(scrape(client), "aiimpl_plugin_load_failures") == 1


# -- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("aiimpl_config", [{}])
def test_metrics_are_off_while_the_token_is_unset(client):
    for headers in ({}, AUTH):
        resp = client.get(URL, headers=headers)
        assert (resp.status_code, resp.get_json()) == (501, {"error": "Metrics not configured"})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-Metrics-Token": TOKEN},
    ],
)
def test_a_missing_or_wrong_token_is_refused(client, headers):
    resp = client.get(URL, headers=headers)
    assert (resp.status_code, resp.get_json()) == (401, {"error": "unauthorized"})
    assert "aiimpl_" not in resp.get_data(as_text=True)


def test_the_token_is_not_taken_from_the_query_and_an_admin_session_is_not_it(client, admin_headers):
    assert client.get(f"{URL}?token={TOKEN}").status_code == 401
    assert client.get(URL, headers=admin_headers).status_code == 401


def test_the_openapi_description_documents_it(client):
    op = client.get("/api/openapi.json").get_json()["paths"]["/metrics"]["get"]
    assert "text/plain" in op["responses"]["200"]["content"]
    assert {"200", "401", "501"} <= set(op["responses"])
    assert "AIIMPL_METRICS_TOKEN" in op["description"]


# -- the database ------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_database_that_does_not_answer_still_gets_a_200(app, client, now, monkeypatch):
    add_jobs(("ENG-1", "implementation", "running"))
    asked: list[bool] = []
    # no second connection for the schema (each one waits out the connect timeout on a host that
    # does not answer, past Prometheus's scrape timeout)
    monkeypatch.setattr(metrics_api, "schema_revision", lambda: asked.append(True))
    engines = db.engines  # the app's engines by bind key
    real = engines[None]
    dead = create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/none",
                         connect_args={"connect_timeout": 2})
    db.session.remove()
    engines[None] = dead  # type: ignore[index]
    try:
        assert client.get("/healthz").status_code == 503  # the counter-check: it is really down
        m = scrape(client)
    finally:
        db.session.remove()
        engines[None] = real  # type: ignore[index]
        dead.dispose()
    assert value(m, "aiimpl_database_up") == 0 and asked == []
    assert by(m, "aiimpl_info", "version") == {__version__: 1}
    assert value(m, "aiimpl_plugin_load_failures") == 0
    assert "python_info" in m
    assert not {"aiimpl_jobs", "aiimpl_jobs_active", "aiimpl_outbox_items"} & set(m)
    # and once it answers again, so does the scrape
    assert value(scrape(client), "aiimpl_database_up") == 1


def test_an_older_schema_is_not_a_database_down(app, client, now):
    """The database answered; its schema is an older version's (an upgrade deployed before its
    `aiimpl db upgrade`): said as such, not by the outage's alert."""
    from flask_migrate import downgrade, upgrade

    assert value(scrape(client), "aiimpl_database_schema_current") == 1
    db.session.remove()
    downgrade(revision="0004")
    try:
        m = scrape(client)
    finally:
        db.session.remove()
        upgrade()
    assert (value(m, "aiimpl_database_up"), value(m, "aiimpl_database_schema_current")) == (1, 0)
    assert not {"aiimpl_jobs", "aiimpl_jobs_active", "aiimpl_outbox_items"} & set(m)


def _seed(start: int, n: int) -> None:
    statuses = ("running", "completed", "failed", "dispatched", "timed_out")
    add_jobs(*((f"T{i % 7}-{i}", ("implementation", "planning")[i % 2], statuses[i % len(statuses)])
               for i in range(start, start + n)))
    add_blockers(*((f"B{i % 5}-{i}", ("concurrency", "dedup")[i % 2]) for i in range(start, start + n)))
    for i in range(start, start + n):
        queue_outbox_item(f"T{i % 7}-{i}", state=("pending", "done")[i % 2])
        set_backoff("runner", f"backend-{i}", utcnow() + timedelta(minutes=5))


def test_one_scrape_costs_the_same_statements_whatever_the_number_of_rows(client, now):
    add_mappings("T0", "T1", "T2")
    _seed(0, 3)
    with statements() as few:
        small = scrape(client)
    _seed(3, 57)
    with statements() as many:
        large = scrape(client)
    assert sum(by(small, "aiimpl_jobs", "status", "phase").values()) == 3
    assert sum(by(large, "aiimpl_jobs", "status", "phase").values()) == 60
    assert len(by(large, "aiimpl_backoff_remaining_seconds", "kind", "id")) == 60
    assert len(many) == len(few), many
    assert 7 <= len(few) <= 8, few  # seven queries (and a BEGIN on SQLite)


def test_label_values_are_escaped_in_the_exposition(client, now):
    """A team key is written into a label as the text format wants it (a quote, a backslash and a
    line break escaped): one line per sample, read back as it was stored, no sample forged."""
    team = 'a"b\\c\nd} aiimpl_forged 1'
    db.session.add(Job(issue_key="X-1", team_key=team, phase="implementation", status="running",
                       provider="fake-tracker", backend="github-actions"))
    db.session.commit()
    resp = client.get(URL, headers=AUTH)
    text = resp.get_data(as_text=True)
    assert 'aiimpl_jobs_active{team="a\\"b\\\\c\\nd} aiimpl_forged 1"} 1.0\n' in text
    assert not any(line.startswith("aiimpl_forged") or line.startswith("d}") for line in text.splitlines())
    assert by(scrape(client), "aiimpl_jobs_active", "team") == {team: 1}
