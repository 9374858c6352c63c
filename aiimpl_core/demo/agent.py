"""The demo's scripted stand-in for a coding agent (it is not an AI).

It accepts the Claude Code CLI's headless arguments the session program passes
(``--prompt-file FILE --max-turns N``), does one scripted change for the demo issue, and prints a
result line shaped like Claude Code's JSON output. As post-push reviewer it approves; for a
planning run it writes a short plan.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..session.prompts import REVIEW_MARKER

GREETING = '''"""Greetings for the demo application."""


def greet(name: str) -> str:
    """Return a friendly greeting for ``name``."""
    name = name.strip() or "world"
    return f"Hello, {name}!"
'''

TEST = '''import unittest

from greeting import greet


class GreetTest(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(greet("Ada"), "Hello, Ada!")

    def test_empty_name_greets_the_world(self):
        self.assertEqual(greet("  "), "Hello, world!")


if __name__ == "__main__":
    unittest.main()
'''


def _report(text: str, turns: int) -> None:
    print(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": text,
                      "num_turns": turns, "total_cost_usd": 0.0, "duration_ms": 1500}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-file", required=True)
    parser.add_argument("--max-turns", type=int, default=50)
    args = parser.parse_args(argv)
    with open(args.prompt_file, encoding="utf-8") as fh:
        prompt = fh.read()
    time.sleep(1.0)  # long enough to watch the stages go by
    if REVIEW_MARKER in prompt:
        _report(
            'Sandbox review: the change matches the issue and has tests.\n'
            '{"approved": true, "blockers": []}',
            2,
        )
        return 0
    if "plan" in prompt.lower() and "implementation plan" in prompt.lower():
        _report("## Plan\n\n1. Add `greeting.py` with `greet(name)`.\n2. Add unit tests.", 2)
        return 0
    with open("greeting.py", "w", encoding="utf-8") as fh:
        fh.write(GREETING)
    with open("test_greeting.py", "w", encoding="utf-8") as fh:
        fh.write(TEST)
    _report("Added greeting.py with greet(name) and its unit tests.", 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
