"""An id put in a URL path is one segment of it: ``..`` (or an encoded form) never reaches another
resource, whichever client of the core's HTTP helper puts it there."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.errors import ProviderError
from aiimpl_core.http import HttpClient
from aiimpl_core.session import github as session_github
from aiimpl_core.testing.fake_github import FakeGitHub
from aiimpl_core.testing.serving import ServerThread

DOT_IDS = ["..", ".", "%2e%2e", "%2E.", "%252e%252e", "%25252E"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        type(self).seen.append(self.path)
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_DELETE = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A local server that records each request's target."""
    handler = type("Recorder", (_Recorder,), {"seen": []})
    with ServerThread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as live:
        yield live.url, handler.seen


@pytest.mark.parametrize("value", DOT_IDS + [""])
def test_path_segment_refuses_a_dot_segment_in_any_encoding(value: str) -> None:
    from aiimpl_core.http import path_segment

    with pytest.raises(ProviderError, match=r"^fly: the machine id .* cannot be put in a URL path"):
        path_segment(value, provider="fly", what="machine id")


@pytest.mark.parametrize(
    ("value", "encoded"),
    [("3d8d9e1f", "3d8d9e1f"), ("a/../b", "a%2F..%2Fb"), ("x?y#z", "x%3Fy%23z"), ("%2F", "%252F"),
     ("..a", "..a"), ("a b", "a%20b"), (10010, "10010")],
)
def test_path_segment_encodes_everything_else_into_one_segment(value: object, encoded: str) -> None:
    from aiimpl_core.http import path_segment

    assert path_segment(value) == encoded


@pytest.mark.parametrize("value", [*DOT_IDS, "", "a/b", "a\\b", "a?b", "a#b", "a%41"])
def test_path_segment_problem_names_what_an_input_may_not_be(value: str) -> None:
    from aiimpl_core.http import path_segment_problem

    assert path_segment_problem(value) == (
        "must be an id that fits one segment of a URL path (not empty, '.' or '..', without '/', '\\', "
        f"'?', '#' or '%'), not {value!r}"
    )
    assert path_segment_problem("customfield_10010") is None


@pytest.mark.parametrize("path", ["/apps/a/machines/..", "/apps/a/machines/../stop", "/a/./b", "/a/%2e%2E/b",
                                  "/a/%2e%2e?force=true"])
def test_a_path_with_a_dot_segment_is_not_sent(recorder: tuple[str, list[str]], path: str) -> None:
    """urllib3 resolves ``..`` before sending (``/apps/a/machines/..`` went out as ``/apps/a/``) and
    decodes ``%2E``: the client refuses such a path whatever put the id there."""
    url, seen = recorder
    client = HttpClient(url, provider="fly", retries=0)
    with pytest.raises(ProviderError, match=r"was not sent: a '\.' or '\.\.' segment of its path"):
        client.get(path)
    assert seen == []
    client.get("/apps/a/machines/..a/.b")
    assert seen == ["/apps/a/machines/..a/.b"]


def test_a_repository_named_by_a_dot_segment_is_never_asked_for() -> None:
    with FakeGitHub() as gh:
        gh.add_repo("acme", "api")
        for owner, repo in (("..", "api"), ("acme", ".."), ("acme", "%2e%2e")):
            with pytest.raises(session_github.PullRequestError):
                session_github.find_open_pull_request(gh.url, "ghs_token", owner, repo, head="b", base="main")
        assert gh.requests == []
