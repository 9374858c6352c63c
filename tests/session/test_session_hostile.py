"""The session against hostile input and a demanding operator: agent output the orchestrator
cannot take as it is (NUL bytes, megabytes of plan), secrets cut in half by an excerpt or quoted
in a URL, processes the agent leaves behind, malformed settings and signals."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from aiimpl_core.session.api import MAX_BODY_BYTES, sendable
from aiimpl_core.session.runner import main
from aiimpl_core.testing.serving import serve_wsgi

from .conftest import ANTHROPIC_KEY, World, git, wait_until


def agent_script(world: World, body: str, name: str = "agent.sh") -> str:
    """``AIIMPL_AGENT_COMMAND`` running a bash script of ``body`` (the prompt on its stdin)."""
    path = world.tmp / name
    path.write_text("#!/usr/bin/env bash\ncat > /dev/null\n" + body)
    path.chmod(0o755)
    return str(path)


def everything(world: World) -> str:
    return world.everything_stored_or_posted()


# -- what the orchestrator refuses to take -------------------------------------------------------


def test_agent_output_with_nul_bytes_still_ends_the_job_with_its_reason(world: World) -> None:
    """An agent that printed a binary file (a NUL in its output): the orchestrator refuses text with
    a NUL, so the failure, its comment and the result were refused and the job ran on to its
    timeout; the NUL is sent as U+FFFD instead."""
    world.mapping(AIIMPL_AGENT_COMMAND=agent_script(world, "printf 'PK\\0\\3\\4 binary\\n' >&2; exit 3\n"))
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1, out
    job = world.job(job_id)
    assert job.status == "failed"
    assert job.error == "LLM invocation failed with exit code 3: PK\ufffd\x03\x04 binary"
    assert world.first_lines()[2].startswith("⚠️ Session failed: LLM invocation failed with exit code 3: PK")
    assert world.steps(job_id)["agent"].status == "failed"


def test_a_plan_of_megabytes_is_delivered_cut(world: World) -> None:
    """A planning agent that answered megabytes: the result was refused as too large
    (``invalid_body``) and the job ran on to its timeout; the plan is cut to fit, its start kept."""
    big = "python3 -c \"import sys; sys.stdout.write('## Plan\\n' + 'step of the plan\\n' * 300000)\"\n"
    world.mapping(planning=True, AIIMPL_AGENT_COMMAND=agent_script(world, big))
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "completed"
    assert job.plan.startswith("## Plan\nstep of the plan\n")
    assert job.plan.endswith(" characters cut)")
    assert len(job.plan.encode()) < MAX_BODY_BYTES


def test_a_review_of_countless_blockers_is_delivered(world: World) -> None:
    """A reviewer that answered hundreds of thousands of blockers: the result was too large and
    refused, the job left running; the first 50 travel, the rest are counted."""
    many = ("python3 -c \"import json; print(json.dumps({'approved': False, "
            "'blockers': ['blocker %d' % i for i in range(150000)]}))\"\n")
    world.mapping(AIIMPL_REVIEW_COMMAND=agent_script(world, many, "review.sh"))
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    job = world.job(job_id)
    assert job.status == "review_failed" and job.pr_url
    assert "- blocker 49\n- … and 149950 more" in job.log_excerpt


def test_sendable_cuts_the_longest_texts_until_the_body_fits() -> None:
    body = {"plan": "p" * 5000, "comments": [{"body": "c" * 3000}], "error": "short", "n": 3}
    fitted = sendable(body, limit=4000)
    assert len(json.dumps(fitted)) <= 4000
    assert fitted["plan"].startswith("ppp") and fitted["plan"].endswith(" characters cut)")
    assert fitted["error"] == "short" and fitted["n"] == 3
    # text every encoder and database takes: NUL and lone surrogates become U+FFFD
    assert sendable({"a": ["x\x00y", "\udcff"]}) == {"a": ["x\ufffdy", "\ufffd"]}
    assert body["plan"] == "p" * 5000  # the caller's body is left as it was


# -- secrets ---------------------------------------------------------------------------------------


def test_a_secret_an_excerpt_or_a_reason_cuts_in_half_is_still_masked(world: World) -> None:
    """Claude Code prints its answer on one long line: where the reason (its last 600 characters)
    or the log excerpt (its last 4000) began inside the model key, the key's end was sent, as the
    text was cut first and masked after."""
    line = 'printf "%s" "$(head -c 100 /dev/zero | tr "\\0" z)$ANTHROPIC_API_KEY"\n'
    line += 'printf "%s" "$(head -c 3349 /dev/zero | tr "\\0" w)$ANTHROPIC_API_KEY"\n'
    line += 'head -c 580 /dev/zero | tr "\\0" y\n'
    world.mapping(AIIMPL_AGENT_COMMAND=agent_script(world, "{\n" + line + "} >&2\nexit 1\n"))
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1, out
    job = world.job(job_id)
    # masked whole, then cut: the reason and the excerpt show the mask, never a part of the key
    assert job.error == "LLM invocation failed with exit code 1: …" + "w" * 10 + "[REDACTED]" + "y" * 580
    assert job.log_excerpt.count("[REDACTED]") == 2 and job.log_excerpt.endswith("[REDACTED]" + "y" * 580)
    text = everything(world)
    for size in (8, 12, 16):
        assert ANTHROPIC_KEY[-size:] not in text, f"the key's last {size} characters leaked"


def test_a_failed_git_commands_message_is_cut_from_its_masked_output(tmp_path: Path) -> None:
    """``GitError`` keeps the end of git's output: cut first and masked after, a secret at the cut
    left its end in the message (a push's error quoting a remote, a clone's)."""
    from aiimpl_core.session.git import Git, GitError
    from aiimpl_core.session.redact import Redactor

    secret = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    repo = Git(str(tmp_path), dict(os.environ), clean=Redactor([secret]).text)
    # git says "fatal: …'<name>:file': File name too long": the 1500 characters the message keeps
    # begin inside the secret
    name = "x" * 40 + secret + "y" * 1460

    with pytest.raises(GitError) as raised:
        repo.run("rev-parse", f"{name}:file")

    message = str(raised.value)
    assert "[REDACTED]" in message
    for size in (8, 12, 16):
        assert secret[-size:] not in message and secret[-size:] not in raised.value.output


def test_the_credentials_of_a_url_the_agent_quotes_are_masked(world: World) -> None:
    """A package index with credentials in its address (``PIP_INDEX_URL`` in extraEnv, a name that
    says nothing of a secret) quoted by the tool that failed to reach it was logged and reported as
    it was. A URL with credentials in the agent's changes (a test database's) is committed as it is."""
    index = "https://ci:s3cr3t-index-passw0rd@pypi.example.test/simple"
    body = (
        "mkdir -p config && echo 'DATABASE_URL=postgres://app:app-passw0rd@localhost/app' > config/test.env\n"
        'echo "ERROR: Could not fetch URL $PIP_INDEX_URL/requests/: HTTP 401" >&2\n'
        'echo "retrying with https://ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789@github.com/acme/eng.git" >&2\n'
    )
    world.mapping(AIIMPL_AGENT_COMMAND=agent_script(world, body), AIIMPL_REVIEW="false", PIP_INDEX_URL=index)
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 0, out
    assert world.job(job_id).status == "completed"
    assert "Could not fetch URL https://ci:[REDACTED]@pypi.example.test/simple/requests/" in out
    assert "https://[REDACTED]@github.com/acme/eng.git" in out
    # (the mapping's extraEnv holds the address as the operator gave it, by design)
    steps = [repr(s.detail) for s in world.steps(job_id).values()]
    text = "\n".join([out, *world.comments(), *steps, world.job(job_id).log_excerpt or ""])
    assert "s3cr3t-index-passw0rd" not in text and "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ" not in text
    assert "postgres://app:app-passw0rd@localhost/app" in world.remote.show("ai/ENG-1", "config/test.env")


def test_url_credentials_are_masked_and_nothing_else() -> None:
    from aiimpl_core.session.redact import Redactor, mask_url_credentials

    assert mask_url_credentials("see https://ci:pa55@pypi.example/simple and postgres://a:b@db/x") == (
        "see https://ci:[REDACTED]@pypi.example/simple and postgres://a:[REDACTED]@db/x"
    )
    assert mask_url_credentials("git clone https://ghp_0123456789abcdefghijKLM@github.com/a/b") == (
        "git clone https://[REDACTED]@github.com/a/b"
    )
    for plain in ("ssh://git@github.com/a/b.git", "http://host:8080/path@v2", "mail me@example.com",
                  "postgresql+psycopg://postgres@127.0.0.1:5432/test", "https://github.com/a/b/pull/1"):
        assert mask_url_credentials(plain) == plain
    # only a redactor asked to masks them; what it knows it masks either way
    assert Redactor(["known-secret"]).text("https://u:p4ss@h/ known-secret") == "https://u:p4ss@h/ [REDACTED]"
    assert Redactor([], url_credentials=True).text("https://u:p4ss@h/") == "https://u:[REDACTED]@h/"


def test_masking_url_credentials_takes_linear_time_on_any_output() -> None:
    """Output of dotted or base64 text (every ``.`` or ``+`` a word boundary a scheme may start at)
    with an address in it: a scheme read without bound took quadratic time (25 s for 80 kB, hours
    for the 8 MiB of output a session reads back)."""
    from aiimpl_core.session.redact import mask_url_credentials

    for filler in ("a.", "Q+"):
        text = filler * 200_000 + " https://ci:pa55@pypi.example/simple"
        started = time.monotonic()
        assert mask_url_credentials(text).endswith(" https://ci:[REDACTED]@pypi.example/simple")
        assert time.monotonic() - started < 5


# -- repositories -----------------------------------------------------------------------------------


def test_a_repository_without_its_default_branch_fails_with_gits_error(world: World) -> None:
    """An empty repository (nothing pushed yet, so no default branch): the reason, and the first line
    of its progress comment, said git's "Cloning into '/tmp/…'..." and not why the clone failed."""
    shutil.rmtree(world.remote.bare)
    git("init", "--bare", "-q", "-b", "main", str(world.remote.bare), cwd=world.tmp)
    world.mapping()
    job_id = world.dispatch()

    code, out = world.run_session(job_id)

    assert code == 1, out
    job = world.job(job_id)
    assert (job.status, job.error) == (
        "failed", "git clone failed (exit 128): fatal: Remote branch main not found in upstream origin"
    )
    assert world.first_lines()[1] == f"⚠️ Session failed: {job.error}. Machine will be cleaned up."
    assert world.agent_calls() == []


