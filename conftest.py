"""Shared by every test folder of the repository (the core's, the plugins', the examples').

Two things make the tests' processes cheaper to run; tests only, the server does neither.

The garbage collector is run less often. A test process holds millions of objects that live as
long as it does (the official API descriptions the fakes check against, the modules of every
test), and with Python's default thresholds it went through them all again and again: a tenth
of an API test process's CPU time went to collections that found next to nothing. With these,
young objects are looked at every 10,000 allocations instead of 700, and all of them a hundred
times less often; what cycles the tests leave are freed a little later.

Each test builds an app of its own (its plugins and settings are its own), and werkzeug compiles
two URL builders for every route of every app: four fifths of the 25 ms an app takes to build,
and a minute of CPU over the suite. The builder of a route is the same code for every app, so it
is compiled once per test process here. Tests only: the server builds its app once.
"""

from __future__ import annotations

import gc
from typing import Any

from werkzeug.routing import rules

_compile_builder = getattr(rules.Rule, "_compile_builder", None)
_builders: dict[tuple[Any, ...], Any] = {}


def _compile_builder_once(self: rules.Rule, append_unknown: bool = True) -> Any:
    # what the generated code depends on: the rule's parts, its defaults (a default of a part is
    # written into the code through its converter), and whether unknown values are appended
    key = (
        self.rule,
        tuple(self._trace),
        repr(sorted((self.defaults or {}).items())),
        tuple(sorted((name, type(conv).__qualname__) for name, conv in self._converters.items())),
        append_unknown,
    )
    builder = _builders.get(key)
    if builder is None:
        builder = _builders[key] = _compile_builder(self, append_unknown)
    return builder


if _compile_builder is not None:  # (a werkzeug without it builds its routes its own way)
    rules.Rule._compile_builder = _compile_builder_once


def pytest_configure(config: Any) -> None:
    gc.set_threshold(10_000, 10, 100)
