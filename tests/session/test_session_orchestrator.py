"""The orchestrator's answers as a session meets them behind proxies and outages: bodies that are
not JSON (an HTML page from a proxy) or not the expected shape, and an orchestrator that cannot be
reached in the middle of a run."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from aiimpl_core.errors import ProviderError
from aiimpl_core.session.api import REPORT_PAUSE, Orchestrator
from aiimpl_core.session.redact import Redactor
from aiimpl_core.testing.pytest_plugin import database_url  # noqa: F401 - on both databases (see conftest)
from aiimpl_core.testing.serving import QuietRequestHandler, ServerThread, serve_wsgi

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


@pytest.fixture
def proxy(app: Any, orchestrator: str) -> Iterator[tuple[Proxy, str]]:
    front = Proxy(app)
    with serve_wsgi(front, request_handler=QuietRequestHandler) as live:
        yield front, live.url


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


def test_the_failure_reports_reach_an_orchestrator_back_as_the_token_request_gives_up(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    """The orchestrator's gateway answers 502 to the repository token request for the whole of its
    patience (a second here); then the orchestrator answers again. The run fails, and its failed
    step and ``session_failed`` were held back with the progress reports (the orchestrator had
    just been found unreachable): the job failed while its token step stayed running."""
    front, url = proxy
    front.rules["/api/token"] = (False, lambda: html_page(502))
    world.mapping(AIIMPL_REPORT_RETRY_SECONDS="1")
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 1, out
    job = world.job(job_id)
    assert job.status == "failed" and job.error.startswith("Could not get a repository token: orchestrator: "
                                                           "POST /api/token failed with HTTP 502")
    step = world.steps(job_id)["token"]
    assert step.status == "failed" and step.detail["error"] == job.error
    assert {path for path, _ in front.answered} == {"/api/token"}
    assert f"⚠️ Session failed: {job.error}. Machine will be cleaned up." in world.first_lines()
    assert any(line.startswith("🧹 Session machine cleaned up. Duration: ") for line in world.first_lines())
    assert "was not sent" not in out


def test_a_failed_step_the_orchestrator_missed_is_reported_once_the_result_is_delivered(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    """The outage outlasts the token request's patience: the failed step's one try meets it too,
    the reports after it are held back, and the orchestrator is back for the result's second try.
    The step is reported again after the result (the orchestrator records a late step)."""
    front, url = proxy
    state = {"down": False, "results": 0}

    def token() -> Response:
        state["down"] = True
        return html_page(502)

    def down() -> Response | None:
        return html_page(502) if state["down"] else None

    def result() -> Response | None:
        state["results"] += 1
        state["down"] = state["results"] < 2
        return down()

    front.rules["/api/token"] = (False, token)
    front.rules["/runner/progress"] = (False, down)
    front.rules["/api/status"] = (False, down)
    front.rules["/runner/result"] = (False, result)
    world.mapping(AIIMPL_REPORT_RETRY_SECONDS="1")
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 1, out
    job = world.job(job_id)
    assert job.status == "failed" and job.error.startswith("Could not get a repository token: ")
    step = world.steps(job_id)["token"]
    assert step.status == "failed" and step.detail["error"] == job.error
    # the failed step's one short try; session_failed and session_cleaned_up held back
    assert [a for a in front.answered if a[0] != "/api/token"] == [("/runner/progress", 502),
                                                                  ("/runner/result", 502)]
    assert "status event session_failed was not sent: the orchestrator was unreachable" in out
    assert "Traceback" not in out


def _server(answer: Callable[[Request], Response]) -> tuple[str, list[str], Callable[[], None]]:
    seen: list[str] = []

    @Request.application
    def app(request: Request) -> Response:
        seen.append(request.path)
        return answer(request)

    live = serve_wsgi(app, request_handler=QuietRequestHandler).start()
    return live.url, seen, live.stop


STEP = {"id": "agent", "type": "agent", "status": "running", "started_at": "2026-01-01T00:00:00Z"}


class Clock:
    """The time an :class:`Orchestrator` client reads (``clock``) and waits on (``http.sleep``, and
    ``wait``, which a stop of the session ends): a wait moves it on at once, and what is due by then
    (``at``) happens at its time first; a stop it sets ends a ``wait`` there."""

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
        client.wait = lambda seconds: self.sleep(seconds, client.stop)

    def at(self, seconds: float, action: Callable[[], None]) -> None:
        """Run ``action`` once ``seconds`` from now have passed."""
        self.due.append((self.now + seconds, action))

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> None:
        self.waits.append(seconds)
        end = self.now + seconds
        while due := sorted((d for d in self.due if d[0] <= end), key=lambda d: d[0]):
            self.due.remove(due[0])
            self.now = max(self.now, due[0][0])
            due[0][1]()
            if stop is not None and stop.is_set():
                return  # the wait ends with the stop
        self.now = end


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


def test_a_report_saying_the_run_failed_gets_one_short_try_while_reports_are_held_back() -> None:
    """A call the run needs gave up (the orchestrator unreachable through its patience): the step
    that failed and ``session_failed`` come next, in the pause. The first of them is tried once
    (five seconds at most); met by the outage too, the pause holds the other back."""
    state = {"down": True}

    def gateway(request: Request) -> Response:
        return html_page(502) if state["down"] else json_answer('{"ok": true}')

    url, seen, stop = _server(gateway)
    try:
        client = Orchestrator(url, "nonce-1", {"runner:progress": "p"}, Redactor(), report_timeout=10.0)
        clock = Clock(client)
        timeouts: list[float] = []
        post = client.http.post

        def timed(path: str, **kwargs: Any) -> Any:
            timeouts.append(kwargs["timeout"])
            return post(path, **kwargs)

        client.http.post = timed  # type: ignore[method-assign]
        client.unreachable_at = clock.now  # as a call the run needs leaves it when it gives up
        failed = {**STEP, "status": "failed", "finished_at": "2026-01-01T00:01:00Z"}

        assert client.step(failed, final=True) is False
        assert seen == ["/runner/progress"] and timeouts == [5.0] and clock.waits == []
        assert client.status("session_failed", final=True, reason="x") is False
        assert client.status("session_cleaned_up") is False
        assert len(seen) == 1  # held back

        clock.now += 1
        client.unreachable_at = clock.now  # found unreachable again, by another report
        state["down"] = False
        assert client.status("session_failed", final=True, reason="x") is True
        assert seen[-1] == "/api/status" and timeouts[-1] == 5.0
        assert client.unreachable_at is None
        assert client.status("session_cleaned_up") is True  # it answered: the pause is over
        assert timeouts[-1] == 10.0
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


#: what the orchestrator answers the calls the run needs
ANSWERS = {
    "/api/token": '{"token": "ghs_after_the_deploy", "expiresAt": "2099-01-01T00:00:00Z"}',
    "/runner/planning-context": '{"issue": {"key": "ENG-1", "title": "Greet the user"}}',
}


class Deploy:
    """An orchestrator being deployed on a fixed port: nothing listens there (connections are
    refused) until :meth:`back` starts it; what it is sent is in ``seen``."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: list[str] = []
        self.live: ServerThread | None = None

    def back(self) -> None:
        @Request.application
        def app(request: Request) -> Response:
            self.seen.append(request.path)
            return json_answer(ANSWERS.get(request.path, '{"status": "recorded"}'))

        self.live = serve_wsgi(app, port=self.port, request_handler=QuietRequestHandler).start()

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


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


