"""The session program's parts on their own: redaction, agent classification, configuration,
the credential helper, review parsing, the pull request lookup, and importability without the
orchestrator's stack."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests

from aiimpl_core.errors import ConfigError
from aiimpl_core.session import env as E
from aiimpl_core.session import procs, prompts
from aiimpl_core.session.agent import AgentRun, build_command, parse_report
from aiimpl_core.session.api import Orchestrator
from aiimpl_core.session.config import SessionConfig
from aiimpl_core.session.credential import git_environment
from aiimpl_core.session.github import (
    Budget,
    Interrupted,
    PullRequestError,
    find_ended_pull_request,
    find_open_pull_request,
    open_pull_request,
    web_base,
)
from aiimpl_core.session.redact import MASK, Redactor
from aiimpl_core.session.runner import format_duration
from aiimpl_core.session.token_cache import RepoToken, TokenCache
from aiimpl_core.testing.fake_github import FakeGitHub, PullRequest
from aiimpl_core.testing.serving import QuietRequestHandler, ServerThread, serve_wsgi

SECRET = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        SECRET,
        f"{SECRET[:10]}\n{SECRET[10:]}",
        f"{SECRET[:5]}\r\n{SECRET[5:20]}\n  {SECRET[20:]}",
        f"{SECRET[:10]}\\n{SECRET[10:]}",  # escaped inside a JSON string
        quote("p@ss/w rd&" + SECRET, safe=""),
        base64.b64encode(f"x-access-token:{SECRET}".encode()).decode(),
    ],
)
def test_redactor_masks_every_shape_of_a_secret(shape: str) -> None:
    r = Redactor([SECRET, "p@ss/w rd&" + SECRET])
    out = r.text(f"before {shape} after")
    assert out.startswith("before ") and out.endswith(" after")
    assert MASK in out
    for piece in (SECRET, SECRET[10:], SECRET[:20]):
        assert piece not in out


@pytest.mark.parametrize("before", [b"", b"ci:", b"bot:", b"user:", b"x-access-token:", b"API_KEY=",
                                    b"{\"auth\": 1, "])
@pytest.mark.parametrize("after", [b"", b"\n", b"x", b" more bytes"])
def test_redactor_masks_a_secret_base64_encoded_wherever_it_starts(before: bytes, after: bytes) -> None:
    """A ``Basic`` header's user name (or a file's bytes before the secret) of any length: each of
    the three alignments encodes the secret differently (only one in three was matched)."""
    for secret in (SECRET, "hunter22", "secret"):  # (the shortest a redactor takes, too)
        r = Redactor([secret])
        encoded = base64.b64encode(before + secret.encode() + after).decode()
        out = r.text(f"Authorization: Basic {encoded}")
        # what is left before the mask is what the bytes before the secret make alone, and at most
        # four bits of its first byte: never one of its bytes whole
        kept = 4 * (len(before) // 3) + (0, 2, 3)[len(before) % 3]
        assert out.startswith(f"Authorization: Basic {encoded[:kept]}{MASK}"), (secret, out)


@pytest.mark.parametrize("value", ['Tr0ub4dor"&3\\horse', "a/b/c/d/e/f", "pässwörd-ñ", "tab\there"])
def test_redactor_masks_a_secret_as_json_writes_it(value: str) -> None:
    """A tool printing JSON escapes quotes, backslashes, control characters, other scripts'
    letters (``\\u00e4``) and sometimes ``/``: each form is masked."""
    import json

    r = Redactor([value])
    for shape in (json.dumps({"k": value}), json.dumps({"k": value}, ensure_ascii=False),
                  json.dumps({"k": value}).replace("/", "\\/")):
        assert r.text(shape) == '{"k": "' + MASK + '"}', shape


def test_redactor_masks_url_encoding_in_either_case() -> None:
    value = "a/b+c d=e&f"
    r = Redactor([value])
    for shape in (quote(value, safe=""), quote_plus(value, safe=""), quote(value, safe="").lower()):
        assert r.text(shape) == MASK, shape


def test_redactor_leaves_other_text_and_short_values_alone() -> None:
    r = Redactor(["on", "", None, "abc"])  # type: ignore[list-item]
    assert r.text("turn it on, abc") == "turn it on, abc"
    assert Redactor([SECRET]).text(SECRET[:-1] + "X") == SECRET[:-1] + "X"


def test_redactor_data_keeps_the_named_top_level_keys() -> None:
    r = Redactor([SECRET])
    body = {"nonce": SECRET, "step": {"detail": [f"x {SECRET}"]}, "n": 3}
    assert r.data(body, keep=("nonce",)) == {"nonce": SECRET, "step": {"detail": [f"x {MASK}"]}, "n": 3}


def test_redactor_masks_each_line_of_a_multiline_secret() -> None:
    pem = "\n".join(
        ["-----BEGIN KEY-----", "MIIEowIBAAKCAQEAx1234567890abcdef", "QWERTYUIOPasdfghjkl0987654321zz"]
    )
    out = Redactor([pem]).text("oops: QWERTYUIOPasdfghjkl0987654321zz")
    assert "QWERTYUIOP" not in out


def test_a_value_learned_later_is_compiled_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redactor that knows hundreds of values learns one more without compiling the others again
    (one pattern of 512 values with a line break allowed between any two characters took about
    4 s, on the next log line after each installation token a process minted)."""
    from aiimpl_core.session import redact

    compiled: list[int] = []
    real = redact._compile
    monkeypatch.setattr(redact, "_compile", lambda variants: compiled.append(len(variants)) or real(variants))
    values = [f"ghs_{n:036d}" for n in range(300)]
    r = Redactor(values)
    assert r.text(f"a {values[5]} b") == f"a {MASK} b"
    assert len(compiled) == 1 and compiled[0] >= 300
    compiled.clear()
    later = "ghs_learned_later_0123456789abcdef"
    r.add(later)
    assert r.text(f"a {later[:10]}\n{later[10:]} b {values[7]}") == f"a {MASK} b {MASK}"
    assert compiled == [len(r._variants(later))]
    # each value learned on its own adds a pattern, up to a bound: then all are compiled as one
    compiled.clear()
    for n in range(redact.MAX_CHUNKS):
        r.add(f"learned-one-by-one-{n}")
        assert r.text(f"x learned-one-by-one-{n} y") == f"x {MASK} y"
    assert max(compiled) >= 300 and compiled.count(max(compiled)) == 1
    assert r.text(" ".join(["learned-one-by-one-0", later, values[0]])) == " ".join([MASK] * 3)


def test_secrets_containing_or_overlapping_one_another_are_masked_whole() -> None:
    inner, outer = "inner-secret-42", "outer-inner-secret-42-outer"
    for first, second in ((inner, outer), (outer, inner)):
        r = Redactor([first])
        r.text("x")  # compiled: the second value gets a pattern of its own
        r.add(second)
        assert r.text(f"a {outer} b {inner} c") == f"a {MASK} b {MASK} c"
    # two secrets sharing characters: neither one's rest is left in the clear, even across a break
    r = Redactor(["abcdef-123456", "123456-uvwxyz"])
    assert r.text("a abcdef-123456-uvwxyz b") == f"a {MASK} b"
    assert r.text("a abcdef-12\n3456-uvwx\nyz b") == f"a {MASK} b"


