"""Running the coding agent (Claude Code headless by default) and reading what it reports.

The command is shell words with placeholders (``{prompt}``, ``{prompt_file}``, ``{max_turns}``);
without a prompt placeholder the prompt goes to standard input, so any agent that reads a prompt
and edits files can take Claude Code's place. Claude Code's ``--output-format json`` answer
(``result``, ``is_error``, ``subtype``, ``num_turns``, ``total_cost_usd``) is read when present.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import procs
from .api import sendable_text
from .redact import map_strings

MAX_TURNS_RE = re.compile(r"Reached max turns(?: \((\d+)\))?", re.IGNORECASE)


@dataclass
class AgentRun:
    """One agent invocation: how it ended and what it reported."""

    process: procs.ProcessResult
    report: dict[str, Any] | None
    max_turns: int

    @property
    def exit_code(self) -> int:
        return self.process.code

    @property
    def stopped(self) -> str | None:
        return self.process.stopped

    @property
    def text(self) -> str:
        """The agent's final answer: Claude Code's ``result``, else its standard output."""
        if self.report is not None and isinstance(self.report.get("result"), str):
            return self.report["result"]
        return self.process.stdout.strip()

    @property
    def cost_usd(self) -> float | None:
        value = (self.report or {}).get("total_cost_usd")
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        try:
            cost = float(value)
        except OverflowError:  # an integer past a float's range
            return None
        # (JSON reads NaN, Infinity and 1e999, which no cost is and no JSON body can carry)
        return cost if math.isfinite(cost) else None

    @property
    def turns(self) -> int | None:
        value = (self.report or {}).get("num_turns")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def reported_error(self) -> bool:
        return bool((self.report or {}).get("is_error")) or str(
            (self.report or {}).get("subtype", "")
        ).startswith("error")

    @property
    def hit_max_turns(self) -> bool:
        if (self.report or {}).get("subtype") == "error_max_turns":
            return True
        return bool(MAX_TURNS_RE.search(self.process.output))

    @property
    def failed(self) -> bool:
        return self.stopped is None and (self.exit_code != 0 or self.reported_error)

    def failure_reason(self) -> str:
        """The reference's wording: ``LLM invocation failed with exit code N: …``."""
        code = self.exit_code if self.exit_code != 0 else 1
        if self.hit_max_turns:
            match = MAX_TURNS_RE.search(self.process.output)
            limit = match.group(1) if match and match.group(1) else str(self.max_turns)
            return f"LLM invocation failed with exit code {code}: Reached max turns ({limit})"
        detail = self.text if self.reported_error and self.text else self.process.output
        detail = procs.tail(detail, 600) or "no output"
        return f"LLM invocation failed with exit code {code}: {detail}"


def parse_report(stdout: str) -> dict[str, Any] | None:
    """Claude Code's JSON result: the whole output, or the last JSON line of type ``result``."""
    text = stdout.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            return value
        if isinstance(value, list):  # verbose JSON mode prints the message list
            results = [v for v in value if isinstance(v, dict) and v.get("type") == "result"]
            return results[-1] if results else None
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict) and (value.get("type") == "result" or "result" in value):
                return value
    return None


#: the longest prompt passed as an argument (Linux refuses one argument over 128 KiB: E2BIG)
MAX_PROMPT_ARG_BYTES = 100_000
#: what ``{prompt}`` becomes for a longer prompt
POINTER = ("Your task is too long for the command line: it is written in the file {prompt_file}. "
           "Read that file first, whole, and do what it says.")


def build_command(
    template: str, prompt: str, prompt_file: str, max_turns: int
) -> tuple[list[str], str | None]:
    """The argv of the agent and the text for its stdin (``None`` when the prompt is an argument)."""
    words = shlex.split(template)
    if not words:
        raise ValueError("the agent command is empty")
    uses_prompt = any("{prompt}" in w or "{prompt_file}" in w for w in words)
    inline = prompt
    if len(prompt.encode()) > MAX_PROMPT_ARG_BYTES and any("{prompt}" in w for w in words):
        # one argument of the kernel's is at most 128 KiB (an issue with a long description, a
        # review's diff): the agent is pointed at the file that holds the prompt instead
        inline = POINTER.format(prompt_file=prompt_file)
    values = {"prompt": inline, "prompt_file": prompt_file, "max_turns": str(max_turns)}
    argv = [_fill(w, values) for w in words]
    return argv, None if uses_prompt else prompt


def _fill(word: str, values: Mapping[str, str]) -> str:
    # placeholders only, so braces elsewhere in a word (JSON, shell) stay as they are
    return re.sub(r"\{(prompt|prompt_file|max_turns)\}", lambda m: values[m.group(1)], word)


def run_agent(
    template: str,
    prompt: str,
    *,
    max_turns: int,
    cwd: str,
    env: Mapping[str, str],
    state_dir: str,
    name: str = "agent",
    deadline: float | None = None,
    stop: threading.Event | None = None,
    clean: Callable[[str], str] | None = None,
) -> AgentRun:
    """Run the agent once in ``cwd`` until it exits, the deadline passes or ``stop`` is set.

    :param clean: applied to the agent's whole output and to every text of its report (the
        session's redaction) before anything is read from them: the reason and excerpts are cut
        from masked text, so a cut never leaves a part of a secret behind.
    """
    # a NUL or half an emoji from the comments, a test's output or the diff: no command
    # line holds a NUL, no UTF-8 file a lone surrogate (the step failed on either, the PR open)
    prompt = sendable_text(prompt)
    prompt_file = os.path.join(state_dir, f"{name}-prompt.md")
    with open(prompt_file, "w", encoding="utf-8") as fh:
        fh.write(prompt)
    argv, stdin = build_command(template, prompt, prompt_file, max_turns)
    agent_env = dict(env)
    agent_env["AIIMPL_PROMPT_FILE"] = prompt_file
    result = procs.run(argv, cwd=cwd, env=agent_env, stdin=stdin, deadline=deadline, stop=stop,
                       keep_bytes=procs.KEEP_OUTPUT_BYTES)
    report = parse_report(result.stdout)
    if clean is not None:
        result = replace(result, stdout=clean(result.stdout), stderr=clean(result.stderr))
        report = map_strings(report, clean) if report is not None else None
    return AgentRun(result, report, max_turns)