# -- processes --------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to collect it does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_what_the_agent_and_setup_leave_running_ends_with_the_session(world: World) -> None:
    """A watcher the agent left in the background went on running through the commit and the push
    (free to change the work tree) and outlived the session, as did setup's services: the agent's
    are ended when it exits, setup's stay up for the agent and the verification, then end too."""
    service, leftover, seen = world.tmp / "service.pid", world.tmp / "leftover.pid", world.tmp / "service-up"
    setup = f"(exec sleep 300) > /dev/null 2>&1 & echo $! > {service}"
    agent = (
        "echo hello > greeting.txt\n"
        f"(exec sleep 300) > /dev/null 2>&1 & echo $! > {leftover}\n"
        f"kill -0 $(cat {service}) && touch {seen}\n"
    )
    # (a process ended but not collected yet is a zombie, "Z" in its stat line: as good as gone)
    gone = f"case $(sed 's/.*) //' /proc/$(cat {leftover})/stat 2>/dev/null) in ''|Z*) true;; *) false;; esac"
    verify = f"kill -0 $(cat {service}) && {gone}"
    world.mapping(AIIMPL_SETUP_COMMAND=setup, AIIMPL_AGENT_COMMAND=agent_script(world, agent),
                  AIIMPL_VERIFY_COMMAND=verify, AIIMPL_REVIEW="false")
    job_id = world.dispatch()
    try:
        code, out = world.run_session(job_id)

        assert code == 0, out
        assert seen.exists()  # setup's service ran for the agent ...
        assert world.steps(job_id)["verify"].detail["passed"] is True  # ... and the verification
        # the agent's leftover was gone by then; nothing outlived the session
        assert not alive(int(leftover.read_text())) and not alive(int(service.read_text()))
    finally:
        for path in (service, leftover):
            if path.exists() and alive(int(path.read_text())):
                os.kill(int(path.read_text()), signal.SIGKILL)