@pytest.mark.parametrize("size", ["bundle-256k", "one-line-1.5m"])
def test_a_long_secret_is_masked_whole_and_costs_no_time_to_learn(size: str) -> None:
    """A 256 KB certificate bundle, or a megabyte-and-a-half value on one line: learned and matched
    in well under a second on an idle machine (a pattern that allows a line break between any two
    characters took about a minute for the bundle, and hours for the long line; the bound leaves a
    loaded machine room), each line of the bundle masked on its own, a short secret beside it still
    masked across a line break."""
    import time

    if size == "bundle-256k":
        lines = [base64.b64encode(n.to_bytes(3, "big") * 16).decode() for n in range(4000)]
        value, piece = "\n".join(lines), lines[7]
    else:
        value = "v" * 1_500_000
        piece = value
    redactor = Redactor([value, SECRET])
    started = time.perf_counter()
    out = redactor.text(f"a {value} b {piece} c {SECRET[:9]}\n{SECRET[9:]} d")
    assert time.perf_counter() - started < 15
    assert out == f"a {MASK} b {MASK} c {MASK} d"


# -- the agent's report and its failure wording -------------------------------------------------


def _run(code: int, stdout: str = "", stderr: str = "", max_turns: int = 50) -> AgentRun:
    return AgentRun(procs.ProcessResult(code, stdout, stderr), parse_report(stdout), max_turns)


def test_claude_json_report_gives_text_cost_and_turns() -> None:
    run = _run(
        0,
        json.dumps(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "result": "done",
                "num_turns": 12,
                "total_cost_usd": 0.4321,
            }
        ),
    )
    assert (run.text, run.turns, run.cost_usd, run.failed) == ("done", 12, 0.4321, False)


def test_stream_json_output_is_read_from_its_last_result_line() -> None:
    lines = [json.dumps({"type": "system"}), json.dumps({"type": "result", "result": "ok", "num_turns": 2})]
    assert parse_report("\n".join(lines)) == {"type": "result", "result": "ok", "num_turns": 2}
    assert parse_report("plain text") is None


def test_max_turns_wording_from_the_json_subtype() -> None:
    run = _run(
        1,
        json.dumps({"type": "result", "subtype": "error_max_turns", "is_error": True, "num_turns": 30}),
        max_turns=30,
    )
    assert run.failure_reason() == "LLM invocation failed with exit code 1: Reached max turns (30)"


def test_max_turns_wording_from_the_cli_message() -> None:
    run = _run(1, "", "Error: Reached max turns (50)")
    assert run.failure_reason() == "LLM invocation failed with exit code 1: Reached max turns (50)"


def test_agent_error_wording_names_the_exit_code_and_the_end_of_the_output() -> None:
    run = _run(2, "", "starting\nAPI Error: 401 invalid x-api-key")
    assert (
        run.failure_reason()
        == "LLM invocation failed with exit code 2: starting\nAPI Error: 401 invalid x-api-key"
    )
    reported = _run(
        0,
        json.dumps(
            {
                "type": "result",
                "subtype": "error_during_execution",
                "is_error": True,
                "result": "context lost",
            }
        ),
    )
    assert reported.failed
    assert reported.failure_reason() == "LLM invocation failed with exit code 1: context lost"


def test_agent_command_placeholders_and_stdin() -> None:
    argv, stdin = build_command(E.AGENT_COMMAND.default or "", "do it", "/tmp/p.md", 7)
    assert argv[:7] == ["claude", "-p", "do it", "--output-format", "json", "--max-turns", "7"]
    assert argv[7:] == ["--permission-mode", "acceptEdits"] and stdin is None
    argv, stdin = build_command("aider --message-file {prompt_file} --yes", "x", "/s/p.md", 3)
    assert argv == ["aider", "--message-file", "/s/p.md", "--yes"] and stdin is None
    argv, stdin = build_command("my-agent --json '{\"a\": 1}'", "the prompt", "/s/p.md", 3)
    assert argv == ["my-agent", "--json", '{"a": 1}'] and stdin == "the prompt"


# -- processes -----------------------------------------------------------------------------------


def test_a_process_past_its_deadline_is_stopped_with_its_children() -> None:
    started = time.monotonic()
    result = procs.run(
        ["bash", "-c", "sleep 30 & sleep 30; echo never"], deadline=time.monotonic() + 0.5, grace=1
    )
    assert result.stopped == "deadline" and not result.ok
    assert time.monotonic() - started < 10


def test_a_stop_event_ends_a_process() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    result = procs.run(["sleep", "30"], stop=stop, grace=1)
    assert result.stopped == "signal"


def test_a_process_a_signal_ended_has_the_exit_status_a_shell_says() -> None:
    """``-9`` from subprocess is ``137`` in a shell, and in the reference's wording of the agent's
    failure (``LLM invocation failed with exit code -9`` named no exit code anyone knows)."""
    result = procs.run(["bash", "-c", "kill -KILL $$"])
    assert (result.code, result.stopped) == (137, None)
    run = AgentRun(result, None, 50)
    assert run.failed and run.failure_reason() == "LLM invocation failed with exit code 137: no output"


@pytest.mark.parametrize("ended", ["signal", "deadline"])
def test_no_process_starts_once_the_session_was_stopped_or_its_budget_spent(
    tmp_path: Path, ended: str
) -> None:
    """A stop that came while nothing ran (between two short commands) is seen by the next one: it
    is not started (it was, and only a command still running 0.1 s later was ever stopped)."""
    stop = threading.Event()
    if ended == "signal":
        stop.set()
    deadline = time.monotonic() - 1 if ended == "deadline" else None
    marker = tmp_path / "ran"
    result = procs.run(["touch", str(marker)], stop=stop, deadline=deadline)
    assert (result.stopped, result.code, marker.exists()) == (ended, procs.NOT_STARTED, False)


def test_a_missing_executable_is_exit_127() -> None:
    result = procs.run(["no-such-agent-binary-xyz"])
    assert result.code == 127 and "command not found" in result.stderr


# -- review verdicts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ('Fine.\n{"approved": true, "blockers": []}', (True, [])),
        ('{"approved": false, "blockers": ["no tests", " "]}', (False, ["no tests"])),
        ('{"approved": true, "blockers": ["but this is broken"]}', (False, ["but this is broken"])),
        ("LGTM\nAPPROVE", (True, [])),
        ("no idea", None),
        ('{"approved": "yes"}', None),
    ],
)
def test_review_verdicts(text: str, verdict: object) -> None:
    assert prompts.parse_review(text) == verdict