def test_a_rate_limit_holds_the_next_reports_back_as_long_as_it_asks() -> None:
    """A proxy's 429 with Retry-After: each report tried three times and waited it out, report after
    report (some 20 s each), the session finishing minutes late. The next reports are held back
    for as long as it asked; the one saying the run failed is still tried."""
    state = {"limited": True}

    def proxy(request: Request) -> Response:
        if state["limited"]:
            return Response('{"error": "rate limited"}', status=429, headers={"Retry-After": "25"},
                            mimetype="application/json")
        return json_answer("{}")

    url, seen, stop = _server(proxy)
    try:
        client = Orchestrator(url, "nonce-1", {"runner:progress": "p"}, Redactor())
        clock = Clock(client)
        assert client.step(STEP) is False
        assert len(seen) == 1 and clock.waits == []  # (25 s is past a report's patience)
        assert client.status("agent_started") is False and client.step(STEP) is False
        assert len(seen) == 1  # held back, not sent to wait again
        assert client.status("session_failed", final=True, reason="x") is False
        assert len(seen) == 2  # the last word is still tried
        clock.now += 25
        state["limited"] = False
        assert client.step(STEP) is True and len(seen) == 3
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
    assert default.api.needed_patience == 60
    env["AIIMPL_REPORT_RETRY_SECONDS"] = "90"
    longer = Session(SessionConfig.from_environ(env), env)
    assert (longer.api.result_patience, longer.api.report_patience) == (90, 30)
    assert longer.api.needed_patience == 90
    clock = Clock(longer.api)
    with pytest.raises(ProviderError):  # nothing listens
        longer.api.result({"outcome": "success"})
    assert clock.now - 1000 == 90


