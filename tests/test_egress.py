"""The egress rule for URLs users give us (celeste/egress.py).

The sandboxed suite has no DNS, so hosts are IP literals (getaddrinfo resolves
them without a name server), ``localhost`` and names that only the pinned session
can reach: it never resolves them."""

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from celeste.devserver.loopback import ImageServer
from celeste.egress import (
    EgressFailed,
    EgressLookupFailed,
    EgressRefused,
    EgressTooLarge,
    address_is_public,
    fetch,
    pinned_session,
    url_check_public,
)

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/push",
        "https://127.0.0.1:8443/push",
        "https://localhost/push",
        "https://[::1]/push",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.1.2.3/push",
        "https://172.16.0.1/push",
        "https://192.168.1.1/push",
        "https://100.64.0.1/push",  # carrier-grade NAT
        "https://0.0.0.0/push",
        "https://224.0.0.1/push",  # multicast, which Python 3.11 calls global
        "https://240.0.0.1/push",  # reserved
        "https://2130706433/push",  # 127.0.0.1 written as one number
        "https://0x7f000001/push",
        "https://[::ffff:127.0.0.1]/push",  # IPv4-mapped
        "https://[::ffff:169.254.169.254]/push",
        "https://[64:ff9b::a9fe:a9fe]/push",  # NAT64 of 169.254.169.254
        "https://[2002:7f00:1::]/push",  # 6to4 of 127.0.0.1
        "https://[fe80::1]/push",
        "https://[fc00::1]/push",
        "https://[ff02::1]/push",
        "https://[::]/push",
    ],
)
def test_non_public_addresses_are_refused(url):
    with pytest.raises(EgressRefused, match="not a public address"):
        url_check_public(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://1.1.1.1/push", "must use https"),
        ("ftp://1.1.1.1/push", "must use https"),
        ("https://user:secret@1.1.1.1/push", "user name or password"),
        ("https://user@1.1.1.1/push", "user name or password"),
        ("https:///push", "no host"),
        ("https://1.1.1.1:99999/push", "Not a valid URL"),
    ],
)
def test_urls_breaking_the_rule_are_refused(url, reason):
    with pytest.raises(EgressRefused, match=reason):
        url_check_public(url)


def test_a_public_address_passes_and_is_returned():
    assert url_check_public("https://1.1.1.1/push") == [ipaddress.ip_address("1.1.1.1")]
    assert url_check_public("https://[2606:4700:4700::1111]:8443/x") == [ipaddress.ip_address("2606:4700:4700::1111")]


def test_a_name_that_does_not_resolve_is_a_lookup_failure():
    with pytest.raises(EgressLookupFailed, match="could not be resolved"):
        url_check_public("https://push.celeste.invalid/x")


def test_the_allow_list_is_checked_before_resolving():
    allowed = ["fcm.googleapis.com", "*.notify.windows.com", "1.1.1.1"]

    assert url_check_public("https://1.1.1.1/x", allowed_hosts=allowed)
    with pytest.raises(EgressRefused, match="not an allowed push service"):
        url_check_public("https://9.9.9.9/x", allowed_hosts=allowed)
    # Subdomains of a wildcard entry pass the list (and then fail here only on DNS).
    with pytest.raises(EgressLookupFailed):
        url_check_public("https://wns2-by3p.notify.windows.com/x", allowed_hosts=allowed)
    with pytest.raises(EgressRefused, match="not an allowed"):
        url_check_public("https://notify.windows.com.evil.example/x", allowed_hosts=allowed)
    with pytest.raises(EgressRefused, match="not an allowed"):
        url_check_public("https://evilfcm.googleapis.com/x", allowed_hosts=allowed)


def test_an_allowed_host_must_still_be_public():
    with pytest.raises(EgressRefused, match="not a public address"):
        url_check_public("https://127.0.0.1/x", allowed_hosts=["127.0.0.1"])


def test_allow_private_admits_loopback_and_plain_http_to_it_only():
    assert url_check_public("http://127.0.0.1:8000/push", allow_private=True) == [LOOPBACK]
    assert url_check_public("https://localhost/push", allow_private=True) == [LOOPBACK]
    with pytest.raises(EgressRefused, match="must use https"):
        url_check_public("http://1.1.1.1/push", allow_private=True)
    with pytest.raises(EgressRefused, match="user name or password"):
        url_check_public("http://a:b@127.0.0.1/push", allow_private=True)


def test_address_is_public():
    assert address_is_public(ipaddress.ip_address("8.8.8.8"))
    assert address_is_public(ipaddress.ip_address("::ffff:8.8.8.8"))
    assert not address_is_public(ipaddress.ip_address("2001::1"))  # Teredo


# --- the pinned session, against a real TLS server on loopback ----------------------


