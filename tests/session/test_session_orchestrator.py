"""The orchestrator's answers as a session meets them behind proxies and outages: bodies that are
not JSON (an HTML page from a proxy) or not the expected shape, and an orchestrator that cannot be
reached in the middle of a run."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from aiimpl_core.errors import ProviderError
from aiimpl_core.session.api import REPORT_PAUSE, Orchestrator
from aiimpl_core.session.redact import Redactor

from .conftest import World

HTML = "<html><body><h1>Welcome to the corporate proxy</h1>ghs_not_a_token_but_looks_like_one</body></html>"


def html_page(status: int = 200) -> Response:
    return Response(HTML, status=status, mimetype="text/html")


def json_answer(text: str) -> Response:
    return Response(text, mimetype="application/json")


class Proxy:
    """A proxy in front of the orchestrator: it passes requests on, except those of a path a test
    gave a rule for. A rule ``(passes, answer)`` answers what ``answer()`` returns (a WSGI
    response) instead of the orchestrator's own answer, after the orchestrator handled the request
    when ``passes``; an ``answer()`` of ``None`` passes the request on as usual."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.rules: dict[str, tuple[bool, Callable[[], Response | None]]] = {}
        self.answered: list[tuple[str, int]] = []  # the paths the proxy answered itself, and how

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ["PATH_INFO"]
        passes, answer = self.rules.get(path, (True, lambda: None))
        response = answer()
        if response is None:
            return self.app(environ, start_response)
        if passes:  # the orchestrator gets the request; its answer is lost on the way back
            chunks = self.app(environ, lambda *_args, **_kw: None)
            try:
                b"".join(chunks)
            finally:
                getattr(chunks, "close", lambda: None)()
        self.answered.append((path, response.status_code))
        return response(environ, start_response)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: object) -> None:
        """No access lines in the test's output."""


@pytest.fixture
def proxy(app: Any, orchestrator: str) -> Iterator[tuple[Proxy, str]]:
    front = Proxy(app)
    server = make_server("127.0.0.1", 0, front, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield front, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


# -- answers that are not JSON, or not the shape expected ----------------------------------------


def test_a_delivered_result_answered_with_a_proxys_html_page_is_a_delivered_result(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    front, url = proxy
    front.rules["/runner/result"] = (True, html_page)
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    assert "Traceback" not in out
    assert "result reported: delivered (the answer, HTTP 200, text/html, is not a JSON object)" in out
    assert front.answered == [("/runner/result", 200)]


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (html_page(), "with a body that is not JSON (HTTP 200, text/html)"),
        (Response("", status=200), "with an empty body (HTTP 200, text/plain)"),
        (json_answer('["ghs_not_a_token_but_looks_like_one"]'),
         "with JSON that is an array, not an object (HTTP 200, application/json)"),
        (json_answer('{"expiresAt": "2099-01-01T00:00:00Z"}'),
         "without a token (HTTP 200, application/json)"),
    ],
    ids=["html", "empty", "array", "no-token"],
)
def test_a_token_answer_that_is_not_a_token_fails_naming_the_answer(
    world: World, proxy: tuple[Proxy, str], answer: Response, said: str
) -> None:
    front, url = proxy
    front.rules["/api/token"] = (False, lambda: answer)
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 1, out
    job = world.job(job_id)
    assert (job.status, job.error) == (
        "failed", f"Could not get a repository token: orchestrator: POST /api/token answered {said}")
    assert "Traceback" not in out and "unexpectedly" not in out
    assert "ghs_not_a_token_but_looks_like_one" not in out + job.error  # the answer's body is never shown
    assert world.steps(job_id)["token"].status == "failed"


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (html_page(), "answered with a body that is not JSON (HTTP 200, text/html)"),
        (json_answer("[]"),
         "answered with JSON that is an array, not an object (HTTP 200, application/json)"),
        (json_answer('{"plan": null}'), "answered without the issue (HTTP 200, application/json)"),
        (json_answer('{"issue": {"key": "ENG-1", "title": 42, "url": ["x"]}}'),
         "answered an issue whose title, url are not text (HTTP 200, application/json)"),
    ],
    ids=["html", "array", "no-issue", "wrong-types"],
)
def test_a_planning_context_that_is_not_one_fails_naming_the_answer(
    world: World, proxy: tuple[Proxy, str], answer: Response, said: str
) -> None:
    front, url = proxy
    front.rules["/runner/planning-context"] = (False, lambda: answer)
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 1, out
    job = world.job(job_id)
    assert (job.status, job.error) == (
        "failed", f"Could not fetch the planning context: orchestrator: GET /runner/planning-context {said}")
    assert "Traceback" not in out and "unexpectedly" not in out
    assert world.agent_calls() == []


