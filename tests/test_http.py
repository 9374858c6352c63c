"""The outbound HTTP client's use of the environment (proxies and CA bundle as requests would
apply them, read once per host instead of on every call, and no ``~/.netrc`` credentials), what it
says of a remote's failure, and what it tells of a request that failed: whether it may have been
carried out all the same."""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import socketserver
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import requests.adapters

from aiimpl_core.errors import ProviderError
from aiimpl_core.http import HttpClient, may_have_been_done
from aiimpl_core.testing.serving import ServerThread


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
    with ServerThread(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as live:
        yield live.url, handler.seen


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
    (b"<HTML><TITLE lang=en>Down</TITLE><title>Second</title></HTML>", "text/html", "Down (an HTML page)"),
    (b"<html><title>never closed", "text/html", "Bad Gateway (an HTML page)"),
    (b'{"message": "Not Found"}', "application/json", "Not Found"),
    (b"plain words", "text/plain", "plain words"),
])
def test_a_remote_error_is_said_in_words(body: bytes, content_type: str | None, message: str) -> None:
    from aiimpl_core.http import remote_message

    assert remote_message(_response(502, body, content_type)) == message


def test_a_remote_page_of_unclosed_titles_is_read_at_once() -> None:
    """A page (here a JSON string, which is not cut to 2,000 characters as text is) of ``<title``
    with no ``>``: the pattern that found the title took 3.4 s on 64 KB."""
    import json

    from aiimpl_core.http import remote_message

    body = json.dumps("<html>" + "<title" * 300_000).encode()
    started = time.process_time()
    assert remote_message(_response(502, body, "text/html")) == "Bad Gateway (an HTML page)"
    assert time.process_time() - started < 2


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


def test_a_header_value_with_a_character_no_header_carries_is_said_without_its_value(recorder) -> None:
    """A token setting pasted with a typographic quote: http.client refuses the header with a
    UnicodeEncodeError, which escaped every caller (a 500 of the Jira admin endpoints, a traceback
    of `aiimpl check`); nothing is sent, and the value is never quoted."""
    url, seen = recorder
    client = HttpClient(url, provider="jira", headers={"Authorization": "Bearer tok\u2019en-secret"})
    with pytest.raises(ProviderError) as caught:
        client.get("/rest/api/3/myself")
    assert caught.value.message == (
        "jira: GET /rest/api/3/myself was not sent: a header value is not valid (a character a header "
        "cannot carry: check the credential settings for a character pasted in with the value)")
    assert "secret" not in caught.value.message and seen == []


def test_a_body_json_cannot_write_is_said_as_not_sent_and_not_retried(recorder) -> None:
    """A NaN in a body: requests refuses to encode it (InvalidJSONError), which was said as an
    answer that never came, and retried as an outage."""
    url, seen = recorder
    client = HttpClient(url, provider="orchestrator", retries=3, sleep=lambda _s: None)
    with pytest.raises(ProviderError) as caught:
        client.request("POST", "/runner/result", json={"costUsd": float("nan")}, retry_unsafe=True)
    assert caught.value.message == (
        "orchestrator: POST /runner/result was not sent: its body is not valid JSON (a number JSON "
        "cannot write, such as NaN)")
    assert seen == []


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


# -- a TLS failure: in the handshake nothing was sent; after it, the request may have been done --------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1, as files: (certificate, key)."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiimpl test server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