# -- the calls the run needs: the repository token, the planning context ---------------------------


NEEDED = pytest.mark.parametrize("call", ["token", "context"])
PATHS = {"token": "/api/token", "context": "/runner/planning-context"}


def _needed(client: Orchestrator, call: str) -> str:
    """The token ``repository_token`` fetched, or the key of the issue ``planning_context`` did."""
    if call == "token":
        return client.repository_token("acme").token
    return str(client.planning_context()["issue"]["key"])


EXPECTED = {"token": "ghs_after_the_deploy", "context": "ENG-1"}


@NEEDED
def test_the_calls_the_run_needs_ride_out_a_deploy_that_refuses_connections(
    deploy: Deploy, call: str
) -> None:
    """Gunicorn restarting as the session starts: connections refused for 40 s. The token (or the
    planning context) was given up after 1.5 s (three tries), and the run failed; it is waited for."""
    client = Orchestrator(deploy.url, "nonce-1", {"runner:planning-context": "c"}, Redactor())
    clock = Clock(client)
    clock.at(40, deploy.back)

    assert _needed(client, call) == EXPECTED[call]

    assert deploy.seen == [PATHS[call]]
    assert clock.now - 1000 == 42.5  # tries 0.5, 1, 2, 4, then 5 s apart
    assert clock.waits[:5] == [0.5, 1, 2, 4, 5] and set(clock.waits[5:]) == {5}
    assert client.unreachable_at is None


@NEEDED
def test_the_calls_the_run_needs_wait_out_a_gateways_503_as_long_as_retry_after_asks(call: str) -> None:
    state = {"deploying": True}

    def gateway(request: Request) -> Response:
        if state["deploying"]:
            return Response("<html>503</html>", status=503, headers={"Retry-After": "8"},
                            mimetype="text/html")
        return json_answer(ANSWERS[request.path])

    url, seen, stop = _server(gateway)
    try:
        client = Orchestrator(url, "nonce-1", {"runner:planning-context": "c"}, Redactor())
        clock = Clock(client)
        clock.at(20, lambda: state.update(deploying=False))

        assert _needed(client, call) == EXPECTED[call]
        assert clock.waits == [8, 8, 8] and seen == [PATHS[call]] * 4  # never sooner than asked
    finally:
        stop()