def test_review_verdict_of_an_answer_nested_deeper_than_the_stack_is_none_not_a_crash():
    """Objects nested deeper than Python's stack: the decoder's RecursionError ended the review
    step with a traceback; such a "{" gives no verdict, and one before it still counts."""
    assert prompts.parse_review('{"a":' * 2000) is None
    assert prompts.parse_review('{"approved": false, "blockers": ["b"]} ' + '{"a":' * 2000) == (False, ["b"])


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("{" * 400_000, None),
        ('{"' * 200_000, None),
        ("{ \n" * 130_000 + "APPROVE", (True, [])),
        ('{"approved": false, "blockers": ["x"]}\n' + "{" * 400_000, (False, ["x"])),
        ('{"approved": false, "blockers": ["x"]}\n' + '{"' * 200_000, (False, ["x"])),
    ],
    ids=["braces", "braces-quotes", "braces-line-breaks", "verdict-then-braces", "verdict-then-quotes"],
)
def test_review_verdict_of_an_answer_full_of_braces_is_found_in_linear_time(
    text: str, verdict: object
) -> None:
    """Every failed try to decode from a "{" once counted the lines of the whole answer before it:
    400 000 of them took half a minute of the session's time."""
    started = time.process_time()
    assert prompts.parse_review(text) == verdict
    assert time.process_time() - started < 3


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        # a verdict longer than the first window, and one holding every token the decoder reads past
        ('{"approved": false, "blockers": [' + ", ".join(['"fix {it}"'] * 400) + "]}",
         (False, ["fix {it}"] * 400)),
        ('Done.\n{"approved": false, "blockers": ["uses \\ud83d\\ude00 in {names}", "a \\"b\\" \\\\ c"], '
         '"seen": [true, false, null, NaN, Infinity, -Infinity, 1e+5, -0.25E-3, 10, "\\u00e9"], '
         '"n": {"m": {}}}\n',
         (False, ["uses \U0001f600 in {names}", 'a "b" \\ c'])),
        # the last verdict is broken far from its start: the one before it is the answer
        ('{"approved": false, "blockers": ["a"]}\n'
         '{"approved": true, "blockers": [], "x": [' + "1, " * 120 + "tru]}",
         (False, ["a"])),
        ('{"approved": true, "blockers": []}\n{"approved": true, "blockers": ["' + "x" * 300, (True, [])),
        ('{"approved": true, "blockers": [], "x": ' + "-" * 200 + "Infinity}", None),
        ('{"approved": true, "blockers": [], "n": 1.' + "5" * 200 + "e}", None),
        ('{"approved": true, "blockers": [], "n": 1.' + "5" * 200 + "e-1}", (True, [])),
    ],
    ids=["long", "every-token", "broken-far-in", "unterminated", "dashes", "exponent-cut", "long-number"],
)
def test_review_verdict_is_the_same_wherever_the_decoded_window_ends(
    monkeypatch: pytest.MonkeyPatch, text: str, verdict: object
) -> None:
    """The answer is decoded a window at a time: wherever a window ends (inside a literal, an
    escape, a number, a string), the verdict is the one decoding the whole answer gives."""
    for window in range(65, len(text) + 2, 7 if len(text) > 1000 else 1):
        monkeypatch.setattr(prompts, "REVIEW_WINDOW", window)
        assert prompts.parse_review(text) == verdict, window


# -- configuration ---------------------------------------------------------------------------------


def base_env(**kw: str) -> dict[str, str]:
    env = {
        "AIIMPL_URL": "http://o.test/",
        "AIIMPL_JOB_ID": "5",
        "AIIMPL_PHASE": "implementation",
        "AIIMPL_ISSUE_KEY": "ENG-1",
        "AIIMPL_REPOSITORY": "acme/api",
        "AIIMPL_BASE_BRANCH": "main",
        "AIIMPL_BRANCH": "ai/ENG-1",
        "AIIMPL_NONCE": "n" * 40,
        "AIIMPL_RESULT_TOKEN": "result-token",
        "AIIMPL_PROGRESS_TOKEN": "progress-token",
        "AIIMPL_CONTEXT_TOKEN": "context-token",
    }
    env.update(kw)
    return env


def _run_token(phase: str) -> str:
    from aiimpl_core.auth.tokens import AUD_RESULT, issue_run_token

    return issue_run_token("a-signing-key-the-session-never-checks-0123", 5, phase, AUD_RESULT, 600)


def test_config_defaults() -> None:
    assert SessionConfig.from_environ(base_env(AIIMPL_LOG_URL="https://logs.test/s/1")).log_url == (
        "https://logs.test/s/1")
    cfg = SessionConfig.from_environ(base_env())
    assert cfg.log_url is None
    # a blank review command is none, as every blank setting (it stopped the session: "is empty")
    blank = SessionConfig.from_environ(base_env(AIIMPL_REVIEW_COMMAND="  "))
    assert blank.review_command == cfg.agent_command
    assert cfg.url == "http://o.test" and cfg.max_turns == 50 and cfg.lifetime == 3600
    assert cfg.clone_url == "https://github.com/acme/api.git"
    assert cfg.agent_command.startswith("claude -p {prompt}") and cfg.review_command == cfg.agent_command


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AIIMPL_NONCE": ""}, "AIIMPL_NONCE is not set"),
        ({"AIIMPL_PHASE": "deploy"}, "AIIMPL_PHASE must be planning, implementation or gap-analysis"),
        ({"AIIMPL_REPOSITORY": "acme"}, "AIIMPL_REPOSITORY must be owner/repo"),
        ({"AIIMPL_MAX_TURNS": "many"}, "AIIMPL_MAX_TURNS must be an integer"),
        ({"AIIMPL_LIFETIME_SECONDS": "0"}, "AIIMPL_LIFETIME_SECONDS must be at least 1"),
        # without its branch an implementation committed to the base branch, and asked for a pull
        # request from it into itself
        ({"AIIMPL_BRANCH": ""}, "AIIMPL_BRANCH is not set"),
        ({"AIIMPL_BRANCH": "main"}, "AIIMPL_BRANCH must not be the base branch 'main'"),
        # without it the work was done, pushed and opened, and then could not be reported
        ({"AIIMPL_RESULT_TOKEN": ""}, "AIIMPL_RESULT_TOKEN is not set"),
        ({"AIIMPL_CONTEXT_TOKEN": " "}, "AIIMPL_CONTEXT_TOKEN is not set"),
        # a header cannot carry it: the report failed as it was built, with a traceback, once the
        # work was done
        ({"AIIMPL_RESULT_TOKEN": "eyJ.t\u00f6ken.x"},
         "AIIMPL_RESULT_TOKEN is not a run token the orchestrator issued: it holds characters an HTTP "
         "header cannot carry"),
        ({"AIIMPL_CONTEXT_TOKEN": "eyJ. .x"}, "AIIMPL_CONTEXT_TOKEN is not a run token"),
        ({"AIIMPL_PROGRESS_TOKEN": "eyJ.\n.x"}, "AIIMPL_PROGRESS_TOKEN is not a run token"),
        # the orchestrator refused the result (phase_mismatch) once the work was done
        ({"AIIMPL_PHASE": "planning", "AIIMPL_RESULT_TOKEN": _run_token("implementation")},
         "AIIMPL_PHASE is planning, but the run tokens are for implementation"),
        # the orchestrator refused it with session_created, whose 🚀 comment every session then
        # lacked (and a session that died got no ⚠️ comment from the reconciler either)
        ({"AIIMPL_LOG_URL": "grafana.internal/d/logs"},
         "AIIMPL_LOG_URL must be an http:// or https:// URL with a host, not 'grafana.internal/d/logs'"),
        ({"AIIMPL_LOG_URL": "https://logs.test/" + "x" * 2000},
         "AIIMPL_LOG_URL must be at most 2000 characters"),
    ],
)
def test_config_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SessionConfig.from_environ(base_env(**env))