def test_comments_of_the_planning_context_that_are_not_comments_are_left_out(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    front, url = proxy
    context = json_answer(
        '{"issue": {"key": "ENG-1", "title": "Greet the user", "description": null, '
        '"comments": [{"body": 7}, "text", {"author": "ann", "body": "Use British spelling."}]}}')
    front.rules["/runner/planning-context"] = (False, lambda: context)
    world.mapping(AIIMPL_REVIEW="false")
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 0, out
    [call] = world.agent_calls()
    assert "### ann\n\nUse British spelling." in call["prompt"]


@pytest.mark.parametrize("path", ["/runner/progress", "/api/step-report", "/api/status"])
def test_reports_answered_with_a_proxys_page_do_not_disturb_the_run(
    world: World, proxy: tuple[Proxy, str], path: str
) -> None:
    """Progress reports read nothing from their answers: an HTML page or a JSON array is fine."""
    front, url = proxy
    answer = html_page() if path != "/api/status" else json_answer("[1, 2]")
    front.rules[path] = (True, lambda: answer)
    world.mapping(AIIMPL_REVIEW="false")
    job_id = world.dispatch()
    # without a progress token, steps go to /api/step-report with the nonce
    overrides = {"AIIMPL_PROGRESS_TOKEN": ""} if path == "/api/step-report" else {}

    code, out = world.run_session(job_id, AIIMPL_URL=url, **overrides)

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    assert front.answered and {p for p, _ in front.answered} == {path}
    assert "Traceback" not in out and "was not accepted" not in out
    if path == "/api/status":
        assert any(c.startswith("🧹 Session machine cleaned up. Duration: ") for c in world.comments())
    else:
        assert world.steps(job_id)["review"].status == "skipped"


# -- an orchestrator that cannot be reached -------------------------------------------------------


def test_reports_do_not_each_pay_their_retries_once_the_orchestrator_is_unreachable(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    """From the agent's start on, the gateway in front of the orchestrator answers 502 to every
    progress report: the first report finds it so (trying for its patience: a second here), the
    ones after it are held back instead of each trying again; the result (which gets through) is
    still delivered."""
    front, url = proxy

    def down() -> Response | None:
        return html_page(502) if world.agent_log.exists() else None

    for path in ("/runner/progress", "/api/status"):
        front.rules[path] = (False, down)
    world.mapping(AIIMPL_REPORT_RETRY_SECONDS="3")  # a report's patience: one second
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed" and job.pr_number == 1
    # one report's two tries (0.5 s apart; the next would be 1 s later, past its patience); every
    # later report in the same REPORT_PAUSE is not sent at all
    assert len(front.answered) == 2, front.answered
    assert "was not sent: the orchestrator was unreachable" in out
    assert "Traceback" not in out


def test_a_session_rides_out_a_deploy_of_the_orchestrator(world: World, proxy: tuple[Proxy, str]) -> None:
    """Once the agent is done the orchestrator is deployed: for three seconds the gateway in front
    of it answers 503 (``Retry-After: 1``) to every report. Each report gave up after 1.5 s, and the
    ticket missed its comments; they wait it out, and every comment and step lands."""
    front, url = proxy
    deploy: dict[str, float] = {}

    def deploying() -> Response | None:
        if not world.agent_log.exists():
            return None
        started = deploy.setdefault("started", time.monotonic())
        if time.monotonic() - started > 3:
            return None
        return Response("<html>503</html>", status=503, headers={"Retry-After": "1"}, mimetype="text/html")

    for path in ("/runner/progress", "/api/status", "/runner/result"):
        front.rules[path] = (False, deploying)
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 0, out
    assert front.answered and {status for _, status in front.answered} == {503}
    assert "was not accepted" not in out and "was not sent" not in out
    job = world.job(job_id)
    assert job.status == "completed" and job.pr_number == 1
    assert "📝 Claude finished. PR #1 opened: https://github.com/acme/eng/pull/1" in world.first_lines()
    assert {s.step_id: s.status for s in world.steps(job_id).values()}["agent"] == "succeeded"


def _server(answer: Callable[[Request], Response]) -> tuple[str, list[str], Callable[[], None]]:
    seen: list[str] = []

    @Request.application
    def app(request: Request) -> Response:
        seen.append(request.path)
        return answer(request)

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", seen, server.shutdown


STEP = {"id": "agent", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}


class Clock:
    """The time an :class:`Orchestrator` client reads (``clock``) and waits on (``http.sleep``):
    a wait moves it on at once, and what is due by then (``at``) happens first."""

    def __init__(self, client: Orchestrator | None = None) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.due: list[tuple[float, Callable[[], None]]] = []
        if client is not None:
            self.drive(client)

    def __call__(self) -> float:
        return self.now

    def drive(self, client: Orchestrator) -> None:
        client.clock = self
        client.http.sleep = self.sleep

    def at(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` once ``seconds`` from now have passed."""
        self.due.append((self.now + seconds, action))

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        for item in [d for d in self.due if d[0] <= self.now]:
            self.due.remove(item)
            item[1]()


def test_an_unreachable_orchestrator_holds_reports_back_until_it_answers() -> None:
    state = {"down": True, "results_refused": 0}

    def gateway(request: Request) -> Response:
        if request.path == "/runner/result" and state["results_refused"] < 2:
            state["results_refused"] += 1
            return html_page(502)
        return html_page(502) if state["down"] else json_answer('{"status": "recorded"}')

    url, seen, stop = _server(gateway)
    try:
        client = Orchestrator(url, "nonce-1", {"runner:progress": "p", "runner:result": "r"}, Redactor())
        clock = Clock(client)
        assert client.step(STEP) is False
        # found unreachable: its tries over 17.5 s, 0.5, 1, 2, 4, 5 and 5 s apart (one more would
        # start past its 20 s)
        assert len(seen) == 7 and clock.waits == [0.5, 1, 2, 4, 5, 5]
        started = time.monotonic()
        held = [client.status("environment_ready"), client.step(STEP), client.status("pr_opened")]
        assert held == [False] * 3
        assert len(seen) == 7 and time.monotonic() - started < 1  # held back: not sent
        assert client.unreachable_at is not None
        client.unreachable_at -= REPORT_PAUSE  # the pause is over: one try, which fails again
        assert client.status("verification_started") is False
        assert len(seen) == 8
        client.unreachable_at -= REPORT_PAUSE
        state["down"] = False
        assert client.status("verification_passed") is True  # it answers: reports go out again
        assert client.unreachable_at is None
        state["down"] = True
        assert client.step(STEP) is False
        # the result keeps its full retries whatever the reports met
        assert client.unreachable_at is not None
        state["down"] = False
        assert client.result({"outcome": "success"}) == {"status": "recorded"}
        assert seen[-3:] == ["/runner/result"] * 3
    finally:
        stop()


def test_a_report_never_tries_past_the_main_part_of_the_budget() -> None:
    """An orchestrator that never answers: a report made a second before the budget's main part
    is spent gives up with it (not 3 × 10 s later); one made on the kept-back time has a single
    short try, shorter still once the whole budget is spent."""
    released = threading.Event()

    def hang(request: Request) -> Response:
        released.wait(30)
        return json_answer("{}")

    url, seen, stop = _server(hang)
    try:
        now = time.monotonic()
        client = Orchestrator(url, "nonce-1", {}, Redactor(), deadline=now + 1.5, end=now + 60)
        client.http.sleep = lambda _seconds: None
        assert client.status("environment_ready") is False
        assert time.monotonic() - now < 4
        assert len(seen) <= 2

        stopping = threading.Event()
        now = time.monotonic()
        late = Orchestrator(url, "nonce-1", {}, Redactor(), deadline=now - 1, end=now - 0.5, stop=stopping)
        late.http.sleep = lambda _seconds: None
        before = len(seen)
        assert late.status("session_timed_out") is False
        assert len(seen) == before + 1  # one try
        assert time.monotonic() - now < 4  # of two seconds, past the budget

        now = time.monotonic()
        stopped = Orchestrator(url, "nonce-1", {}, Redactor(), deadline=now + 600, end=now + 700,
                               stop=stopping)
        stopped.http.sleep = lambda _seconds: None
        stopping.set()  # the runner stops the session: reports hurry as on the kept-back time
        before = len(seen)
        assert stopped.status("session_failed") is False
        assert len(seen) == before + 1
        assert time.monotonic() - now < 8  # one try of five seconds
    finally:
        released.set()
        stop()


# -- a deploy of the orchestrator: refused connections, a gateway's 503, for tens of seconds ------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deploy:
    """An orchestrator being deployed on a fixed port: nothing listens there (connections are
    refused) until :meth:`back` starts it; what it is sent is in ``seen``."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []
        self.server: Any = None

    def back(self) -> None:
        @Request.application
        def app(request: Request) -> Response:
            self.seen.append(request.path)
            return json_answer('{"status": "recorded"}')

        self.server = make_server("127.0.0.1", self.port, app, threaded=True, request_handler=_Quiet)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def deploy() -> Iterator[Deploy]:
    orchestrator = Deploy()
    yield orchestrator
    orchestrator.close()


def test_the_result_rides_out_a_deploy_that_refuses_connections(deploy: Deploy) -> None:
    """Gunicorn restarting: connections refused for 40 s. The result was given up after 12 s (four
    tries), the job left running until its timeout; it is tried for a minute."""
    client = Orchestrator(deploy.url, "nonce-1", {"runner:result": "r"}, Redactor())
    clock = Clock(client)
    clock.at(40, deploy.back)

    assert client.result({"outcome": "success"}) == {"status": "recorded"}

    assert deploy.seen == ["/runner/result"]
    assert 40 <= clock.now - 1000 <= 60
    assert clock.waits[:5] == [2, 4, 6, 8, 10] and set(clock.waits[5:]) <= {10}


def test_a_progress_report_rides_out_a_short_deploy_and_respects_retry_after(deploy: Deploy) -> None:
    """A gateway answers 503 with ``Retry-After: 8`` while the orchestrator restarts: a report gave
    up at once (a wait over 5 s), or after 1.5 s of 503s without one; it waits as asked, within
    its 20 s."""
    state = {"deploying": True}

    def gateway(request: Request) -> Response:
        if state["deploying"]:
            return Response("<html>503</html>", status=503, headers={"Retry-After": "8"},
                            mimetype="text/html")
        return json_answer("{}")

    url, seen, stop = _server(gateway)
    try:
        client = Orchestrator(url, "nonce-1", {"runner:progress": "p"}, Redactor())
        clock = Clock(client)
        clock.at(12, lambda: state.update(deploying=False))

        assert client.step(STEP) is True
        assert client.unreachable_at is None
        assert clock.waits == [8, 8] and len(seen) == 3  # never sooner than asked

        # a deploy that outlasts a report's patience: it gives up after 20 s, its last try at 16 s
        state["deploying"] = True
        started = clock.now
        assert client.status("pr_opened") is False
        assert clock.now - started == 16 and len(seen) == 6
        assert client.unreachable_at == clock.now  # the next reports are held back meanwhile
    finally:
        stop()


def test_the_orchestrators_own_refusals_are_not_waited_out() -> None:
    """Its own 500 (a bug, a database error) is no deploy: a report keeps its three tries; the
    result its full patience, the last try at its end, then it is given up."""
    url, seen, stop = _server(lambda request: Response('{"error": "internal"}', status=500,
                                                        mimetype="application/json"))
    try:
        client = Orchestrator(url, "nonce-1", {"runner:progress": "p", "runner:result": "r"}, Redactor())
        clock = Clock(client)
        assert client.step(STEP) is False
        assert len(seen) == 3 and clock.waits == [0.5, 1]
        assert client.unreachable_at is None  # it answered

        started = clock.now
        with pytest.raises(ProviderError, match="HTTP 500"):
            client.result({"outcome": "success"})
        assert clock.now - started == 60
        assert seen.count("/runner/result") == 9  # 2, 4, 6, 8, 10, 10, 10 and 10 s apart
    finally:
        stop()


def test_the_patience_is_a_setting_of_the_session(deploy: Deploy) -> None:
    """``AIIMPL_REPORT_RETRY_SECONDS``: the result's patience, and a third of it a report's."""
    from aiimpl_core.session.config import SessionConfig
    from aiimpl_core.session.runner import Session

    env = {
        "AIIMPL_URL": deploy.url, "AIIMPL_JOB_ID": "5", "AIIMPL_PHASE": "implementation",
        "AIIMPL_ISSUE_KEY": "ENG-1", "AIIMPL_REPOSITORY": "acme/api", "AIIMPL_BASE_BRANCH": "main",
        "AIIMPL_BRANCH": "ai/ENG-1", "AIIMPL_NONCE": "n" * 40, "AIIMPL_RESULT_TOKEN": "result-token",
        "AIIMPL_CONTEXT_TOKEN": "context-token",
    }
    default = Session(SessionConfig.from_environ(env), env)
    assert (default.api.result_patience, default.api.report_patience) == (60, 20)
    env["AIIMPL_REPORT_RETRY_SECONDS"] = "90"
    longer = Session(SessionConfig.from_environ(env), env)
    assert (longer.api.result_patience, longer.api.report_patience) == (90, 30)
    clock = Clock(longer.api)
    with pytest.raises(ProviderError):  # nothing listens
        longer.api.result({"outcome": "success"})
    assert clock.now - 1000 == 90