def test_the_calls_the_run_needs_give_up_after_their_patience_the_last_try_at_its_end(
    deploy: Deploy,
) -> None:
    """An orchestrator that stays away: the call fails after its patience, with what it met; the
    reports after it are held back, the orchestrator being unreachable (but for one short try of
    the first report saying the run failed)."""
    client = Orchestrator(deploy.url, "nonce-1", {}, Redactor(), needed_patience=20)
    clock = Clock(client)

    with pytest.raises(ProviderError, match=r"POST /api/token failed: ConnectionError"):
        client.repository_token("acme")

    assert clock.now - 1000 == 20 and clock.waits == [0.5, 1, 2, 4, 5, 5, 2.5]
    assert client.unreachable_at == clock.now


@pytest.mark.parametrize(
    ("status", "body", "headers", "waits"),
    [
        (403, '{"error": "Invalid or expired nonce"}', {}, []),
        (400, '{"error": "nonce and owner are required"}', {}, []),
        (404, '{"error": "job_not_found"}', {}, []),
        (401, '{"error": "expired"}', {}, []),
        # the orchestrator's own failure (GitHub failed the token): three tries, as ever
        (500, '{"error": "Failed to generate token"}', {}, [0.5, 1]),
        (429, '{"error": "slow down"}', {"Retry-After": "3"}, [3, 3]),
    ],
    ids=["403", "400", "404", "401", "500", "429"],
)
@NEEDED
def test_the_calls_the_run_needs_take_the_orchestrators_answer(
    call: str, status: int, body: str, headers: dict[str, str], waits: list[float]
) -> None:
    """A refusal is final (the nonce is no longer valid: waiting cannot change it); the
    orchestrator's own 500 or 429 is no deploy and keeps its three tries."""
    url, seen, stop = _server(lambda request: Response(body, status=status, headers=headers,
                                                        mimetype="application/json"))
    try:
        client = Orchestrator(url, "nonce-1", {"runner:planning-context": "c"}, Redactor())
        clock = Clock(client)
        with pytest.raises(ProviderError) as caught:
            _needed(client, call)
        assert caught.value.status == status
        assert clock.waits == waits and len(seen) == len(waits) + 1
        assert client.unreachable_at is None  # it answered
    finally:
        stop()


@NEEDED
def test_the_calls_the_run_needs_keep_to_the_budget(deploy: Deploy, call: str) -> None:
    """No try past the main part of the session's budget: the kept-back time is for the result."""
    client = Orchestrator(deploy.url, "nonce-1", {}, Redactor(), deadline=1010.0, end=1030.0)
    clock = Clock(client)

    with pytest.raises(ProviderError):
        _needed(client, call)

    assert clock.now == 1007.5 and clock.waits == [0.5, 1, 2, 4]  # the next try would be at 1012.5


@NEEDED
def test_a_stop_of_the_session_ends_the_wait_of_a_call_the_run_needs(deploy: Deploy, call: str) -> None:
    stop = threading.Event()
    client = Orchestrator(deploy.url, "nonce-1", {}, Redactor(), stop=stop)
    clock = Clock(client)
    clock.at(5, stop.set)  # during the wait from 3.5 s to 7.5 s

    with pytest.raises(ProviderError):
        _needed(client, call)

    assert clock.now == 1005 and len(clock.waits) == 4
    assert deploy.seen == []


def test_a_stop_ends_the_wait_as_it_comes(deploy: Deploy) -> None:
    """The waits the clock does not drive: on the session's stop event, not a sleep that runs on."""
    stop = threading.Event()
    client = Orchestrator(deploy.url, "nonce-1", {}, Redactor(), stop=stop)
    timer = threading.Timer(2.0, stop.set)  # in the wait from 1.5 s to 3.5 s
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError):
            client.repository_token("acme")
        given_up, stopped = time.monotonic() - started, stop.is_set()
    finally:
        timer.cancel()
    assert stopped and given_up < 3.2