def test_a_result_token_a_header_cannot_carry_ends_the_session_with_its_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nowhere to report the configuration error with it: said, exit status 2, no traceback, and the
    token (a secret) not quoted."""
    import io

    from aiimpl_core.session.runner import main

    out = io.StringIO()
    token = "eyJ.t\u00f6ken-\U0001f680.x"
    assert main(base_env(AIIMPL_RESULT_TOKEN=token, AIIMPL_URL="http://127.0.0.1:9"), out) == 2
    said = out.getvalue()
    assert said == ("aiimpl session: AIIMPL_RESULT_TOKEN is not a run token the orchestrator issued: it "
                    "holds characters an HTTP header cannot carry\n")
    assert token not in said + capsys.readouterr().err


@pytest.mark.parametrize("branch", [
    "ai/ENG 1", "ai/ENG..1", "-ENG-1", "ai/ENG-1.lock", "ai/ENG@{1}", "ai/ENG\n1", "ai/\x7fENG",
    "ai/ENG\x00", "ai/.ENG-1", "ai//ENG-1", "ai/ENG-1/", "ai/ENG-1.", "ai/ENG~1", "ai/ENG:1", "HEAD",
    "@{-1}",
], ids=repr)
def test_a_branch_name_git_refuses_is_a_configuration_error(branch: str) -> None:
    """It failed only at the checkout, after the token and the context were fetched and the
    repository cloned, with git's own message; now it names the setting before any work (and in
    every phase: planning checks the branch out too)."""
    for phase in ("implementation", "planning"):
        with pytest.raises(ConfigError) as caught:
            SessionConfig.from_environ(base_env(AIIMPL_BRANCH=branch, AIIMPL_PHASE=phase))
        assert caught.value.message == (
            f"AIIMPL_BRANCH must be a name git accepts for a branch (see git check-ref-format), not "
            f"{branch!r}"
        )


@pytest.mark.parametrize("branch", ["ai/ENG-1", "feature/x.y_z+1", "ai/ENG-1@home", "ai/é", "@"])
def test_a_branch_name_git_accepts_is_taken(branch: str) -> None:
    assert SessionConfig.from_environ(base_env(AIIMPL_BRANCH=branch)).branch == branch


def test_the_branch_is_checked_outside_any_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a repository ``git check-ref-format --branch @{-1}`` answers with the branch checked
    out before (and exit 0): the session started in a runner's own checkout must not take it."""
    from .conftest import git

    git("init", "-q", "-b", "main", cwd=tmp_path)
    git("commit", "-q", "--allow-empty", "-m", "x", cwd=tmp_path)
    git("checkout", "-q", "-b", "other", cwd=tmp_path)
    git("checkout", "-q", "main", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert subprocess.run(["git", "check-ref-format", "--branch", "@{-1}"], capture_output=True,
                          text=True, check=True).stdout.strip() == "other"
    with pytest.raises(ConfigError, match="AIIMPL_BRANCH must be a name git accepts"):
        SessionConfig.from_environ(base_env(AIIMPL_BRANCH="@{-1}"))


def test_session_run_without_configuration_exits_2_with_a_clear_message() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aiimpl_core.session", "run"],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "AIIMPL_PHASE is not set" in proc.stderr and "Traceback" not in proc.stderr


def _session_refused(program: list[str], **env: str) -> list[str]:
    """The lines a session logs (standard error) when run with ``program`` against an orchestrator
    that refuses every request (403): it logs its warnings, and ends at once rather than after
    retrying one that cannot be reached."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the handler's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b'{"error": "invalid_nonce"}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    with ServerThread(ThreadingHTTPServer(("127.0.0.1", 0), Refusing)) as orchestrator:
        environ = {"PATH": os.environ["PATH"], **base_env(AIIMPL_URL=orchestrator.url),
                   "AIIMPL_AGENT_COMMAND": "true", "AIIMPL_LIFETIME_SECONDS": "5", **env}
        proc = subprocess.run([sys.executable, *program], capture_output=True, text=True, env=environ,
                              timeout=120)
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("program", [["-m", "aiimpl_core.cli", "session", "run"],
                                     ["-m", "aiimpl_core.session", "run"]], ids=["aiimpl", "module"])
def test_the_session_logs_text_whatever_the_log_format_says(program: list[str]) -> None:
    """A runner's log shows the session's lines: text, as the docs say, through either entry point
    (``aiimpl session run``, which the session image runs, logged JSON lines under the server's
    AIIMPL_LOG_FORMAT=json)."""
    lines = _session_refused(program, AIIMPL_LOG_FORMAT="json", AIIMPL_LOG_LEVEL="INFO")
    assert lines
    assert not [line for line in lines if line.lstrip().startswith("{")], lines


def test_the_session_logs_at_the_level_it_is_given_and_at_warning_for_one_not_valid() -> None:
    """``AIIMPL_LOG_LEVEL``, the one orchestrator setting the session reads (docs/session.md): its
    warnings go out unless it asks for errors only; a level that is not one is taken as WARNING
    (the session does not stop for it)."""
    program = ["-m", "aiimpl_core.session", "run"]

    def warnings(**env: str) -> list[str]:
        return [line for line in _session_refused(program, **env) if " WARNING " in line]

    assert warnings() and warnings(AIIMPL_LOG_LEVEL="loud")
    assert warnings(AIIMPL_LOG_LEVEL="ERROR") == []


def test_web_base() -> None:
    assert web_base("https://api.github.com") == "https://github.com"
    assert web_base("https://ghe.example.com/api/v3") == "https://ghe.example.com"


# -- the open pull request of a branch -----------------------------------------------------------


@pytest.fixture
def full_github(aiimpl_specs_dir: str) -> Iterator[FakeGitHub]:
    with FakeGitHub(spec_path=os.path.join(aiimpl_specs_dir, "github", "rest", "api.github.com.json")) as gh:
        gh.add_repo("acme", "eng", branches=("ai/ENG-1", "ai/ENG-2", "release"))
        yield gh
        gh.assert_clean()  # the listing's requests and answers match GitHub's description


def _pull(gh: FakeGitHub, number: int, head: str, base: str, state: str = "open") -> None:
    # set up directly: the fake refuses a second open pull request per head whatever the base
    gh.pulls.setdefault(("acme", "eng"), []).append(
        PullRequest(number, "acme", "eng", f"PR {number}", head, base, None, state=state)
    )


def test_find_open_pull_request_matches_branch_base_and_state(full_github: FakeGitHub) -> None:
    gh = full_github
    _pull(gh, 1, "ai/ENG-1", "main", state="closed")  # an earlier attempt, closed or merged
    _pull(gh, 2, "ai/ENG-1", "release")  # the same branch into another base
    _pull(gh, 3, "ai/ENG-2", "main")  # another branch

    def find() -> dict[str, Any] | None:
        return find_open_pull_request(
            gh.url, gh.personal_token, "acme", "eng", head="ai/ENG-1", base="main"
        )

    assert find() is None
    _pull(gh, 4, "ai/ENG-1", "main")
    pr = find()
    assert pr is not None and pr["number"] == 4
    assert pr["html_url"] == "https://github.com/acme/eng/pull/4"
    assert pr["head"]["ref"] == "ai/ENG-1" and pr["base"]["ref"] == "main"
    assert "mergeable" not in pr  # listed as GitHub lists pull requests: pull-request-simple
    [request] = gh.server.requests_to("GET", "/repos/acme/eng/pulls")[1:]
    assert request.query == {
        "head": ["acme:ai/ENG-1"], "base": ["main"], "state": ["open"], "per_page": ["100"]
    }


def test_find_ended_pull_request_matches_branch_base_and_the_commit_it_was_merged_or_closed_at(
    full_github: FakeGitHub,
) -> None:
    from datetime import UTC, datetime

    gh = full_github
    tip, older = "a" * 40, "b" * 40

    def closed(number: int, head: str, base: str, sha: str, *, merged: bool = True) -> None:
        _pull(gh, number, head, base, state="closed")
        pr = gh.pulls[("acme", "eng")][-1]
        pr.merged_at, pr.head_sha = (datetime.now(UTC) if merged else None), sha

    def find() -> dict[str, Any] | None:
        return find_ended_pull_request(
            gh.url, gh.personal_token, "acme", "eng", head="ai/ENG-1", base="main", sha=tip
        )

    _pull(gh, 1, "ai/ENG-1", "main")  # open
    gh.pulls[("acme", "eng")][-1].head_sha = tip
    closed(2, "ai/ENG-1", "main", older)  # merged, and the branch got more commits since
    closed(3, "ai/ENG-1", "main", older, merged=False)  # closed, and the branch got more since
    closed(4, "ai/ENG-1", "release", tip)  # the same commit merged into another base
    closed(5, "ai/ENG-2", "main", tip)  # another branch
    closed(6, "ai/ENG-2", "main", tip, merged=False)
    assert find() is None
    closed(7, "ai/ENG-1", "main", tip, merged=False)
    closed(8, "ai/ENG-1", "main", tip, merged=False)
    pr = find()
    assert pr is not None and pr["number"] == 8 and pr["state"] == "closed" and not pr["merged_at"]
    closed(9, "ai/ENG-1", "main", tip)
    closed(10, "ai/ENG-1", "main", tip, merged=False)
    pr = find()  # merged at that commit: its work is the base's, whatever was closed since
    assert pr is not None and pr["number"] == 9 and pr["merged_at"]
    requests_made = gh.server.requests_to("GET", "/repos/acme/eng/pulls")[1:]
    assert {tuple(sorted((k, tuple(v)) for k, v in r.query.items())) for r in requests_made} == {(
        ("base", ("main",)), ("head", ("acme:ai/ENG-1",)), ("per_page", ("100",)), ("state", ("closed",))
    )}


def test_the_pull_request_is_opened_after_the_minute_githubs_secondary_rate_limit_asks_for(
    full_github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run failed with 'PR creation failed with HTTP 403: You have exceeded a secondary rate
    limit', its branch pushed: a POST was not sent again, and no wait over 10 s was waited."""
    waited: list[float] = []
    monkeypatch.setattr(Budget, "sleep", lambda self, seconds: waited.append(seconds))
    full_github.fail_next("POST", "/pulls$", 403, "You have exceeded a secondary rate limit.",
                          headers={"retry-after": "60"})
    pr = open_pull_request(full_github.url, full_github.personal_token, "acme", "eng", title="ENG-1: t",
                           body="b", head="ai/ENG-1", base="main")
    assert waited == [60.0] and pr["number"] == 1
    assert len(full_github.pulls[("acme", "eng")]) == 1


def test_find_open_pull_request_raises_githubs_refusal(full_github: FakeGitHub) -> None:
    with pytest.raises(PullRequestError) as err:
        find_open_pull_request(full_github.url, "ghs_not-a-token", "acme", "eng", head="x", base="main")
    assert err.value.status == 401 and str(err.value) == "PR creation failed with HTTP 401: Bad credentials"


def test_no_github_call_is_made_once_the_session_was_stopped(full_github: FakeGitHub) -> None:
    stop = threading.Event()
    stop.set()
    before = len(full_github.server.requests_to("GET", "/repos/acme/eng/pulls"))

    with pytest.raises(Interrupted) as err:
        find_open_pull_request(full_github.url, full_github.personal_token, "acme", "eng", head="ai/ENG-1",
                               base="main", budget=Budget(stop=stop))

    assert err.value.stopped == "signal"
    assert len(full_github.server.requests_to("GET", "/repos/acme/eng/pulls")) == before


@pytest.mark.parametrize("ends", ["deadline", "signal"])
def test_a_github_call_without_an_answer_is_given_up_its_grace_after_the_budget_ends(
    full_github: FakeGitHub, ends: str
) -> None:
    """GitHub does not answer (its answer 30 s away, longer than the budget): the call is given up
    its grace after the budget's end or a stop, not after its read timeout and retries."""
    full_github.delay_next("GET", r"^/repos/acme/eng/pulls$", 30)
    stop = threading.Event()
    if ends == "signal":
        threading.Timer(0.5, stop.set).start()
        budget = Budget(stop=stop, grace=0.5)
    else:
        budget = Budget(deadline=time.monotonic() + 0.5, grace=0.5)
    started = time.monotonic()

    with pytest.raises(Interrupted) as err:
        find_ended_pull_request(full_github.url, full_github.personal_token, "acme", "eng", head="ai/ENG-1",
                                base="main", sha="a" * 40, budget=budget)

    assert err.value.stopped == ends
    assert time.monotonic() - started < 5


def test_fake_github_lists_pull_requests_as_githubs_description_says(full_github: FakeGitHub) -> None:
    gh = full_github
    _pull(gh, 1, "ai/ENG-1", "main", state="closed")
    _pull(gh, 2, "ai/ENG-2", "main")
    auth = {"Authorization": f"Bearer {gh.personal_token}"}

    def numbers(**params: str) -> list[int]:
        resp = requests.get(f"{gh.url}/repos/acme/eng/pulls", params=params, headers=auth, timeout=10)
        assert resp.status_code == 200, resp.text
        return [p["number"] for p in resp.json()]

    assert numbers() == [2]  # state defaults to open
    assert numbers(state="all") == [2, 1]  # newest first
    assert numbers(state="all", direction="asc") == [1, 2]
    assert numbers(state="closed", head="acme:ai/ENG-1") == [1]
    assert numbers(state="all", head="other:ai/ENG-1") == []
    assert numbers(state="all", base="release") == []
    assert numbers(state="all", per_page="1", page="2") == [1]
    bad = requests.get(f"{gh.url}/repos/acme/eng/pulls", params={"state": "merged"}, headers=auth, timeout=10)
    assert bad.status_code == 422 and bad.json()["message"] == "Validation Failed"
    # the description rejects that state too: the fake's validator noticed it
    assert any("state" in v for v in gh.violations)
    gh.server.violations.clear()


def test_fake_github_checks_the_listing_against_the_description_it_was_given() -> None:
    """The fast subset lacks ``pulls/list``: a session test that lists asks for the full one."""
    with FakeGitHub() as gh:
        gh.add_repo("acme", "eng")
        resp = requests.get(
            f"{gh.url}/repos/acme/eng/pulls",
            headers={"Authorization": f"Bearer {gh.personal_token}"},
            timeout=10,
        )
        assert resp.status_code == 200 and resp.json() == []
        assert gh.violations and "GET /repos/acme/eng/pulls" in gh.violations[0]


def test_format_duration() -> None:
    assert [format_duration(s) for s in (4, 65, 3725)] == ["4s", "1m 05s", "1h 02m 05s"]


# -- the credential helper ----------------------------------------------------------------------


def test_git_environment_adds_the_helper_after_existing_config_entries(tmp_path: Path) -> None:
    env = git_environment(
        {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "core.x",
            "GIT_CONFIG_VALUE_0": "y",
            "GIT_ASKPASS": "/bin/pass",
        },
        str(tmp_path / "t.json"),
    )
    assert env["GIT_CONFIG_COUNT"] == "3" and env["GIT_CONFIG_KEY_0"] == "core.x"
    assert (env["GIT_CONFIG_KEY_1"], env["GIT_CONFIG_VALUE_1"]) == ("credential.helper", "")
    assert env["GIT_CONFIG_VALUE_2"].endswith("-m aiimpl_core.session.credential")
    assert "GIT_ASKPASS" not in env and env["GIT_TERMINAL_PROMPT"] == "0"


def test_credential_helper_answers_from_a_fresh_cached_token(tmp_path: Path) -> None:
    cache = TokenCache(str(tmp_path / "tokens.json"))
    cache.add(RepoToken("ghs_old_one_expired", time.time() - 10))
    cache.add(RepoToken("ghs_fresh_token_123", time.time() + 3600))
    env = {
        **os.environ,
        E.CREDENTIAL_CACHE.name: cache.path,
        "AIIMPL_URL": "http://127.0.0.1:9",
        "AIIMPL_NONCE": "x",
        "AIIMPL_REPOSITORY": "acme/api",
        "AIIMPL_REPORT_RETRY_SECONDS": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "aiimpl_core.session.credential", "get"],
        input="protocol=https\nhost=github.com\n\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.stdout == "username=x-access-token\npassword=ghs_fresh_token_123\n"
    assert oct(os.stat(cache.path).st_mode & 0o777) == "0o600"


def test_credential_helper_answers_only_for_the_clones_host(tmp_path: Path) -> None:
    """A remote the repository's configuration (or the agent) pointed at another host is never
    sent the token."""
    cache = TokenCache(str(tmp_path / "tokens.json"))
    cache.add(RepoToken("ghs_fresh_token_456", time.time() + 3600))
    base = git_environment({**os.environ, "AIIMPL_URL": "http://127.0.0.1:9", "AIIMPL_NONCE": "x",
                            "AIIMPL_REPOSITORY": "acme/api"}, cache.path, "https://github.com/acme/api.git")

    def ask(request: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "aiimpl_core.session.credential", "get"], input=request,
                              capture_output=True, text=True, env=base, timeout=60)

    assert ask("protocol=https\nhost=github.com\n\n").stdout.endswith("password=ghs_fresh_token_456\n")
    for elsewhere in ("protocol=https\nhost=evil.example\n\n", "protocol=http\nhost=github.com\n\n"):
        refused = ask(elsewhere)
        assert refused.stdout == "" and "ghs_" not in refused.stderr
        assert "no token for" in refused.stderr


