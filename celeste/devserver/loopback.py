"""Real protocol servers on loopback for tests, benchmarks and local demos:
an SMTP server (aiosmtpd), a Web Push receiver that checks VAPID and decrypts
RFC 8291 payloads, a Sentry receiver that stores the envelopes an SDK posts, and
an HTTP server of image files (with redirects and slow answers) for URL ingest.
None is a mock: clients talk real SMTP/HTTP."""

import asyncio
import base64
import gzip
import json
import os
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- SMTP ---------------------------------------------------------------------


class _SMTPHandler:
    def __init__(self, server: "SMTPServer"):
        self.server = server

    async def handle_DATA(self, smtp_server, session, envelope):
        if self.server.delay_seconds:  # other connections are served meanwhile, as by a real server
            await asyncio.sleep(self.server.delay_seconds)
        with self.server.lock:
            answer = self.server.answers.pop(0) if self.server.answers else self.server.fail_with
        if answer:
            self.server.refused += 1
            return answer
        with self.server.lock:
            self.server.messages.append(
                {
                    "from": envelope.mail_from,
                    "to": list(envelope.rcpt_tos),
                    "message": message_from_bytes(envelope.content),
                    "raw": envelope.original_content,  # the DATA as sent, dot-unstuffed
                    "at": time.monotonic(),  # when it was accepted (rates, pacing)
                }
            )
        return "250 Message accepted for delivery"


class SMTPServer:
    """``fail_with = "451 4.3.0 Try again later"`` makes it refuse every message;
    ``answers = ["550 5.7.1 Relaying denied"]`` refuses the next ones (one answer
    each, in order) before ``fail_with`` applies again. ``delay_seconds`` makes every
    message take that long to accept (a remote server's latency), each connection on its own."""

    def __init__(self):
        self.messages: list[dict] = []
        self.lock = threading.Lock()
        self.fail_with: str | None = None
        self.answers: list[str] = []
        self.refused = 0
        self.delay_seconds = 0.0
        self.port = free_port()
        self.controller = Controller(_SMTPHandler(self), hostname="127.0.0.1", port=self.port, ready_timeout=10)

    def start(self) -> "SMTPServer":
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def recipients(self) -> list[str]:
        with self.lock:
            return [rcpt for m in self.messages for rcpt in m["to"]]


# --- Web Push -------------------------------------------------------------------


