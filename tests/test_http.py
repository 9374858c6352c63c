"""The outbound HTTP client's use of the environment: proxies and CA bundle as requests would
apply them, read once per host instead of on every call, and no ``~/.netrc`` credentials."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from aiimpl_core.errors import ProviderError
from aiimpl_core.http import HttpClient


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - the handler's protocol
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A local server that records each request's target (an absolute URL when it is used as a
    proxy) and Authorization header."""
    handler = type("Recorder", (_Recorder,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


def _clear_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_the_environments_proxy_is_used_and_no_proxy_is_honoured(recorder, monkeypatch) -> None:
    proxy, seen = recorder
    _clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    import requests.utils

    reads: list[str] = []
    real = requests.utils.get_environ_proxies
    monkeypatch.setattr(requests.utils, "get_environ_proxies",
                        lambda url, *a, **kw: reads.append(url) or real(url))
    client = HttpClient("http://tracker.invalid", provider="test", retries=0)
    assert client.get("/graphql?x=1").json() == {"ok": True}
    assert client.get("/graphql?x=2").json() == {"ok": True}
    assert [target for target, _ in seen] == ["http://tracker.invalid/graphql?x=1",
                                               "http://tracker.invalid/graphql?x=2"]
    # a host NO_PROXY names is called directly (here: a name that does not resolve)
    with pytest.raises(ProviderError):
        client.get("http://direct.invalid/anything")
    assert len(seen) == 2
    # the environment is read once per host, not on every call
    assert reads == ["http://tracker.invalid/graphql?x=1", "http://direct.invalid/anything"]


def test_without_a_proxy_the_host_is_called_directly(recorder, monkeypatch) -> None:
    base, seen = recorder
    _clear_proxies(monkeypatch)
    assert HttpClient(base, provider="test").get("/x").json() == {"ok": True}
    assert seen == [("/x", None)]


def test_a_netrc_file_lends_no_credentials(recorder, monkeypatch, tmp_path) -> None:
    base, seen = recorder
    _clear_proxies(monkeypatch)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    HttpClient(base, provider="test").get("/x")
    assert seen == [("/x", None)]


def test_the_environments_ca_bundle_is_used(monkeypatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert HttpClient("https://example.invalid").session.verify == "/etc/ssl/certs/ca-certificates.crt"


def _response(status: int, body: bytes, content_type: str | None, reason: str = "Bad Gateway") -> Any:
    import requests

    resp = requests.Response()
    resp.status_code, resp._content, resp.reason = status, body, reason
    if content_type:
        resp.headers["Content-Type"] = content_type
    return resp


@pytest.mark.parametrize(("body", "content_type", "message"), [
    # a gateway's page: its title, not its markup (which filled a job's reason and a comment)
    (b"<html><head><title>502 Bad\n Gateway</title></head><body><center><h1>502</h1></center>"
     b"<hr><center>nginx</center></body></html>", "text/html", "502 Bad Gateway (an HTML page)"),
    (b"<!DOCTYPE html><html><body>down &amp; out</body></html>", None, "Bad Gateway (an HTML page)"),
    (b"<html><title>Tom &amp; Jerry</title></html>", "text/html; charset=utf-8",
     "Tom & Jerry (an HTML page)"),
    (b'{"message": "Not Found"}', "application/json", "Not Found"),
    (b"plain words", "text/plain", "plain words"),
])
def test_a_remote_error_is_said_in_words(body: bytes, content_type: str | None, message: str) -> None:
    from aiimpl_core.http import remote_message

    assert remote_message(_response(502, body, content_type)) == message


@pytest.mark.parametrize(("body", "content_type", "said"), [
    (b"<html><title>Sign in</title></html>", "text/html", "a body that is not JSON (Sign in (an HTML page))"),
    (b"", None, "an empty body (OK)"),
    (b'{"cut": "sho', "application/json", 'a body that is not JSON ({"cut": "sho)'),
])
def test_an_answer_that_is_not_json_is_the_remotes_failure(
    body: bytes, content_type: str | None, said: str
) -> None:
    """A 2xx whose body is not JSON (a proxy's sign-in page, an answer cut short) is a
    ProviderError naming the request, without a status (it may or may not have been done), not a
    ValueError that the callers' handling of a remote's failures lets through."""
    import requests

    resp = _response(200, body, content_type, reason="OK")
    resp.url = "https://api.example.test/repos/acme/api/actions/runs?page=1"
    resp.request = requests.Request("GET", resp.url).prepare()
    client = HttpClient("https://api.example.test", provider="github")

    with pytest.raises(ProviderError) as caught:
        client.json(resp)

    assert caught.value.message == f"github: GET /repos/acme/api/actions/runs answered HTTP 200 with {said}"
    assert caught.value.status is None and caught.value.provider == "github"
    assert client.json(_response(200, b'{"ok": true}', "application/json")) == {"ok": True}


def test_a_header_value_with_a_line_break_is_said_without_its_value(recorder) -> None:
    """A token setting pasted with its newline: requests refuses the header (InvalidHeader), which
    was all `aiimpl check` said; nothing is sent, nothing retried, and the value is never quoted."""
    url, seen = recorder
    client = HttpClient(url, provider="github", headers={"Authorization": "Bearer ghp_secret-value\r\n"})
    with pytest.raises(ProviderError) as caught:
        client.get("/user")
    assert caught.value.message == (
        "github: GET /user was not sent: a header value is not valid (a line break or spaces around it: "
        "check the credential settings for a trailing newline)")
    assert "ghp_secret-value" not in caught.value.message and seen == []


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1"),
        ("http://127.1.2.3", "127.1.2.3"),
        ("https://localhost/", "localhost"),
        ("http://LOCALHOST.:8000", "localhost"),
        ("http://app.localhost", "app.localhost"),
        ("http://[::1]:8000/", "::1"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("http://0.0.0.0:8000", "0.0.0.0"),
        ("https://ai.example.com", None),
        ("http://10.0.2.2:8000", None),
        ("http://[2001:db8::1]/", None),
        ("", None),
        ("not a url", None),
        ("http://[::1", None),
    ],
)
def test_an_address_of_this_host_alone_is_told_from_one_runners_reach(url: str, host: str | None) -> None:
    from aiimpl_core.http import host_only_address

    assert host_only_address(url) == host