def test_credential_helper_failure_says_nothing_secret(tmp_path: Path) -> None:
    env = {
        **os.environ,
        E.CREDENTIAL_CACHE.name: str(tmp_path / "none.json"),
        "AIIMPL_URL": "http://127.0.0.1:9",
        "AIIMPL_NONCE": "the-nonce-value",
        "AIIMPL_REPOSITORY": "acme/api",
        "AIIMPL_REPORT_RETRY_SECONDS": "2",  # it waits out an orchestrator that cannot be reached
    }
    proc = subprocess.run(
        [sys.executable, "-m", "aiimpl_core.session.credential", "get"],
        input="\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == ""
    assert "could not get a repository token" in proc.stderr and "the-nonce-value" not in proc.stderr


def test_credential_helper_asks_with_the_nonce_and_url_as_the_session_reads_them() -> None:
    """A value read from a file may end with a line break: the session trims its nonce and URL, and
    so does its credential helper (its token request, inside a push, was refused as ``Invalid or
    expired nonce``)."""
    from aiimpl_core.session import credential

    client = credential.orchestrator({"AIIMPL_URL": " http://127.0.0.1:9/\n", "AIIMPL_NONCE": " the-nonce\n"})
    assert client.nonce == "the-nonce" and client.http.base_url == "http://127.0.0.1:9"


# -- light dependencies ------------------------------------------------------------------------------


def test_session_package_imports_without_flask_or_sqlalchemy() -> None:
    code = textwrap.dedent("""
        import sys
        BLOCKED = {"flask", "flask_sqlalchemy", "flask_migrate", "sqlalchemy", "alembic", "werkzeug",
                   "marshmallow", "apispec", "jwt", "psycopg"}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import aiimpl_core.session.runner, aiimpl_core.session.cli, aiimpl_core.session.credential
        from aiimpl_core.session.cli import session_group
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_aiimpl_session_is_a_command_of_the_main_cli() -> None:
    from click.testing import CliRunner

    from aiimpl_core.cli import cli
    from aiimpl_core.cli import session as _session  # noqa: F401 - registers the group

    result = CliRunner().invoke(cli, ["session", "env"])
    assert result.exit_code == 0, result.output
    assert "AIIMPL_AGENT_COMMAND" in result.output and "AIIMPL_MAX_TURNS" in result.output


#: what the orchestrator's CLI loads and the session program does not need
ORCHESTRATOR_MODULES = ("flask", "sqlalchemy", "alembic", "flask_migrate", "aiimpl_core.cli",
                        "aiimpl_core.app", "aiimpl_linear", "aiimpl_jira", "aiimpl_gha", "aiimpl_fly",
                        "aiimpl_docker")


def test_the_aiimpl_script_runs_the_session_without_loading_the_orchestrator() -> None:
    """Every runner starts ``aiimpl session run``: the script runs the session's own group, without
    the orchestrator's CLI, its settings and its plugins (about a second of CPU before each session)."""
    code = (
        "import atexit, sys\n"
        f"heavy = {ORCHESTRATOR_MODULES!r}\n"
        "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules if m in heavy "
        "or m.startswith(tuple(h + '.' for h in heavy)))))\n"
        "sys.argv = ['aiimpl', 'session', 'env']\n"
        "from aiimpl_core._entry import main\n"
        "main()\n"
    )
    # a setting the orchestrator would refuse at start changes nothing for a session
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "AIIMPL_POLL_INTERVAL": "0", "RUNNER_MODE": "bogus"})
    assert done.returncode == 0, done.stderr
    assert "AIIMPL_AGENT_COMMAND" in done.stdout
    assert done.stdout.splitlines()[-1] == "LOADED []"


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["env", "--help"], [], ["bogus"]],
                         ids=lambda a: " ".join(a) or "none")