def _certificate(tmp_path, host: str):
    """A self-signed certificate for ``host``: (cert file, key file) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{host}.pem", tmp_path / f"{host}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class TLSServer:
    """HTTPS on 127.0.0.1 with a certificate for ``host``; records SNI, Host and path
    of each request; answers ``status`` (and ``location`` for a redirect)."""

    def __init__(self, tmp_path, host: str):
        self.cert_file, key_file = _certificate(tmp_path, host)
        self.seen: list[dict] = []
        self.sni: list[str | None] = []
        self.status, self.location = 201, None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.seen.append({"method": self.command, "path": self.path, "host": self.headers["Host"]})
                self.send_response(server.status)
                if server.location:
                    self.send_header("Location", server.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        context.sni_callback = lambda sock, name, ctx: self.sni.append(name)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def tls_server(tmp_path):
    server = TLSServer(tmp_path, "push.celeste.invalid")
    yield server
    server.stop()


def test_the_pinned_session_connects_to_the_checked_address_and_verifies_the_host_name(tls_server):
    # push.celeste.invalid resolves nowhere: the request can only arrive because the
    # session connects to the pinned address without asking DNS again.
    url = f"https://push.celeste.invalid:{tls_server.port}/push/a"

    response = pinned_session(url, LOOPBACK).post(url, data=b"hello", verify=str(tls_server.cert_file), timeout=5)

    assert response.status_code == 201
    assert tls_server.sni == ["push.celeste.invalid"]
    assert tls_server.seen == [{"method": "POST", "path": "/push/a", "host": f"push.celeste.invalid:{tls_server.port}"}]


def test_the_pinned_session_refuses_a_certificate_for_another_name(tmp_path):
    server = TLSServer(tmp_path, "other.celeste.invalid")
    try:
        url = f"https://push.celeste.invalid:{server.port}/push/a"
        with pytest.raises(requests.exceptions.SSLError):
            pinned_session(url, LOOPBACK).post(url, data=b"x", verify=str(server.cert_file), timeout=5)
    finally:
        server.stop()
    assert server.seen == []


def test_the_pinned_session_follows_no_redirect(tls_server):
    url = f"https://push.celeste.invalid:{tls_server.port}/push/a"
    tls_server.status, tls_server.location = 302, f"http://127.0.0.1:{tls_server.port}/internal"

    response = pinned_session(url, LOOPBACK).post(url, data=b"x", verify=str(tls_server.cert_file), timeout=5)

    assert response.status_code == 302
    assert [seen["path"] for seen in tls_server.seen] == ["/push/a"]


def test_the_pinned_session_talks_to_no_other_host(tls_server):
    url = f"https://push.celeste.invalid:{tls_server.port}/push/a"

    # requests wraps the adapter's refusal (a ValueError) as InvalidURL.
    with pytest.raises(requests.exceptions.InvalidURL, match="only connect to the host that was checked"):
        pinned_session(url, LOOPBACK).get(f"https://127.0.0.1:{tls_server.port}/", timeout=5)
    assert tls_server.seen == []


# --- fetch: redirects re-checked, size and time caps, against a real HTTP server on loopback ---


@pytest.fixture
def files():
    server = ImageServer().start()
    yield server
    server.stop()


def get(url, **kwargs):
    return fetch(url, **{"max_bytes": 1000, "timeout": 5, "allow_loopback": True, **kwargs})


def test_fetch_follows_up_to_three_redirects_checking_each(files):
    files.files["/end"] = ("image/png", b"x" * 10)
    for hop in range(3):
        files.redirects[f"/hop{hop}"] = f"/hop{hop + 1}" if hop < 2 else "/end"

    fetched = get(files.url("/hop0"))

    assert fetched.content == b"x" * 10 and fetched.url == files.url("/end")
    files.redirects["/hop-1"] = "/hop0"
    with pytest.raises(EgressRefused, match="More than 3 redirects"):
        get(files.url("/hop-1"))


@pytest.mark.parametrize(
    "target",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x", "http://[fd00::1]/x", "ftp://1.1.1.1/x"],
)
def test_a_redirect_to_a_refused_address_is_never_followed(files, target):
    files.redirects["/go"] = target

    with pytest.raises(EgressRefused):
        get(files.url("/go"))
    assert files.requests == ["/go"]


def test_loopback_is_refused_without_the_setting(files):
    files.files["/a"] = ("image/png", b"x")
    with pytest.raises(EgressRefused, match="not a public address"):
        fetch(files.url("/a"), max_bytes=1000, timeout=5, allow_http=True)
    assert files.requests == []


def test_http_is_allowed_to_public_hosts_only_when_asked():
    assert url_check_public("http://1.1.1.1/a.jpg", allow_http=True)
    with pytest.raises(EgressRefused, match="must use https"):
        url_check_public("http://1.1.1.1/a.jpg")
    with pytest.raises(EgressRefused, match="not a public address"):
        url_check_public("http://10.0.0.1/a.jpg", allow_loopback=True, allow_http=True)


def test_a_body_over_the_cap_is_refused_with_or_without_content_length(files):
    files.files["/big"] = ("image/png", b"x" * 5000)
    files.files["/big-chunked"] = ("image/png", b"x" * 5000)
    files.chunked.add("/big-chunked")

    with pytest.raises(EgressTooLarge, match="larger than 1000 bytes \\(5000\\)"):
        get(files.url("/big"))
    with pytest.raises(EgressTooLarge, match="larger than 1000 bytes"):
        get(files.url("/big-chunked"))


def test_a_slow_body_hits_the_deadline(files):
    files.files["/slow"] = ("image/png", b"x" * 800)
    files.trickle["/slow"] = 0.1  # 16 bytes every 0.1 s: 5 s for the whole body

    started = time.monotonic()
    with pytest.raises(EgressFailed, match="longer than the time allowed"):
        get(files.url("/slow"), timeout=1)
    assert time.monotonic() - started < 2


def test_an_error_status_and_a_closed_port_are_failures(files):
    files.status["/gone"] = 404
    with pytest.raises(EgressFailed, match="HTTP 404") as raised:
        get(files.url("/gone"))
    assert raised.value.status == 404
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EgressFailed, match="ConnectionError"):
        get(f"http://127.0.0.1:{port}/x")