@dataclass
class PushClient:
    """A browser's side of a subscription: its key pair and auth secret."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    auth_secret: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)


class PushReceiver:
    """A push service: POST /push/<name>. Answers with ``status[name]`` (default 201)
    after checking the VAPID JWT and decrypting the payload with the client's keys.
    With ``redirect[name] = url`` a 3xx status carries ``Location: url`` (a push
    service trying to send its client elsewhere). Every request, whatever its
    method and path, is logged in ``requests`` as ``(method, path)``."""

    def __init__(self, vapid_public_key: str):
        self.vapid_public_key = vapid_public_key
        self.clients: dict[str, PushClient] = {}
        self.status: dict[str, int] = {}
        self.redirect: dict[str, str] = {}
        self.received: list[dict] = []
        self.rejected: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                with receiver.lock:
                    receiver.requests.append(("POST", self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                name = self.path.rsplit("/", 1)[-1]
                code = receiver.handle(name, self.headers, body)
                self.send_response(code)
                if 300 <= code < 400 and name in receiver.redirect:
                    self.send_header("Location", receiver.redirect[name])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # only a client following a redirect would ask
                with receiver.lock:
                    receiver.requests.append(("GET", self.path))
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "PushReceiver":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def new_client(self, name: str) -> PushClient:
        client = PushClient(endpoint=f"{self.origin}/push/{name}")
        self.clients[name] = client
        return client

    def handle(self, name: str, headers, body: bytes) -> int:
        try:
            self._check_vapid(headers.get("Authorization", ""))
            if headers.get("Content-Encoding") != "aes128gcm":
                raise ValueError("Content-Encoding must be aes128gcm")
            import http_ece

            client = self.clients[name]
            payload = json.loads(
                http_ece.decrypt(
                    body, private_key=client.private_key, auth_secret=client.auth_secret, version="aes128gcm"
                )
            )
        except Exception as exc:  # anything wrong with the request is a 400, and remembered
            with self.lock:
                self.rejected.append(f"{name}: {exc!r}")
            return 400
        status = self.status.get(name, 201)
        if status < 300:
            with self.lock:
                self.received.append({"client": name, "payload": payload})
        return status

    def _check_vapid(self, authorization: str) -> None:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"expected a vapid Authorization header, got {authorization[:30]!r}")
        values = dict(part.strip().split("=", 1) for part in params.split(","))
        if values["k"] != self.vapid_public_key:
            raise ValueError("VAPID key k is not the application server's key")
        head, claims, signature = values["t"].split(".")
        raw = b64url_decode(signature)
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(values["k"]))
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        public_key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        decoded = json.loads(b64url_decode(claims))
        if decoded["aud"] != self.origin:
            raise ValueError(f"JWT aud {decoded['aud']!r} is not {self.origin!r}")
        if decoded["exp"] < time.time() or not decoded.get("sub"):
            raise ValueError("JWT expired or without sub")


# --- Sentry -------------------------------------------------------------------


class ImageServer:
    """Plain HTTP on 127.0.0.1 serving ``files[path] = (content type, bytes)``; a path in
    ``redirects`` answers 302 to its URL; one in ``trickle`` sends its body a few bytes
    every ``trickle[path]`` seconds; ``status[path]`` answers that code with no body
    (404 for anything unknown); ``chunked`` paths are sent without Content-Length.
    ``requests`` logs each path asked for."""

    def __init__(self):
        self.files: dict[str, tuple[str, bytes]] = {}
        self.redirects: dict[str, str] = {}
        self.trickle: dict[str, float] = {}
        self.status: dict[str, int] = {}
        self.chunked: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                path = self.path
                server.requests.append(path)
                if path in server.redirects:
                    return self._empty(302, Location=server.redirects[path])
                if path in server.status or path not in server.files:
                    return self._empty(server.status.get(path, 404))
                content_type, body = server.files[path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                if path in server.chunked or path in server.trickle:
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if path in server.trickle:
                        for start in range(0, len(body), 16):
                            self.wfile.write(body[start : start + 16])
                            self.wfile.flush()
                            time.sleep(server.trickle[path])
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (size cap, deadline)
                self.close_connection = True

            def _empty(self, code: int, **headers):
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return self.origin + path

    def start(self) -> "ImageServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SentryReceiver:
    """A Sentry server's ingest endpoint: ``POST /api/<project>/envelope/`` (what
    sentry-sdk sends to a DSN ``http://<key>@127.0.0.1:<port>/<project>``). It
    decompresses the body (gzip, deflate; brotli if the module is there), parses the
    envelope and keeps every item; it answers 200 to any envelope it can read and
    400 otherwise."""

    def __init__(self):
        self.envelopes: list[dict] = []  # {"project", "headers", "items": [{"headers", "payload"}], "body"}
        self.rejected: list[str] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = receiver.handle(self.path, self.headers, body)
                answer = b"{}" if code == 200 else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]

    def dsn(self, project: int = 1, key: str = "public") -> str:
        return f"http://{key}@127.0.0.1:{self.port}/{project}"

    def start(self) -> "SentryReceiver":
        threading.Thread(target=self.httpd.serve_forever, name="sentry-receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, path: str, headers, body: bytes) -> int:
        try:
            parts = path.split("?", 1)[0].strip("/").split("/")
            if len(parts) != 3 or parts[0] != "api" or parts[2] != "envelope" or not parts[1].isdigit():
                raise ValueError(f"not an envelope endpoint: {path}")
            raw = self._decompress(headers.get("Content-Encoding", ""), body)
            envelope_headers, items = self.parse_envelope(raw)
        except Exception as exc:  # anything unreadable is a 400, and remembered
            with self.lock:
                self.rejected.append(f"{path}: {exc!r}")
            return 400
        with self.lock:
            self.envelopes.append(
                {
                    "project": int(parts[1]),
                    "headers": envelope_headers,
                    "items": items,
                    "body": raw.decode(errors="replace"),
                }
            )
        return 200

    @staticmethod
    def _decompress(encoding: str, body: bytes) -> bytes:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            return body
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == "br":
            import brotli  # only if the SDK found it too

            return brotli.decompress(body)
        raise ValueError(f"unknown Content-Encoding {encoding!r}")

    @staticmethod
    def parse_envelope(raw: bytes) -> tuple[dict, list[dict]]:
        """Sentry's envelope format: a JSON header line, then items, each a JSON header
        line and a payload of ``length`` bytes (or up to the next newline)."""
        header_line, _, rest = raw.partition(b"\n")
        envelope_headers = json.loads(header_line)
        items = []
        while rest.strip():
            item_line, _, rest = rest.partition(b"\n")
            if not item_line.strip():
                continue
            item_headers = json.loads(item_line)
            if "length" in item_headers:
                length = int(item_headers["length"])
                payload, rest = rest[:length], rest[length:]
                rest = rest[1:] if rest.startswith(b"\n") else rest
            else:
                payload, _, rest = rest.partition(b"\n")
            content_type = item_headers.get("content_type", "application/json")
            is_json = item_headers.get("type") in ("event", "transaction") or content_type == "application/json"
            items.append({"headers": item_headers, "payload": json.loads(payload) if is_json else payload})
        return envelope_headers, items

    def items(self, item_type: str = "event") -> list[dict]:
        """The payloads of every item of this type received so far, oldest first."""
        with self.lock:
            return [
                item["payload"]
                for envelope in self.envelopes
                for item in envelope["items"]
                if item["headers"].get("type") == item_type
            ]

    def bodies(self) -> str:
        """Every envelope received, as text (to look for what must never be sent)."""
        with self.lock:
            return "\n".join(envelope["body"] for envelope in self.envelopes)


class _CountingHandler:
    """For benchmarks: accept and count, keep nothing."""

    def __init__(self):
        self.count = 0

    async def handle_DATA(self, smtp_server, session, envelope):
        self.count += len(envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def serve_smtp_forever(port: int) -> None:
    """``python -m celeste.devserver.loopback PORT``: a counting SMTP server in its own
    process (so a benchmark's client and server do not share one GIL). Prints the
    number of recipients received when it gets SIGTERM."""
    import signal

    handler = _CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    print(f"smtp listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    print(f"received {handler.count}", flush=True)


if __name__ == "__main__":
    import sys

    serve_smtp_forever(int(sys.argv[1]))