def test_the_session_group_answers_as_the_main_cli_s_session_command(args: list[str]) -> None:
    from click.testing import CliRunner

    from aiimpl_core.cli import cli
    from aiimpl_core.cli import session as _session  # noqa: F401 - registers the group
    from aiimpl_core.session.cli import session_group

    alone = CliRunner().invoke(session_group, args, prog_name="aiimpl session")
    within = CliRunner().invoke(cli, ["session", *args], prog_name="aiimpl")
    assert (alone.exit_code, alone.output) == (within.exit_code, within.output)
    assert "aiimpl session" in alone.output


def test_docs_show_the_environment_tables_as_the_code_defines_them() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "session.md").read_text()
    assert E.markdown_table(E.ALL) in doc
    assert E.markdown_table(E.OPTIONAL) in doc


def test_values_of_variables_named_like_secrets_are_redacted_even_when_unlisted(tmp_path: Path) -> None:
    from aiimpl_core.session.runner import Session

    env = base_env(
        AIIMPL_SECRET_NAMES="LISTED",
        LISTED="listed-value-1234",
        GITHUB_TOKEN="ghp_runner_own_token_99",
        AWS_SECRET_ACCESS_KEY="aws/secret+key=123",
        AIIMPL_TOKEN_REFRESH_SECONDS="300",
        PLAIN="not-a-secret-value",
    )
    session = Session(SessionConfig.from_environ(env), env)
    try:
        text = session.redactor.text(
            "listed-value-1234 ghp_runner_own_token_99 aws%2Fsecret%2Bkey%3D123 not-a-secret-value 300 "
            + "n" * 40
        )
    finally:
        import shutil

        shutil.rmtree(session.state_dir)
    assert text == f"{MASK} {MASK} {MASK} not-a-secret-value 300 {MASK}"