def test_sighup_stops_the_session_as_its_runner_would(world: World) -> None:
    """A session run by hand whose terminal (or ssh connection) went away got SIGHUP: it died at
    once, reporting nothing (the job ran on to its timeout) and leaving the agent running."""
    started, stubborn = world.tmp / "agent.pid", world.tmp / "stubborn.pid"
    agent = (
        "echo hello > greeting.txt\n"
        # a child that ignores SIGTERM: it outlived the agent, which exits on it
        f"(trap '' TERM; exec sleep 300) & echo $! > {stubborn}\n"
        f"echo $$ > {started}\nsleep 300 & wait\n"
    )
    world.mapping(AIIMPL_AGENT_COMMAND=agent_script(world, agent), AIIMPL_REVIEW="false")
    job_id = world.dispatch()
    proc = world.start_session(job_id)
    try:
        wait_until(lambda: started.exists() and started.read_text().strip(),
                   f"the agent's pid in {started.name}", running=proc)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=60)
        world.outputs.append(out)

        assert proc.returncode == 1, out
        job = world.job(job_id)
        sha = world.remote.branches()["ai/ENG-1"]
        assert (job.status, job.error) == (
            "failed", "The session was stopped by its runner (SIGHUP) while the agent was running. "
                      f"Work so far is on branch `ai/ENG-1` (commit {sha[:7]})."
        )
        # the agent's process group was ended, what ignored SIGTERM in it too
        assert not alive(int(started.read_text())) and not alive(int(stubborn.read_text()))
    finally:
        proc.kill()
        if stubborn.exists() and stubborn.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stubborn.read_text()), signal.SIGKILL)
        if started.exists() and started.read_text().strip():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(started.read_text()), signal.SIGKILL)


