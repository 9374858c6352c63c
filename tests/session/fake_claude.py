"""A stand-in for the Claude Code CLI (``claude -p PROMPT --output-format json --max-turns N``).

Installed as ``claude`` on the session's PATH by the tests. It checks the arguments the session
passes, records each call, and behaves as ``FAKE_AGENT_MODE`` says (set through the mapping's
``extraEnv``, so it reaches the agent the way any operator setting would):

``edit`` (default) edits files; ``noop`` changes nothing; ``max_turns`` edits a little, then
ends as Claude Code does at its turn limit; ``error`` fails like an API error; ``leak`` prints
the model API key (plain, split across lines, URL-encoded) and fails; ``slow`` edits, then
sleeps ``FAKE_AGENT_SLEEP`` seconds; ``hang`` edits, then never finishes; ``dotenv`` edits and
writes the model API key into ``.env`` (``dotenv_max_turns``: and ends at its turn limit);
``verify_rewrite`` edits and rewrites ``.ai-implement/verify.sh`` to ``exit 0``, ``verify_delete``
edits and deletes it. ``FAKE_AGENT_COST`` sets the cost an edit reports.
The post-push review answers as ``FAKE_REVIEW`` says (``approve``, ``block``, ``mumble``, or
``unapproved`` without a blocker that says anything).
"""

from __future__ import annotations

import json
import os
import sys
import time
from urllib.parse import quote

REVIEW_MARKER = "You are the post-push reviewer"


def report(result: str, *, turns: int, cost: float, subtype: str = "success", is_error: bool = False) -> None:
    print(
        json.dumps(
            {
                "type": "result",
                "subtype": subtype,
                "is_error": is_error,
                "result": result,
                "num_turns": turns,
                "total_cost_usd": cost,
                "duration_ms": 1234,
                "session_id": "00000000-0000-0000-0000-000000000000",
            }
        )
    )


def main(argv: list[str]) -> int:
    if "-p" not in argv or argv.count("--output-format") != 1 or "--max-turns" not in argv:
        print(f"fake claude: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 64
    prompt = argv[argv.index("-p") + 1]
    output_format = argv[argv.index("--output-format") + 1]
    max_turns = int(argv[argv.index("--max-turns") + 1])
    if output_format != "json":
        print("fake claude: expected --output-format json", file=sys.stderr)
        return 64
    log = os.environ.get("FAKE_AGENT_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {
                        "prompt": prompt,
                        "options": [a for a in argv[1:] if a != prompt],
                        "max_turns": max_turns,
                        "cwd": os.getcwd(),
                        "env_names": sorted(os.environ),
                    }
                )
                + "\n"
            )

    if REVIEW_MARKER in prompt:
        verdict = os.environ.get("FAKE_REVIEW", "approve")
        if verdict == "approve":
            report(
                'The change does what the issue asks.\n{"approved": true, "blockers": []}', turns=2, cost=0.05
            )
        elif verdict == "block":
            report(
                '{"approved": false, "blockers": ["The new greeting has no test", '
                '"README still describes the old behaviour"]}',
                turns=3,
                cost=0.05,
            )
        elif verdict == "unapproved":
            report('{"approved": false, "blockers": ["", "  "]}', turns=2, cost=0.05)
        else:
            report("I have some thoughts but no verdict.", turns=1, cost=0.01)
        return 0

    if "write a concise implementation plan" in prompt:
        report("## Plan\n\n1. Add `greeting.txt`.\n2. Test it.", turns=4, cost=0.1)
        return 0

    mode = os.environ.get("FAKE_AGENT_MODE", "edit")
    if mode == "noop":
        report("Nothing needed changing.", turns=3, cost=0.02)
        return 0
    if mode == "error":
        print(
            'API Error: 500 {"type":"error","error":{"type":"api_error","message":"Overloaded"}}',
            file=sys.stderr,
        )
        return 1
    if mode == "leak":
        key = os.environ["ANTHROPIC_API_KEY"]
        print(f"debug: using key {key}", file=sys.stderr)
        print(f"wrapped: {key[:12]}\n{key[12:]}", file=sys.stderr)
        print(f"url: https://example.test/?k={quote(key, safe='')}", file=sys.stderr)
        team = os.environ["DEPLOY_KEY"]  # a team secret with symbols: its URL-encoding differs
        print(f"deploy: https://example.test/?d={quote(team, safe='')} raw={team}", file=sys.stderr)
        return 3

    with open("greeting.txt", "a", encoding="utf-8") as fh:
        fh.write("hello from the agent\n")
    if mode in ("dotenv", "dotenv_max_turns"):  # a configuration file with the key in it
        with open(".env", "w", encoding="utf-8") as fh:
            fh.write(f"ANTHROPIC_API_KEY={os.environ['ANTHROPIC_API_KEY']}\n")
    if mode == "verify_rewrite":  # an agent that makes the checks of its work pass
        with open(".ai-implement/verify.sh", "w", encoding="utf-8") as fh:
            fh.write("exit 0\n")
    if mode == "verify_delete":
        os.remove(".ai-implement/verify.sh")
    if mode in ("max_turns", "dotenv_max_turns"):
        report("", turns=max_turns, cost=1.5, subtype="error_max_turns", is_error=True)
        print(f"Error: Reached max turns ({max_turns})", file=sys.stderr)
        return 1
    if mode == "slow":
        time.sleep(float(os.environ.get("FAKE_AGENT_SLEEP", "5")))
    if mode == "hang":
        marker = os.environ.get("FAKE_AGENT_STARTED")
        if marker:
            with open(marker, "w", encoding="utf-8") as fh:
                fh.write("started")
        time.sleep(600)
    # FAKE_AGENT_COST: the cost as written (NaN, 1e999: JSON reads them; no JSON body can carry them)
    report("Added greeting.txt.", turns=7, cost=float(os.environ.get("FAKE_AGENT_COST", "0.25")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
