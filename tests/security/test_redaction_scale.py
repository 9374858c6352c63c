"""Redacting a runner's text takes time linear in it, whatever the text: a report of up to 2 MB
is redacted before anything of it is stored."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from aiimpl_core.services.redaction import jwt_spans

#: the pattern the run tokens were found by, quadratic on a long run of ``eyJ``: what
#: :func:`jwt_spans` finds must be what it found
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{16,}")
PIECES = st.sampled_from(["e", "y", "J", ".", "a", "-", "_", " ", "\n", "eyJ", "eyJaa.", "b" * 8, "=", "%2E"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=40).map("".join))
def test_what_may_be_a_token_is_found_as_the_pattern_found_it(text) -> None:
    assert list(jwt_spans(text)) == [m.span() for m in JWT_PATTERN.finditer(text)]


def test_a_long_run_of_token_beginnings_is_read_at_once() -> None:
    """2 MB of ``eyJ``: the pattern took 16 s on 200 KB (a quarter of an hour on 2 MB)."""
    text = "eyJ" * 700_000
    started = time.process_time()
    assert list(jwt_spans(text)) == []
    assert list(jwt_spans(f"x {text}.eyJab.{'s' * 16} y")) == [(2, 2 + len(text) + 23)]
    assert time.process_time() - started < 2