def test_a_log_nobody_reads_any_more_does_not_lose_the_result(world: World) -> None:
    """The reader of the session's output went away (a closed pipe): the first line it logged
    raised, and the session ended with a traceback instead of its result."""
    world.mapping()
    job_id = world.dispatch()
    proc = world.start_session(job_id)
    assert proc.stdout is not None
    proc.stdout.close()

    code = proc.wait(timeout=120)

    job = world.job(job_id)
    assert job.status == "completed" and job.pr_url
    assert code == 0


def test_sigterm_while_the_pull_request_is_opened_runs_no_verification(world: World) -> None:
    """Stopped while GitHub opens the pull request: the verification script was started all the same,
    stopped at once, and the ticket read "Running verification script…" then "Verification failed:
    stopped …" for a script that never ran. It is not started; the job ends with its pull request."""
    world.mapping(AIIMPL_VERIFY_COMMAND="true")
    job_id = world.dispatch()
    world.github.delay_next("POST", r"^/repos/acme/eng/pulls$", 3)
    proc = world.start_session(job_id)
    # created; its answer is 3 s away
    wait_until(lambda: world.github.pull_requests("acme", "eng"), "the pull request on GitHub", running=proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    world.outputs.append(out)

    assert proc.returncode == 0, out
    job = world.job(job_id)
    assert job.status == "completed" and job.pr_url
    lines = world.first_lines()
    assert not [line for line in lines if "erification" in line and not line.startswith("⚠️ The verification")]
    assert any(c.startswith("⚠️ The verification script was not run (the session was stopped") for c in lines)
    step = world.steps(job_id)["verify"]
    assert step.status == "skipped" and step.detail["stopped"] == "stopped"


# -- settings ---------------------------------------------------------------------------------------


def run_token(claims: dict[str, object]) -> str:
    def part(data: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.signature"


class Sink:
    """An orchestrator that takes every request (``200 {}``) and keeps its path and body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, object]]] = []
        self.live = serve_wsgi(self.wsgi).start()
        self.url = self.live.url

    def wsgi(self, environ: dict[str, object], start_response: object) -> object:
        request = Request(environ)
        self.received.append((request.path, request.get_json(silent=True) or {}))
        return Response("{}", mimetype="application/json")(environ, start_response)


@pytest.fixture
def sink() -> Iterator[Sink]:
    taker = Sink()
    yield taker
    taker.live.stop()


def session_env(url: str = "http://127.0.0.1:9", **overrides: str) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AIIMPL_URL": url,
        "AIIMPL_JOB_ID": "7",
        "AIIMPL_PHASE": "implementation",
        "AIIMPL_ISSUE_KEY": "ENG-7",
        "AIIMPL_REPOSITORY": "acme/eng",
        "AIIMPL_BASE_BRANCH": "main",
        "AIIMPL_BRANCH": "ai/ENG-7",
        "AIIMPL_NONCE": "nonce-of-the-job-0123456789",
        "AIIMPL_RESULT_TOKEN": run_token({"phase": "implementation"}),
        "AIIMPL_CONTEXT_TOKEN": run_token({"phase": "implementation", "aud": "runner:planning-context"}),
    }
    env.update(overrides)
    return env


@pytest.mark.parametrize(("overrides", "said"), [
    ({"AIIMPL_URL": "orchestrator:8000"}, "AIIMPL_URL must be an http:// or https:// URL with a host, not "
                                          "'orchestrator:8000'"),
    ({"AIIMPL_URL": "http://[::1"}, "AIIMPL_URL is not a valid URL (Invalid IPv6 URL), not 'http://[::1'"),
    ({"AIIMPL_URL": "https://ops:pa55word@orchestrator:80x"},
     "AIIMPL_URL is not a valid URL (Port could not be cast to integer value as '80x'), not "
     "'https://ops:[REDACTED]@orchestrator:80x'"),
    ({"AIIMPL_GITHUB_API_URL": "api.github.com"}, "AIIMPL_GITHUB_API_URL must be an http:// or https:// URL"),
    ({"AIIMPL_GIT_BASE_URL": "http://[git"}, "AIIMPL_GIT_BASE_URL is not a valid URL"),
    ({"AIIMPL_LIFETIME_SECONDS": "9" * 400}, "AIIMPL_LIFETIME_SECONDS must be at most 1000000000"),
    ({"AIIMPL_TOKEN_REFRESH_SECONDS": "1" + "0" * 309}, "AIIMPL_TOKEN_REFRESH_SECONDS must be at most"),
    ({"AIIMPL_PHASE": "", "AIIMPL_RESULT_TOKEN": run_token({"phase": ["implementation"]})},
     "AIIMPL_PHASE is not set"),
    ({"AIIMPL_PHASE": "", "AIIMPL_RESULT_TOKEN": "a." + "W" * 40000 + ".b"}, "AIIMPL_PHASE is not set"),
    ({"AIIMPL_BRANCH": "ai/ENG-7..x"}, "AIIMPL_BRANCH must be a name git accepts for a branch (see git "
                                       "check-ref-format), not 'ai/ENG-7..x'"),
], ids=["url-no-scheme", "url-bad-ipv6", "url-bad-port", "api-url-no-scheme", "git-url-bad", "lifetime-huge",
        "refresh-huge", "token-phase-not-text", "token-nested-deep", "branch-invalid"])
def test_a_malformed_setting_is_a_clear_error_at_once(
    sink: Sink, overrides: dict[str, str], said: str
) -> None:
    """Exit 2 with one line naming the variable, never a traceback, never the run with a URL no call
    can use (each report failing, seconds of retries), never a URL's credentials; reported to the
    orchestrator when its URL and the result token's phase are usable."""
    if overrides.get("AIIMPL_RESULT_TOKEN", "").startswith("a.W"):
        nested = "[" * 40000 + "]" * 40000  # a claim nested deeper than the parser recurses
        overrides["AIIMPL_RESULT_TOKEN"] = "a." + base64.urlsafe_b64encode(nested.encode()).decode() + ".b"
    out = io.StringIO()
    started = time.monotonic()

    code = main(session_env(sink.url, **overrides), out)

    assert code == 2
    assert out.getvalue().startswith(f"aiimpl session: {said}"), out.getvalue()
    assert "pa55word" not in out.getvalue() and "Traceback" not in out.getvalue()
    assert time.monotonic() - started < 5
    reportable = "AIIMPL_URL" not in overrides and "AIIMPL_PHASE" not in overrides
    results = [body for path, body in sink.received if path == "/runner/result"]
    if reportable:
        [result] = results
        assert result["outcome"] == "failure" and str(result["error"]).startswith(
            f"the session configuration is invalid: {said}"
        )
    else:
        assert sink.received == []


# -- the orchestrator's answers -----------------------------------------------------------------------


def test_the_result_is_tried_again_after_a_proxys_rate_limit() -> None:
    """A proxy in front of the orchestrator answered 429 with a Retry-After longer than the client
    waits on its own: the result was given up at once (exit 2, the job left running), though a 429
    means nothing was done. It is tried again after the wait asked for (at most 30 s)."""
    from aiimpl_core.session.api import Orchestrator
    from aiimpl_core.session.redact import Redactor

    answers = [(429, {"Retry-After": "45"}), (429, {"Retry-After": "1"}), (200, {})]
    seen: list[dict[str, object]] = []

    def app(environ: dict[str, object], start_response: object) -> object:
        request = Request(environ)
        seen.append(request.get_json())
        status, headers = answers.pop(0)
        body = '{"status": "completed"}' if status == 200 else '{"error": "slow down"}'
        return Response(body, status=status, headers=headers, mimetype="application/json")(
            environ, start_response
        )

    with serve_wsgi(app) as live:
        api = Orchestrator(live.url, "nonce-0123456789", {"runner:result": "result-token-0123456789"},
                           Redactor())
        waits: list[float] = []
        api.http.sleep = waits.append

        answer = api.result({"outcome": "failure", "phase": "implementation", "comments": [], "error": "x"})

    assert answer == {"status": "completed"}
    assert len(seen) == 3 and waits[0] == 30.0  # the 45 s asked for, cut to 30


def test_the_line_a_cut_output_begins_in_is_left_out_whole() -> None:
    """Of megabytes of output only the end is kept: where the cut landed inside a secret, its end
    began what was kept, and no redaction finds the end of a secret."""
    from aiimpl_core.session import procs
    from aiimpl_core.session.redact import Redactor

    secret = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
    script = f"import sys\nsys.stdout.write('{secret}' + '\\n' + 'z' * 999_980 + '\\nthe end')\n"
    result = procs.run([sys.executable, "-c", script], keep_bytes=1_000_000)

    kept = Redactor([secret]).text(result.stdout)
    assert secret[-12:] not in kept
    assert kept.startswith("… (41 bytes of output before this left out)\nzzz") and kept.endswith("the end")