def test_credential_helper_erase_makes_the_next_get_fetch_a_new_token(tmp_path: Path) -> None:
    cache = TokenCache(str(tmp_path / "tokens.json"))
    cache.add(RepoToken("ghs_revoked_by_github_1", time.time() + 3600))
    env = {
        **os.environ,
        E.CREDENTIAL_CACHE.name: cache.path,
        "AIIMPL_URL": "http://127.0.0.1:9",
        "AIIMPL_NONCE": "x",
        "AIIMPL_REPOSITORY": "acme/api",
        "AIIMPL_REPORT_RETRY_SECONDS": "2",
    }
    helper = [sys.executable, "-m", "aiimpl_core.session.credential"]
    request = "protocol=https\nhost=github.com\nusername=x-access-token\npassword=ghs_revoked_by_github_1\n\n"
    subprocess.run([*helper, "erase"], input=request, text=True, env=env, check=True, timeout=60)

    assert cache.current(60) is None
    assert [t.token for t in cache.load()] == ["ghs_revoked_by_github_1"]  # still known, for redaction
    proc = subprocess.run([*helper, "get"], input="\n", capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout == ""  # it tried the orchestrator (unreachable here) instead of the refused token


def test_the_prompt_says_when_older_comments_were_left_out() -> None:
    ctx = {"issue": {"key": "ENG-1", "title": "T", "comments": [{"body": "the newest", "author": "ana"}],
                     "commentsOmitted": 120}}
    text = prompts.planning(ctx)
    assert "(120 older comments are left out; the newest follow.)" in text
    assert text.index("older comments") < text.index("the newest")
    assert "left out" not in prompts.planning({"issue": {**ctx["issue"], "commentsOmitted": 0}})


def test_a_repository_token_is_asked_again_after_a_proxys_502() -> None:
    """Minting a token is safe to repeat: one 502 of a proxy in front of the orchestrator does not
    fail the job."""
    from werkzeug.wrappers import Request, Response

    answers = [Response("<html>502 Bad Gateway</html>", status=502),
               Response('{"token": "ghs_after_a_retry_789", "expiresAt": "2099-01-01T00:00:00Z"}',
                        mimetype="application/json")]
    seen: list[str] = []

    @Request.application
    def orchestrator(request: Request) -> Response:
        seen.append(request.path)
        return answers.pop(0)

    with serve_wsgi(orchestrator, threaded=False) as live:
        client = Orchestrator(live.url, "nonce-1", {}, Redactor())
        client.http.sleep = lambda _seconds: None
        assert client.repository_token("acme").token == "ghs_after_a_retry_789"
    assert seen == ["/api/token", "/api/token"]


def test_the_review_diff_shows_only_what_the_branch_changed(tmp_path: Path) -> None:
    """A resumed branch started from an older base: the base's later commits are not shown to the
    reviewer as deletions."""
    from aiimpl_core.session.git import Git

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}
    git = Git(str(tmp_path), env)
    git.run("init", "-q", "-b", "main", str(tmp_path), cwd=str(tmp_path))
    (tmp_path / "README.md").write_text("# r\n")
    git.commit_all("start")
    git.run("checkout", "-q", "-b", "ai/ENG-1")
    (tmp_path / "feature.py").write_text("print('the branch')\n")
    git.commit_all("the branch's work")
    git.run("checkout", "-q", "main")
    (tmp_path / "landed_on_main.py").write_text("print('main moved on')\n")
    base = git.commit_all("main moves on")
    git.run("checkout", "-q", "ai/ENG-1")
    diff = git.diff(str(base))
    assert "feature.py" in diff and "landed_on_main.py" not in diff


def test_a_merged_branch_is_replaced_only_while_it_is_where_it_was_merged(tmp_path: Path) -> None:
    """The push over a branch merged as it stands leases it at that commit: a commit someone pushed
    to the branch meanwhile is never overwritten; without a lease the push is never forced."""
    from aiimpl_core.session.git import Git, GitError

    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}
    remote, work, other = tmp_path / "remote.git", tmp_path / "work", tmp_path / "other"
    seed = Git(str(tmp_path), env)
    seed.run("init", "-q", "--bare", "-b", "main", str(remote))
    seed.run("clone", "-q", str(remote), str(other))
    by_hand = Git(str(other), env)
    by_hand.run("checkout", "-q", "-b", "main")
    (other / "README.md").write_text("# r\n")
    by_hand.commit_all("start")
    by_hand.run("push", "-q", "origin", "HEAD:refs/heads/main")
    (other / "feature.py").write_text("print('merged already')\n")
    merged = by_hand.commit_all("the merged work")
    by_hand.run("push", "-q", "origin", "HEAD:refs/heads/ai/ENG-1")

    git = Git(str(work), env)
    git.clone(f"file://{remote}", "main", str(work))
    assert git.remote_branch_tip("ai/ENG-1") == merged and git.remote_branch_tip("ai/ENG-2") is None
    git.checkout_new("ai/ENG-1")  # started over from main
    (work / "new.py").write_text("print('the new work')\n")
    git.commit_all("the new work")
    with pytest.raises(GitError, match="rejected"):
        git.push("ai/ENG-1")  # never forced
    (other / "later.py").write_text("print('pushed meanwhile')\n")
    later = by_hand.commit_all("pushed meanwhile")
    by_hand.run("push", "-q", "origin", "HEAD:refs/heads/ai/ENG-1")
    with pytest.raises(GitError, match="stale info"):
        git.push("ai/ENG-1", replacing=str(merged))  # the branch is no longer where it was merged
    assert by_hand.run("ls-remote", "origin", "refs/heads/ai/ENG-1").stdout.split()[0] == later

    by_hand.run("push", "-q", "--force", "origin", f"{merged}:refs/heads/ai/ENG-1")
    git.push("ai/ENG-1", replacing=str(merged))
    assert by_hand.run("ls-remote", "origin", "refs/heads/ai/ENG-1").stdout.split()[0] == git.head()


