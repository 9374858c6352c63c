"""Races between separate processes: gunicorn with the production configuration and several
workers on one PostgreSQL database, and runners posting the same callback at the same moment.

The other race tests run threads with their own sessions and connections in one process (but
``tests/engine/test_race.py`` runs pollers as processes, and ``test_webhook_workers.py`` races
Linear's deliveries on these workers against poller processes). Here each request may land in
another worker process, as on a deployment:

- one runner's result posted many times at once ends its job once and is answered ``409
  already_consumed`` for every copy but one;
- one lifecycle event sent many times at once is posted on the issue once;
- operators' cancels released with the result's copies end the job once, with one failure notice;
- a session's first step reports released with its result's copies never move the ended job back;
- an admin session signed out (many times at once) is refused by every worker after;
- GitHub's delivery of a merged PR sent many times at once (with its own id, and with others) is
  acted on once;
- a result posted many times at once as its run fails, is gone, overruns its lifetime, is gone
  past it or was never linked and is not found, while reconciler processes ask the runner about
  the job, ends it once.

The answers name the worker that gave them, and the test checks that several did.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from aiimpl_core.extensions import db
from aiimpl_core.orm import EndedAdminSession, Job, JobTransition, Mapping, OutboxItem
from aiimpl_core.testing.orchestrator import each_released_together, released_together
from aiimpl_core.testing.pytest_plugin import TEST_SECRET_KEY

from .helpers import connected, gunicorn_serving, start_app_module_script, wait_until

pytest.importorskip("gunicorn")

WORKERS = 3
COPIES = 12  # requests sent at once per round: more than the workers, so they share them out
ROUNDS = 4

GITHUB_WEBHOOK_SECRET = "race-github-webhook-secret"
#: what the served tracker writes for an issue marked done
DONE = "(marked done)"

#: the served app: the real one, with a tracker that records each comment, and each issue marked
#: done, as a line of a file (the workers are separate processes: a file opened for appending is
#: what they can share), and a runner whose runs the test ends through a file; run as a script, a
#: reconciler on "another host"
APP_MODULE = '''
import os

from aiimpl_core import create_app, hookimpl
from aiimpl_core.providers import RunnerBackend, TicketingProvider
from aiimpl_core.types import Comment, LogLabel, RunPhase, RunState, TrackerIssue, TriggeredPage


class FileTracker(TicketingProvider):
    id = "file-tracker"
    display_name = "Comments to a file"

    def iter_triggered(self, teams):
        yield TriggeredPage((), complete=True)

    def get_issue(self, key):
        return TrackerIssue(key=key, team_key=key.rsplit("-", 1)[0], title=key, provider=self.id)

    def post_comment(self, key, body):
        return Comment(body=body, id=str(len(_append(key, body))))

    def set_stage(self, key, stage):
        return None

    def mark_done(self, key):
        _append(key, "(marked done)")


def _append(key, body):
    line = (key + "\\t" + body.replace("\\n", "\\\\n") + "\\n").encode()
    fd = os.open(os.environ["RACE_COMMENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)  # one write of a short line: appended whole
    finally:
        os.close(fd)
    return line


class FileRunner(RunnerBackend):
    """Runs that the test ends by writing a line ``<job id> <how>`` to a file: ``failed`` (the
    session's process exited with an error) or ``gone`` (no longer found); else ``running``."""

    id = "file-runner"
    display_name = "Runs ended in a file"

    def dispatch(self, request):
        raise NotImplementedError("the drill creates its jobs running")

    def poll_runs(self, runs):
        try:
            with open(os.environ["RACE_ENDED_RUNS"]) as fh:
                ended = dict(line.split() for line in fh if line.strip())
        except FileNotFoundError:
            ended = {}
        return [self._state(run, ended.get(str(run.job_id))) for run in runs]

    @staticmethod
    def _state(run, how):
        if how == "failed":
            return RunState(run.job_id, RunPhase.FAILED, run.run_id, log_excerpt="exit status 1",
                            log_label=LogLabel.SESSION_FAILED, exit_code=1)
        if how == "gone":
            return RunState(run.job_id, RunPhase.NOT_FOUND)
        return RunState(run.job_id, RunPhase.RUNNING, run.run_id)


class Plugin:
    @hookimpl
    def aiimpl_register_ticketing_providers(self, register):
        register(FileTracker)

    @hookimpl
    def aiimpl_register_runner_backends(self, register):
        register(FileRunner)


app = create_app(plugins=[Plugin()])


@app.after_request
def _worker(resp):
    resp.headers["X-Race-Worker"] = str(os.getpid())
    return resp


if __name__ == "__main__":  # another host's reconciler: passes back to back, as poll cycles run them
    from aiimpl_core.services import outbox
    from aiimpl_core.services.reconcile import reconcile

    with app.app_context():
        print("ready", flush=True)
        while True:
            reconcile()
            outbox.deliver()
'''


@pytest.fixture
def environ(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The served app's settings (its workers', and any other process's of the drill)."""
    return {
        "AIIMPL_DATABASE_URL": database_url, "AIIMPL_SECRET_KEY": TEST_SECRET_KEY,
        "AIIMPL_ADMIN_ACCESS_CODE": "race", "AIIMPL_WORKERS": str(WORKERS), "AIIMPL_THREADS": "4",
        "RACE_COMMENTS": str(tmp_path / "comments.txt"), "RACE_ENDED_RUNS": str(tmp_path / "ended.txt"),
        "AIIMPL_GITHUB_WEBHOOK_SECRET": GITHUB_WEBHOOK_SECRET,
    }


@pytest.fixture
def served(environ: dict[str, str], tmp_path: Path) -> Any:
    with gunicorn_serving(tmp_path, APP_MODULE, environ) as base:
        yield base, Path(environ["RACE_COMMENTS"])


def _mapped(team: str, owner: str, repo: str) -> Mapping:
    """A project of the file tracker, run on the file runner."""
    mapping = Mapping(team_key=team, owner=owner, repo=repo, default_branch="main",
                      execution_mode="file-runner", ticketing={"provider": "file-tracker"})
    db.session.add(mapping)
    db.session.commit()
    return mapping


def _job(mapping: Mapping, key: str, status: str = "running") -> Job:
    """A job of ``key`` created and moved to ``status`` (not committed)."""
    from aiimpl_core.services import launch
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.types import JobStatus, Phase

    job = launch.create_job(mapping, key, phase=Phase.IMPLEMENTATION, provider="file-tracker",
                            choice=launch.BackendChoice("file-runner", "default", False))
    transition(job, JobStatus(status))
    return job


@pytest.fixture
def jobs(app: Any) -> Any:
    """Running jobs of team ENG on the file tracker and runner, each linked to a run, with its
    nonce and result token."""
    from aiimpl_core.services import launch

    mapping = _mapped("ENG", "acme", "eng")
    made = []
    for n in range(ROUNDS):
        job = _job(mapping, f"ENG-{n + 1}")
        nonce, tokens = launch.issue_credentials(job)
        job.run_id = f"run-{job.id}"
        db.session.commit()
        made.append({"id": job.id, "key": job.issue_key, "nonce": nonce, "result": tokens["runner:result"]})
    return made


def _at_once(base: str, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None
             ) -> list[requests.Response]:
    """``COPIES`` identical requests released together, each on a connection of its own."""
    return released_together(
        lambda: connected(base),
        lambda session: session.request(method, base + path, json=body, headers=headers, timeout=60), COPIES,
    )


def _signed_in(base: str) -> dict[str, str]:
    """The headers of a new admin session."""
    signed_in = requests.post(base + "/api/auth", json={"code": "race"}, timeout=30)
    assert signed_in.status_code == 200, signed_in.text
    return {"Authorization": f"Bearer {signed_in.json()['token']}"}


def _post_result(session: requests.Session, base: str, token: str, body: dict[str, Any]) -> requests.Response:
    """``POST /runner/result`` with the job's result token."""
    return session.post(base + "/runner/result", json=body, headers={"Authorization": f"Bearer {token}"},
                        timeout=60)


def _accepted_once(results: list[requests.Response]) -> dict[str, Any]:
    """The body of the one copy of a result that was accepted; every other copy was answered
    ``409 already_consumed``."""
    statuses = Counter(a.status_code for a in results)
    assert statuses == {200: 1, 409: len(results) - 1}, [a.text for a in results]
    assert all(a.json() == {"error": "already_consumed"} for a in results if a.status_code == 409)
    [accepted] = [a.json() for a in results if a.status_code == 200]
    return accepted


def _comment_lines(path: Path) -> Counter[tuple[str, str]]:
    if not path.exists():
        return Counter()
    return Counter(tuple(line.split("\t", 1)) for line in path.read_text().splitlines())  # type: ignore[misc]


def rounds(workers: set[str]) -> Iterator[int]:
    """The round numbers of a case: :data:`ROUNDS` of them, and more, up to three times as many,
    while every answer so far came from one worker (``workers``, which the case fills in): on a
    loaded machine one worker may accept a whole round's connections before the others wake."""
    n = 0
    while n < ROUNDS or (len(workers) < 2 and n < 3 * ROUNDS):
        yield n
        n += 1


def test_one_result_posted_at_once_to_several_workers_ends_its_job_once(served, jobs) -> None:
    base, comments = served
    workers: set[str] = set()
    for job in jobs:
        note = {"body": f"note of {job['key']}"}
        body = {"outcome": "failure", "phase": "implementation", "comments": [note],
                "error": "git clone failed (exit 128): denied"}
        answers = _at_once(base, "POST", "/runner/result", {"Authorization": f"Bearer {job['result']}"}, body)
        workers |= {a.headers["X-Race-Worker"] for a in answers}
        assert len(answers) == COPIES
        accepted = _accepted_once(answers)
        assert (accepted["status"], accepted["ended"]) == ("failed", True)
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"
    db.session.expire_all()
    assert {j.status for j in db.session.scalars(db.select(Job))} == {"failed"}
    # each ending's comments were queued once and posted once (the runner's note, the failure notice)
    for job in jobs:
        queued = Counter(i.dedupe_key for i in db.session.scalars(
            db.select(OutboxItem).where(OutboxItem.issue_key == job["key"])))
        assert queued and set(queued.values()) == {1}, queued
    posted = _comment_lines(comments)
    assert posted and set(posted.values()) == {1}, posted


def test_one_event_posted_at_once_to_several_workers_is_commented_once(served, jobs) -> None:
    base, comments = served
    workers: set[str] = set()
    for job in jobs:
        for event in ("session_created", "environment_ready"):
            answers = _at_once(base, "POST", "/api/status", {}, {"nonce": job["nonce"], "event": event})
            workers |= {a.headers["X-Race-Worker"] for a in answers}
            assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
            # one of them posted it; every other copy is answered as the retry it is
            assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * (COPIES - 1)
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"
    posted = _comment_lines(comments)
    assert len(posted) == 2 * len(jobs) and set(posted.values()) == {1}, posted
    db.session.expire_all()
    assert {j.status for j in db.session.scalars(db.select(Job))} == {"running"}


def test_cancels_and_results_at_once_on_several_workers_end_each_job_once(served, jobs) -> None:
    """Operators cancel a running job (several clicks, several workers) at the moment its runner
    posts its result (several copies): one of them ends the job, every other cancel is told the
    job had ended, every other copy of the result that its token was used, and the issue gets one
    failure notice, whoever won."""
    base, comments = served
    admin = _signed_in(base)
    result = {"outcome": "failure", "phase": "implementation", "comments": [], "error": "the agent gave up"}
    workers: set[str] = set()
    for job in jobs:

        def cancel(session: requests.Session, job_id: int = job["id"]) -> requests.Response:
            return session.post(f"{base}/api/jobs/{job_id}/cancel", headers=admin, timeout=60)

        def report(session: requests.Session, token: str = job["result"]) -> requests.Response:
            return _post_result(session, base, token, result)

        answers = each_released_together(lambda: connected(base), [cancel, report] * (COPIES // 2))
        workers |= {a.headers["X-Race-Worker"] for a in answers}
        cancels, results = answers[0::2], answers[1::2]
        recorded = _accepted_once(results)
        cancelled = [a.json() for a in cancels if a.status_code == 200]
        refused = [a.json() for a in cancels if a.status_code != 200]
        assert all(body == {"error": "job already ended"} for body in refused), refused
        # exactly one ending: a cancel's, or the result's (then every cancel came too late)
        assert len(cancelled) + recorded["ended"] == 1, (recorded, cancelled)
        assert {recorded["status"], *(body["status"] for body in cancelled)} == {"failed"}
        db.session.expire_all()
        ended = db.session.get(Job, job["id"])
        assert ended.error == ("cancelled by an operator" if cancelled else "the agent gave up")
        moves = list(db.session.scalars(
            db.select(JobTransition.to_status).where(JobTransition.job_id == job["id"])))
        assert moves.count("failed") == 1, moves
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"
    # one failure notice queued per job, and posted once (a delivery a worker could not make waits
    # for the poller, which does not run here)
    notices = db.session.scalars(
        db.select(OutboxItem).where(OutboxItem.op == "comment", OutboxItem.kind == "failure"))
    queued = Counter((item.issue_key, item.state) for item in notices)
    assert {key for key, _ in queued} == {job["key"] for job in jobs} and set(queued.values()) == {1}, queued
    posted = Counter(key for key, body in _comment_lines(comments).elements()
                     if body.startswith("⚠️ Implementation failed:"))
    assert posted == Counter(key for key, state in queued if state == "done"), (posted, queued)


def test_progress_and_results_at_once_on_several_workers_never_move_an_ended_job_back(app, served) -> None:
    """A session's first step report (six copies: a runner retrying) and its result (six copies)
    reach several workers at the same moment, while the job is still ``dispatched``. The result
    ends the job ``completed`` once (one ``200``, five ``409 already_consumed``); every report is
    answered ``200`` with the status it left the job in (``running``, or ``completed`` when the
    result came first) and the step is recorded once; no report moves the ended job back."""
    from aiimpl_core.orm import JobStep
    from aiimpl_core.services import launch

    base, _ = served
    mapping = _mapped("OPS", "acme", "ops")
    result = {"outcome": "success", "phase": "implementation", "comments": [],
              "prUrl": "https://github.com/acme/ops/pull/9", "prNumber": 9}
    step = {"id": "agent", "type": "agent", "status": "running", "started_at": "2026-12-04T06:00:00Z"}
    rng = random.Random(int(os.environ.get("AIIMPL_DRILL_SEED", "0")) or None)
    workers: set[str] = set()
    for n in rounds(workers):
        job = _job(mapping, f"OPS-{n + 1}", "dispatched")
        _, tokens = launch.issue_credentials(job)
        db.session.commit()
        job_id = job.id

        def report(session: requests.Session, token: str = tokens["runner:progress"]) -> requests.Response:
            return session.post(base + "/runner/progress", json={"step": step},
                                headers={"Authorization": f"Bearer {token}"}, timeout=60)

        def post(session: requests.Session, token: str = tokens["runner:result"]) -> requests.Response:
            time.sleep(rng.uniform(0, 0.02))  # else the result, the cheaper request, mostly comes first
            return _post_result(session, base, token, result)

        answers = each_released_together(lambda: connected(base), [report, post] * (COPIES // 2))
        workers |= {a.headers["X-Race-Worker"] for a in answers}
        reports, results = answers[0::2], answers[1::2]
        recorded = _accepted_once(results)
        assert (recorded["status"], recorded["ended"]) == ("completed", True), recorded
        assert {a.status_code for a in reports} == {200}, [a.text for a in reports]
        assert {a.json()["status"] for a in reports} <= {"running", "completed"}, [a.text for a in reports]
        db.session.expire_all()
        moves = list(db.session.scalars(db.select(JobTransition.to_status).where(
            JobTransition.job_id == job_id).order_by(JobTransition.id)))
        # the first report moved it to running before the result ended it, or the result came first
        assert moves in (["unknown", "dispatched", "running", "completed"],
                         ["unknown", "dispatched", "completed"]), moves
        if "running" not in moves:
            assert {a.json()["status"] for a in reports} == {"completed"}, [a.text for a in reports]
        steps = db.session.scalars(db.select(JobStep).where(JobStep.job_id == job_id)).all()
        assert [(s.step_id, s.status) for s in steps] == [("agent", "running")]
        assert db.session.get(Job, job_id).status == "completed"
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"


def test_a_sign_out_sent_at_once_to_several_workers_ends_the_session_on_every_one(app, served) -> None:
    """An admin session ended (``DELETE /api/auth``, sent many times at once) is ended on every
    worker process: each copy ended it or came after one that had, and afterwards no worker lets
    the token in. A session kept in one process's memory would still open the others."""
    base, _ = served
    workers: set[str] = set()
    signed_out = 0
    for _ in rounds(workers):
        signed_out += 1
        admin = _signed_in(base)
        opened = _at_once(base, "GET", "/api/jobs", admin)
        assert {a.status_code for a in opened} == {200}, [a.text for a in opened]
        ended = _at_once(base, "DELETE", "/api/auth", admin)
        # each copy ended the session or came after one that had: never a conflict answered 500
        assert 200 in {a.status_code for a in ended} <= {200, 401}, [a.text for a in ended]
        refused = _at_once(base, "GET", "/api/jobs", admin)
        assert {a.status_code for a in refused} == {401}, [a.text for a in refused]
        workers |= {a.headers["X-Race-Worker"] for a in opened + refused}
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"
    db.session.expire_all()
    assert len(db.session.scalars(db.select(EndedAdminSession)).all()) == signed_out


def test_one_merge_delivered_at_once_to_several_workers_is_acted_on_once(app, served) -> None:
    """GitHub's merged ``pull_request`` delivery for a job's PR, twelve copies at once: six with
    the delivery's id (GitHub's redeliveries), six with ids of their own (another hook, a relay).
    Every copy is answered 200, one of the first six acts and the other five are told they are
    duplicates, and the issue gets one "PR merged" comment and is marked done once. A round per
    job, each job with a PR of its own."""
    from aiimpl_core.auth.signatures import github_signature
    from aiimpl_core.services.jobs import transition
    from aiimpl_core.testing.pytest_plugin import specs_dir
    from aiimpl_core.types import JobStatus

    base, comments = served
    path = Path(specs_dir(), "github", "webhooks", "derived", "pull_request.closed.merged.payload.json")
    payload = json.loads(path.read_text())
    mapping = _mapped("HW", "Codertocat", "Hello-World")
    expected: Counter[tuple[str, str]] = Counter()
    workers: set[str] = set()
    for n in rounds(workers):
        key, number = f"HW-{n + 1}", payload["number"] + n
        pr = {**payload["pull_request"], "number": number,
              "html_url": f"https://github.com/Codertocat/Hello-World/pull/{number}"}
        body = json.dumps({**payload, "number": number, "pull_request": pr}).encode()
        job = _job(mapping, key)
        job.pr_number, job.pr_url = number, pr["html_url"]
        transition(job, JobStatus.COMPLETED)
        db.session.commit()
        job_id = job.id

        def deliver(session: requests.Session, delivery: str, body: bytes = body) -> requests.Response:
            headers = {"Content-Type": "application/json", "X-GitHub-Event": "pull_request",
                       "X-GitHub-Delivery": delivery,
                       "X-Hub-Signature-256": github_signature(GITHUB_WEBHOOK_SECRET, body)}
            return session.post(base + "/api/github/webhook", data=body, headers=headers, timeout=60)

        ids = [str(uuid.uuid4())] * (COPIES // 2) + [str(uuid.uuid4()) for _ in range(COPIES // 2)]
        answers = each_released_together(
            lambda: connected(base), [lambda session, one=one: deliver(session, one) for one in ids])
        workers |= {a.headers["X-Race-Worker"] for a in answers}
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
        redelivered = [a.json() for a in answers[: COPIES // 2]]  # GitHub's id: one acts
        assert Counter(a["duplicate"] for a in redelivered) == {False: 1, True: COPIES // 2 - 1}, redelivered
        assert [a["jobId"] for a in redelivered if not a["duplicate"]] == [job_id], redelivered
        db.session.expire_all()
        assert db.session.get(Job, job_id).merge_sha == pr["merge_commit_sha"]
        merged = f"🎉 PR #{number} merged ({pr['merge_commit_sha'][:7]}). Closing this issue out."
        expected.update({(key, merged): 1, (key, DONE): 1})
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"
    # a tracker write not sent within the answer's time goes on after it (a loaded machine)
    wait_until(lambda: sum(_comment_lines(comments).values()) >= sum(expected.values()), "the writes sent")
    assert _comment_lines(comments) == expected


#: how a reconciler ends a job if it comes first (queueing its comments): the status, the run's
#: ending written to the runner's file ("" for none), how many minutes ago the job is made to
#: have been created, dispatched and started at that moment, and whether its run was linked
RECONCILER_ENDINGS = {
    "run_failed": ("failed", "failed", 0, True),  # the session's process exited with an error
    "gone": ("failed", "gone", 20, True),  # no longer found (past the run-not-found window): removed
    "overran": ("timed_out", "", 75, True),  # still running 10 minutes past its hour
    "gone_past_lifetime": ("timed_out", "gone", 75, True),  # no longer found, its hour over
    "never_linked": ("timed_out", "gone", 20, False),  # run_not_found: no run was ever linked
}


@pytest.mark.parametrize("ending", list(RECONCILER_ENDINGS))
def test_results_at_once_on_several_workers_and_reconcilers_end_each_job_once(
    app, environ, served, jobs, tmp_path, ending
) -> None:
    """A session posts its result (twelve copies, to several workers) as its run ends badly (its
    process exits with an error, it is no longer found, it overruns its lifetime, or it is gone
    past it), while two reconcilers on "other hosts" ask the runner about the job, pass after
    pass: the result ends the job ``completed``, or a reconciler ends it first and the result is
    recorded late; the job ends once, with the winner's comments only, each posted once. The same
    when no run was ever linked to the job and the runner does not find it (``run_not_found``)."""
    from sqlalchemy import text

    base, comments = served
    engine = db.engine
    lost, how, minutes, linked = RECONCILER_ENDINGS[ending]
    if not linked:
        db.session.execute(db.update(Job).values(run_id=None))
        db.session.commit()
    rng = random.Random(int(os.environ.get("AIIMPL_DRILL_SEED", "0")) or None)
    reconcilers = [start_app_module_script(tmp_path, environ, tmp_path / "reconcilers.log") for _ in range(2)]
    result = {"outcome": "success", "phase": "implementation", "comments": [],
              "prUrl": "https://github.com/acme/eng/pull/7", "prNumber": 7}
    endings: dict[int, str] = {}
    workers: set[str] = set()
    try:
        for job in jobs:

            def end_badly(_session: requests.Session, job: dict[str, Any] = job) -> None:
                time.sleep(rng.uniform(0, 0.01))
                if minutes:
                    with engine.begin() as connection:
                        connection.execute(text(
                            "UPDATE jobs SET running_at = running_at - :age,"
                            " dispatched_at = dispatched_at - :age, created_at = created_at - :age"
                            " WHERE id = :id"
                        ), {"age": timedelta(minutes=minutes), "id": job["id"]})
                if how:
                    with open(environ["RACE_ENDED_RUNS"], "a") as ended:
                        ended.write(f"{job['id']} {how}\n")

            def post(session: requests.Session, token: str = job["result"]) -> requests.Response:
                return _post_result(session, base, token, result)

            # the run ends badly as its result is posted
            answers = each_released_together(lambda: connected(base), [end_badly, *[post] * COPIES])[1:]
            workers |= {a.headers["X-Race-Worker"] for a in answers}
            assert len(answers) == COPIES
            recorded = _accepted_once(answers)
            endings[job["id"]] = "completed" if recorded["ended"] else recorded["status"]
            assert recorded["status"] == endings[job["id"]] in ("completed", lost), recorded
        wait_until(lambda: _delivered(jobs), "every job's comments posted")
    finally:
        for proc in reconcilers:
            proc.kill()
            proc.wait(30)
    assert len(workers) > 1, "every request went to one worker: nothing raced between processes"
    db.session.expire_all()
    posted = _comment_lines(comments)
    for job in jobs:
        status = endings[job["id"]]
        moves = list(db.session.scalars(db.select(JobTransition.to_status).where(
            JobTransition.job_id == job["id"]).order_by(JobTransition.id)))
        assert moves == ["unknown", "running", status], moves
        kinds = sorted(item.kind for item in db.session.scalars(
            db.select(OutboxItem).where(OutboxItem.issue_key == job["key"], OutboxItem.op == "comment")))
        # a reconciler's ending has a failure notice, and the run's log when a run was linked
        lost_comments = ["failure", "log"] if linked else ["failure"]
        assert kinds == (["pr"] if status == "completed" else lost_comments), (status, kinds)
        lines = [body for key, body in posted.elements() if key == job["key"]]
        assert len(lines) == len(kinds) == len(set(lines)), lines


def _delivered(jobs: list[dict[str, Any]]) -> bool:
    """Every job ended, and its comments posted."""
    db.session.expire_all()
    keys = [job["key"] for job in jobs]
    ended = db.session.scalars(db.select(Job.status).where(Job.issue_key.in_(keys))).all()
    waiting = db.session.scalars(db.select(OutboxItem.id).where(
        OutboxItem.issue_key.in_(keys), OutboxItem.state != "done")).all()
    db.session.rollback()
    return "running" not in ended and not waiting