@contextlib.contextmanager
def _tls_server(
    certificate: tuple[str, str],
    answer: Callable[[socket.socket, ssl.SSLContext], None],
    *,
    minimum_version: ssl.TLSVersion | None = None,
) -> Iterator[str]:
    """A server on 127.0.0.1 handing each connection, as accepted (before any handshake), to
    ``answer`` with the TLS context of ``certificate``; yields its ``https`` URL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    if minimum_version is not None:
        context.minimum_version = minimum_version

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            answer(self.request, context)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with ServerThread(server, scheme="https") as live:
        yield live.url


def _read_request(tls: ssl.SSLSocket) -> bytes:
    """One whole request: its head, then as many bytes of body as its Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
    length = re.search(rb"(?im)^content-length:\s*(\d+)", data.partition(b"\r\n\r\n")[0])
    while length and len(data.partition(b"\r\n\r\n")[2]) < int(length.group(1)):
        chunk = tls.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _read_client_hello(raw: socket.socket) -> bytes:
    """The client's first TLS record (its ClientHello), read whole so that closing sends no reset."""
    record = b""
    while len(record) < 5 or len(record) < 5 + int.from_bytes(record[3:5], "big"):
        chunk = raw.recv(65536)
        if not chunk:
            break
        record += chunk
    return record


_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _raw_bytes_for_the_answer(tls: ssl.SSLSocket) -> None:
    socket.socket.sendall(tls, _ANSWER)  # under the TLS layer: bytes that are no TLS record


def _a_forged_record_for_the_answer(tls: ssl.SSLSocket) -> None:
    socket.socket.sendall(tls, b"\x17\x03\x03\x00\x40" + bytes(64))  # application data sealed with no key


def _raw_bytes_within_the_body(tls: ssl.SSLSocket) -> None:
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"id\"")
    socket.socket.sendall(tls, b": 1, \"name\": \"cut\"}" * 2)


DISPATCH = "/repos/acme/api/actions/workflows/w.yml/dispatches"


@pytest.mark.parametrize("breaking", [_raw_bytes_for_the_answer, _a_forged_record_for_the_answer,
                                      _raw_bytes_within_the_body])
def test_a_tls_stream_broken_after_the_request_went_out_may_have_been_done(
    certificate: tuple[str, str], breaking: Callable[[ssl.SSLSocket], None]
) -> None:
    """The server read the whole request, then its TLS stream broke while the answer was read (bytes
    that are no TLS record, a record that does not decrypt): requests raises the ``SSLError`` it
    raises for a failed handshake, but the request may have been carried out (a dispatch, a
    comment) and is not to be sent again."""
    received: list[bytes] = []

    def answer(raw: socket.socket, context: ssl.SSLContext) -> None:
        with context.wrap_socket(raw, server_side=True) as tls:
            received.append(_read_request(tls))
            breaking(tls)

    with _tls_server(certificate, answer) as url:
        client = HttpClient(url, provider="github", retries=0)
        client.session.verify = certificate[0]
        with pytest.raises(ProviderError) as caught:
            client.post(DISPATCH, json={"ref": "main"})

    assert isinstance(caught.value.__context__, requests.exceptions.SSLError), repr(caught.value.__context__)
    assert len(received) == 1 and received[0].endswith(b'{"ref": "main"}')
    assert may_have_been_done(caught.value)


def _answer_after_a_handshake(received: list[bytes]) -> Callable[[socket.socket, ssl.SSLContext], None]:
    def answer(raw: socket.socket, context: ssl.SSLContext) -> None:
        try:
            tls = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            return  # the handshake failed: the client has sent nothing of its request
        with tls:
            received.append(_read_request(tls))
            tls.sendall(_ANSWER)
    return answer


def _assert_never_sent(exc: ProviderError) -> None:
    assert isinstance(exc.__context__, requests.exceptions.SSLError), repr(exc.__context__)
    assert not may_have_been_done(exc)