def test_a_prompt_too_long_for_an_argument_points_the_agent_at_its_file(tmp_path: Path) -> None:
    """Linux refuses one argument over 128 KiB: an issue with a long description (or a review's
    diff) would fail the run with E2BIG. The agent is pointed at the prompt's file instead."""
    from aiimpl_core.session.agent import MAX_PROMPT_ARG_BYTES

    template = "claude -p {prompt} --max-turns {max_turns}"
    short, _ = build_command(template, "fix the bug", "/tmp/p.md", 5)
    assert short == ["claude", "-p", "fix the bug", "--max-turns", "5"]
    long_prompt = "é" * (MAX_PROMPT_ARG_BYTES // 2 + 1)  # over the limit in bytes, not in characters
    argv, stdin = build_command(template, long_prompt, "/tmp/p.md", 5)
    assert stdin is None and argv[2].startswith("Your task is too long for the command line")
    assert "/tmp/p.md" in argv[2]
    piped, stdin = build_command("my-agent --turns {max_turns}", long_prompt, "/tmp/p.md", 5)
    assert piped == ["my-agent", "--turns", "5"] and stdin == long_prompt
    # an argument the kernel refuses all the same is a failed run, never a crash of the session
    refused = procs.run([sys.executable, "-c", "pass", "x" * 200_000])
    assert refused.code == 126 and "too long" in refused.stderr.lower()


@pytest.mark.parametrize("template", ["{python} -c {script} {prompt}", "{python} -c {script} -"])
def test_a_prompt_holding_a_nul_or_half_an_emoji_still_runs_the_agent(tmp_path: Path, template: str) -> None:
    """A NUL (a test's output quoted in the review's prompt, a tracker comment) or a lone surrogate
    (half an emoji): the agent step failed with 'the session program failed unexpectedly
    (ValueError: embedded null byte)', a PR already open. Each is written as U+FFFD."""
    from aiimpl_core.session.agent import run_agent

    script = ("import sys; t = sys.argv[1] if sys.argv[1] != '-' else sys.stdin.read(); "
              "print(ascii(t)); print(ascii(open(__import__('os').environ['AIIMPL_PROMPT_FILE']).read()))")
    command = template.format(python=sys.executable, script=shlex.quote(script), prompt="{prompt}")
    run = run_agent(command, "snapshot mismatch: \x00\x01 and \ud83d!", max_turns=1, cwd=str(tmp_path),
                    env=dict(os.environ), state_dir=str(tmp_path))
    assert run.process.code == 0, run.process.output
    assert run.process.stdout.split("\n")[:2] == ["'snapshot mismatch: \\ufffd\\x01 and \\ufffd!'"] * 2
    # and a command line that holds one all the same is a run that failed, never a crash
    refused = procs.run(["echo", "a\x00b"])
    assert refused.code == 126 and "null" in refused.stderr
    refused = procs.run(["echo", "ok"], env={"A": "b\x00"})
    assert refused.code == 126


def test_an_agent_that_never_reads_its_input_is_still_stopped_at_the_deadline() -> None:
    started = time.monotonic()
    result = procs.run(["sleep", "30"], stdin="x" * 1_000_000, deadline=time.monotonic() + 1, grace=1)
    assert result.stopped == "deadline" and time.monotonic() - started < 10


def test_a_slow_orchestrator_holds_a_progress_report_seconds_not_minutes() -> None:
    """Reports are best effort: an orchestrator that takes long to answer costs each one its short
    timeout, tried again for the report's patience at most (here 2 s), never the run's budget."""
    import threading

    from werkzeug.wrappers import Request, Response

    released = threading.Event()

    @Request.application
    def slow(request: Request) -> Response:
        released.wait(3)
        return Response("{}", mimetype="application/json")

    # (quiet: answered after the test, its access line would land in a later test's log)
    with serve_wsgi(slow, request_handler=QuietRequestHandler) as live:
        try:
            client = Orchestrator(live.url, "nonce-1", {}, Redactor(), report_timeout=0.3, report_patience=2)
            client.http.sleep = lambda _seconds: None
            started = time.monotonic()
            assert client.step({"id": "s", "type": "agent", "status": "running", "started_at": "x"}) is False
            assert client.status("environment_ready") is False
            assert time.monotonic() - started < 8  # the default 30 s timeout: 18 s and more
        finally:
            released.set()  # the held request ends before the server stops


def test_only_the_end_of_a_huge_output_is_read_back() -> None:
    """An agent that prints tens of megabytes: the session keeps the end (where the result and the
    errors are), not all of it in memory; git's output (the secret check reads it) is never cut."""
    script = "import sys\nsys.stdout.write('x' * 30_000_000)\nsys.stdout.write('\\nthe end')\n"
    result = procs.run([sys.executable, "-c", script], keep_bytes=1_000_000)
    assert result.stdout.startswith("… (29,000,008 bytes of output before this left out)\n")
    assert result.stdout.endswith("the end") and len(result.stdout) < 1_100_000
    whole = procs.run([sys.executable, "-c", "print('y' * 2_000_000)"])
    assert len(whole.stdout) == 2_000_001


def test_the_names_that_say_a_secret_leave_the_issue_key_alone() -> None:
    """A name ending in _KEY is no secret's by that alone: AIIMPL_ISSUE_KEY's value (ENG-123) would
    have been masked in every comment and refused in every commit."""
    from aiimpl_core.session.env import LIKELY_SECRET_NAME

    assert not LIKELY_SECRET_NAME.search("AIIMPL_ISSUE_KEY")
    for name in ("SSH_PASSPHRASE", "DB_PASSWD", "ANTHROPIC_API_KEY", "GITHUB_TOKEN"):
        assert LIKELY_SECRET_NAME.search(name), name


def test_the_pull_request_looked_for_after_a_stop_keeps_out_of_the_time_to_report(monkeypatch) -> None:
    """Looked for within 5 s, and never into the last seconds kept to report the result: a session
    whose budget is that far spent does not ask at all."""
    from types import SimpleNamespace

    from aiimpl_core.session import runner

    asked: list[float | None] = []

    def find(*args: Any, budget: Any, **kw: Any) -> None:
        asked.append(budget.deadline)

    monkeypatch.setattr(runner, "find_open_pull_request", find)
    cfg = SimpleNamespace(lifetime=100, github_api_url="https://api.github.test", owner="acme", repo="api",
                          branch="ai/ENG-1", base_branch="main")
    now = time.monotonic()
    session = SimpleNamespace(cfg=cfg, started=now - 50, log=lambda line: None)
    runner.Session._opened_all_the_same(session, "token")
    assert asked and asked[0] <= time.monotonic() + runner.PR_LOOKUP_AFTER_STOP
    asked.clear()
    session.started = now - 100 + runner.REPORT_TIME - 1  # within the last seconds kept to report
    assert runner.Session._opened_all_the_same(session, "token") is None and asked == []


class _Answering:
    """A GitHub client whose every call is answered ``data`` (status 200, or 201 to a POST)."""

    def __init__(self, data: Any, links: dict[str, Any] | None = None) -> None:
        self.data, self.links = data, links or {}

    def get(self, path: str, params: dict[str, Any]) -> Any:
        return type("Resp", (), {"status_code": 200, "links": self.links})()

    def post(self, path: str, json: dict[str, Any]) -> Any:
        return type("Resp", (), {"status_code": 201, "links": self.links})()

    def json(self, resp: Any) -> Any:
        return self.data


def _listed(number: int, head: str = "ai/ENG-1") -> dict[str, Any]:
    return {"number": number, "state": "open", "merged_at": None,
            "html_url": f"https://github.com/acme/eng/pull/{number}",
            "head": {"ref": head, "sha": "a" * 40, "repo": {"full_name": "acme/eng"}},
            "base": {"ref": "main"}}


@pytest.mark.parametrize("answer, links", [
    (["not a pull request"], None),  # the one open, unreadable
    ([{"number": 1, "state": "open"}], None),  # no head, base nor link: unreadable too
    ([_listed(n, head="other") for n in range(1, 101)], None),  # a full page: more may follow
    ([_listed(1, head="other")], {"next": {"url": "https://api.github.com/x?page=2"}}),
])
def test_find_open_pull_request_does_not_conclude_none_from_a_listing_not_read_whole(
    monkeypatch: pytest.MonkeyPatch, answer: list[Any], links: dict[str, Any] | None
) -> None:
    """"None open" would start a branch over (its push replacing an open pull request's work)."""
    from aiimpl_core.session import github

    monkeypatch.setattr(github, "_client", lambda *args: _Answering(answer, links))
    with pytest.raises(PullRequestError) as err:
        find_open_pull_request("https://api.github.com", "t", "acme", "eng", head="ai/ENG-1", base="main")
    assert str(err.value) == (
        "PR creation failed with HTTP 200: GitHub answered a list of pull requests not read whole")


def test_find_open_pull_request_concludes_none_from_a_listing_read_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiimpl_core.session import github

    monkeypatch.setattr(github, "_client", lambda *args: _Answering([_listed(1, head="other")]))
    assert find_open_pull_request("https://api.github.com", "t", "acme", "eng", head="ai/ENG-1",
                                  base="main") is None
    monkeypatch.setattr(github, "_client", lambda *args: _Answering(["junk", _listed(2)]))
    pr = find_open_pull_request("https://api.github.com", "t", "acme", "eng", head="ai/ENG-1", base="main")
    assert pr is not None and pr["number"] == 2


@pytest.mark.parametrize("answer", [
    {k: v for k, v in _listed(5).items() if k != "html_url"},
    {**_listed(5), "html_url": 5},
    {**_listed(5), "number": True},
])
def test_a_created_pull_request_answered_without_its_number_or_link_is_no_pull_request(
    monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any]
) -> None:
    """Taken as opened, the run would report a success without the pull request's link (which the
    orchestrator refuses: missing_prUrl); refused instead, the open one is looked up."""
    from aiimpl_core.session import github

    monkeypatch.setattr(github, "_client", lambda *args: _Answering(answer))
    with pytest.raises(PullRequestError) as err:
        open_pull_request("https://api.github.com", "t", "acme", "eng", title="ENG-1: t", body="b",
                          head="ai/ENG-1", base="main")
    assert str(err.value) == "PR creation failed with HTTP 201: GitHub answered without a pull request"