def test_the_credential_helper_rides_out_a_deploy(
    deploy: Deploy, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credential helper asks for a fresh token inside a push: an orchestrator being deployed
    then failed the push (and the work was lost with the machine); the helper waits for it, for
    the session's ``AIIMPL_REPORT_RETRY_SECONDS``."""
    from aiimpl_core.session import credential
    from aiimpl_core.session.token_cache import TokenCache

    real = credential.orchestrator
    made: list[tuple[Orchestrator, Clock]] = []

    def driven(environ: Any) -> Orchestrator:
        client = real(environ)
        clock = Clock(client)
        clock.at(30, deploy.back)
        made.append((client, clock))
        return client

    monkeypatch.setattr(credential, "orchestrator", driven)
    env = {"AIIMPL_CREDENTIAL_CACHE": str(tmp_path / "tokens.json"), "AIIMPL_URL": deploy.url,
           "AIIMPL_NONCE": "nonce-1", "AIIMPL_REPOSITORY": "acme/eng"}

    assert credential.answer(env) == "username=x-access-token\npassword=ghs_after_the_deploy\n"

    [(client, clock)] = made
    assert client.needed_patience == 60 and clock.now - 1000 == 32.5
    assert deploy.seen == ["/api/token"]
    token = TokenCache(env["AIIMPL_CREDENTIAL_CACHE"]).current(0)
    assert token is not None and token.token == "ghs_after_the_deploy"
    assert real({**env, "AIIMPL_REPORT_RETRY_SECONDS": "90"}).needed_patience == 90


def test_a_session_rides_out_a_deploy_as_it_asks_for_its_token(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    """As the session asks for its repository token the orchestrator is deployed: for three
    seconds the gateway in front of it answers 503 to everything. The token was given up after
    1.5 s and the run failed; it is waited for, and the run goes on."""
    front, url = proxy
    deploy: dict[str, float] = {}

    def deploying() -> Response | None:
        started = deploy.get("started")
        if started is None or time.monotonic() - started > 3:
            return None
        return Response("<html>503</html>", status=503, mimetype="text/html")

    def token() -> Response | None:
        # the token's first three asks are refused whatever their timing (a loaded machine may
        # space them more than the session's waits): the fourth comes after 3 s of waits
        deploy.setdefault("started", time.monotonic())
        deploy["asked"] = deploy.get("asked", 0) + 1
        if deploy["asked"] <= 3:
            return Response("<html>503</html>", status=503, mimetype="text/html")
        return deploying()

    for path in ("/runner/progress", "/api/status", "/runner/planning-context", "/runner/result"):
        front.rules[path] = (False, deploying)
    front.rules["/api/token"] = (False, token)
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id, AIIMPL_URL=url)

    assert code == 0, out
    assert front.answered.count(("/api/token", 503)) == 3  # at 0, 0.5 and 1.5 s; then 3.5 s
    assert "POST /api/token: HTTP 503 from the orchestrator, trying again for up to 60s" in out
    job = world.job(job_id)
    assert job.status == "completed" and job.pr_number == 1
    assert world.steps(job_id)["token"].status == "succeeded"


def test_a_stop_while_the_session_waits_for_its_token_ends_it_at_once(
    world: World, proxy: tuple[Proxy, str]
) -> None:
    """The runner stops the session while the orchestrator's gateway answers 502 to its token
    request: the waiting ends there, and the reason says the session was stopped."""
    front, url = proxy
    asked = threading.Event()

    def down() -> Response:
        asked.set()
        return Response("<html>502</html>", status=502, mimetype="text/html")

    front.rules["/api/token"] = (False, down)
    world.mapping(AIIMPL_REPORT_RETRY_SECONDS="600")
    job_id = world.dispatch()
    proc = world.start_session(job_id, AIIMPL_URL=url)
    try:
        assert asked.wait(60), "the session never asked for its token"
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    world.outputs.append(out)

    assert proc.returncode == 1, out
    assert time.monotonic() - stopped < 20  # not the budget's 100 s of waiting
    job = world.job(job_id)
    assert (job.status, job.error) == (
        "failed", "The session was stopped by its runner (SIGTERM) during the request for a repository token")
    assert world.agent_calls() == []