def test_a_certificate_not_trusted_fails_the_handshake_and_sends_nothing(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    received: list[bytes] = []
    with _tls_server(certificate, _answer_after_a_handshake(received)) as url:
        client = HttpClient(url, provider="github", retries=0)  # the usual trust: not this certificate
        with pytest.raises(ProviderError) as caught:
            client.post(DISPATCH, json={"ref": "main"})
        assert isinstance(caught.value.__context__.args[0].reason.args[0], ssl.SSLCertVerificationError)
        _assert_never_sent(caught.value)
        assert received == []
        client.session.verify = certificate[0]
        assert client.post(DISPATCH, json={"ref": "main"}).json() == {}  # the same server, trusted


class _UpToTls12(requests.adapters.HTTPAdapter):
    """An adapter whose connections offer TLS 1.2 at most."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        context = ssl.create_default_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        super().init_poolmanager(*args, **{**kwargs, "ssl_context": context})


def test_a_handshake_refused_for_its_protocol_version_sends_nothing(certificate: tuple[str, str]) -> None:
    received: list[bytes] = []
    with _tls_server(certificate, _answer_after_a_handshake(received),
                     minimum_version=ssl.TLSVersion.TLSv1_3) as url:
        session = requests.Session()
        session.verify = certificate[0]
        session.mount("https://", _UpToTls12())
        client = HttpClient(url, provider="github", retries=0, session=session)
        with pytest.raises(ProviderError) as caught:
            client.post(DISPATCH, json={"ref": "main"})

    assert "PROTOCOL_VERSION" in str(caught.value.__context__)
    _assert_never_sent(caught.value)
    assert received == []


def _close_in_the_handshake(raw: socket.socket, context: ssl.SSLContext) -> None:
    _read_client_hello(raw)
    raw.shutdown(socket.SHUT_RDWR)


def _answer_without_tls(raw: socket.socket, context: ssl.SSLContext) -> None:
    _read_client_hello(raw)
    raw.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.mark.parametrize("answer", [_close_in_the_handshake, _answer_without_tls])
def test_a_handshake_cut_or_answered_without_tls_sends_nothing(
    certificate: tuple[str, str], answer: Callable[[socket.socket, ssl.SSLContext], None]
) -> None:
    """Failures of the kinds a stream broken after the request gives too (bytes that are no TLS
    record: ``WRONG_VERSION_NUMBER`` either way; an end of the stream), but in the handshake, before
    any byte of the request went out: what tells them apart is when they came, not what they are."""
    with _tls_server(certificate, answer) as url:
        client = HttpClient(url, provider="github", retries=0)
        client.session.verify = certificate[0]
        with pytest.raises(ProviderError) as caught:
            client.post(DISPATCH, json={"ref": "main"})

    _assert_never_sent(caught.value)


def _silent_server() -> tuple[socket.socket, int]:
    """A port that takes connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener, listener.getsockname()[1]


def test_a_request_without_an_answer_is_said_in_words_without_its_url() -> None:
    """``ConnectionError`` alone (the class) left an operator to guess between a service down, a
    URL setting without its scheme and a name that does not resolve."""
    from aiimpl_core.testing.ports import free_port

    def said(base: str, **kw: Any) -> str:
        client = HttpClient(base, provider="p", retries=0, **kw)
        with pytest.raises(ProviderError) as err:
            client.get("/x")
        assert "127.0.0.1" not in err.value.message  # (the requests library's message names it)
        return err.value.message

    assert said(f"http://127.0.0.1:{free_port()}") == (
        "p: GET /x failed: ConnectionError (the connection was refused)")
    assert said(f"127.0.0.1:{free_port()}").endswith(
        "(not a valid http:// or https:// URL: check the setting that gives the address)")
    listener, port = _silent_server()
    with listener:
        assert said(f"http://127.0.0.1:{port}", timeout=0.5).endswith(
            "failed: ReadTimeout (no answer within the time limit)")


def test_a_name_that_does_not_resolve_is_said_so() -> None:
    import requests
    import urllib3

    from aiimpl_core.http import unanswered

    pool_error = urllib3.exceptions.MaxRetryError(
        None, "/", urllib3.exceptions.NameResolutionError("tracker.invalid", None, socket.gaierror(-2)))
    assert unanswered(requests.exceptions.ConnectionError(pool_error)) == (
        "ConnectionError (the host name does not resolve)")
    assert unanswered(requests.exceptions.ConnectionError("closed")) == (
        "ConnectionError (the connection was closed before an answer came)")
