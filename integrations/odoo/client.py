"""A small Odoo external-API client over XML-RPC (``/xmlrpc/2/common`` and ``/xmlrpc/2/object``).

It knows nothing of Celeste's models: it authenticates once (the uid is cached
per client), runs ``execute_kw`` with connect and read timeouts, and turns every
failure into an ``OdooTransientError`` (worth retrying) or an
``OdooPermanentError`` (straight to the inbox).
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import threading
import time
import xml.parsers.expat
import xmlrpc.client
from dataclasses import dataclass

from django.conf import settings

from .errors import OdooNotConfigured, OdooPermanentError, OdooTransientError

logger = logging.getLogger(__name__)

# Odoo's XML-RPC fault codes (odoo/addons/base/controllers/rpc.py): 1 = application
# error (the faultString is the traceback), 2 = UserError/ValidationError/MissingError
# (warning), 3 = AccessDenied, 4 = AccessError.
FAULT_APPLICATION = 1
FAULT_WARNING = 2
FAULT_ACCESS_DENIED = 3
FAULT_ACCESS_ERROR = 4

# Older servers and the legacy /xmlrpc/ endpoint name the exception in the string.
PERMANENT_MARKERS = ("AccessDenied", "AccessError", "UserError", "ValidationError", "MissingError")
AUTH_MARKERS = ("AccessDenied",)
# Odoo retries serialization failures itself a few times; one that still reaches
# us is a contended row, which a later attempt will very likely get.
CONCURRENCY_MARKERS = (
    "could not serialize access",
    "concurrent update",
    "SerializationFailure",
    "deadlock detected",
    "LockNotAvailable",
    "could not obtain lock",
)
# Safe to repeat when the first try's outcome is unknown (the response was lost).
IDEMPOTENT_METHODS = frozenset(
    {"search", "search_read", "search_count", "read", "fields_get", "name_search", "write", "action_apply_inventory"}
)
CONNECT_TIMEOUT_CAP = 5.0


def classify_fault(fault: xmlrpc.client.Fault) -> OdooTransientError | OdooPermanentError:
    text = str(fault.faultString)
    code = fault.faultCode
    short = text.strip().splitlines()[-1][:500] if text.strip() else f"fault {code}"
    if code == FAULT_ACCESS_DENIED or any(marker in text for marker in AUTH_MARKERS):
        return OdooPermanentError(f"Odoo refused the credentials: {short}", auth=True)
    if code in (FAULT_WARNING, FAULT_ACCESS_ERROR):
        return OdooPermanentError(f"Odoo fault {code}: {short}")
    if any(marker in text for marker in CONCURRENCY_MARKERS):
        return OdooTransientError(f"Odoo concurrency fault: {short}")
    if any(marker in text for marker in PERMANENT_MARKERS):
        return OdooPermanentError(f"Odoo fault {code}: {short}")
    # An unknown server error: maybe a bug, maybe a restart. Bounded retries, then the inbox.
    return OdooTransientError(f"Odoo fault {code}: {short}")


def classify(exc: BaseException) -> OdooTransientError | OdooPermanentError:
    if isinstance(exc, xmlrpc.client.Fault):
        return classify_fault(exc)
    if isinstance(exc, xmlrpc.client.ProtocolError):
        if exc.errcode >= 500 or exc.errcode in (408, 429):
            return OdooTransientError(f"Odoo HTTP {exc.errcode} {exc.errmsg}")
        # 401/403/404: a wrong URL or a proxy refusing us; retrying will not change it.
        return OdooPermanentError(f"Odoo HTTP {exc.errcode} {exc.errmsg} ({exc.url})", auth=True)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return OdooTransientError(f"Odoo timed out: {exc!r}")
    if isinstance(exc, (ConnectionError, OSError, http.client.HTTPException)):
        return OdooTransientError(f"Odoo unreachable: {exc!r}")
    if isinstance(exc, (xml.parsers.expat.ExpatError, xmlrpc.client.ResponseError)):
        # An HTML error page from a proxy in front of a restarting server.
        return OdooTransientError(f"Odoo answered garbage: {exc!r}")
    raise exc


class _TimeoutHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host, *, connect_timeout: float, read_timeout: float, **kwargs):
        super().__init__(host, timeout=connect_timeout, **kwargs)
        self.read_timeout = read_timeout

    def connect(self):
        super().connect()  # bounded by connect_timeout
        self.sock.settimeout(self.read_timeout)


class _TimeoutHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, *, connect_timeout: float, read_timeout: float, **kwargs):
        super().__init__(host, timeout=connect_timeout, **kwargs)
        self.read_timeout = read_timeout

    def connect(self):
        super().connect()
        self.sock.settimeout(self.read_timeout)


class TimeoutTransport(xmlrpc.client.Transport):
    """xmlrpc.client's transport has no timeout at all; this one bounds both the
    TCP connect and every read, and keeps the connection alive between calls."""

    def __init__(self, *, connect_timeout: float, read_timeout: float, https: bool = False):
        super().__init__()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.https = https

    def make_connection(self, host):
        if self._connection and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _x509 = self.get_host_info(host)
        cls = _TimeoutHTTPSConnection if self.https else _TimeoutHTTPConnection
        self._connection = host, cls(chost, connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)
        return self._connection[1]


@dataclass(frozen=True)
class OdooConfig:
    url: str
    db: str
    user: str
    api_key: str
    timeout: float = 10.0
    call_retries: int = 2

    @classmethod
    def from_settings(cls) -> OdooConfig | None:
        if not settings.ODOO_URL:
            return None
        return cls(
            url=settings.ODOO_URL.rstrip("/"),
            db=settings.ODOO_DB,
            user=settings.ODOO_USER,
            api_key=settings.ODOO_API_KEY,
            timeout=settings.ODOO_TIMEOUT_SECONDS,
            call_retries=settings.ODOO_CALL_RETRIES,
        )


class OdooClient:
    """One connection to one Odoo database. Not thread-safe: one per thread/process."""

    def __init__(self, config: OdooConfig):
        self.config = config
        self._uid: int | None = None
        self.calls = 0  # XML-RPC requests made (including failed ones), for logs and benchmarks

    def _proxy(self, endpoint: str) -> xmlrpc.client.ServerProxy:
        transport = TimeoutTransport(
            connect_timeout=min(self.config.timeout, CONNECT_TIMEOUT_CAP),
            read_timeout=self.config.timeout,
            https=self.config.url.startswith("https"),
        )
        return xmlrpc.client.ServerProxy(f"{self.config.url}/xmlrpc/2/{endpoint}", transport=transport, allow_none=True)

    @property
    def _common(self) -> xmlrpc.client.ServerProxy:
        if not hasattr(self, "_common_proxy"):
            self._common_proxy = self._proxy("common")
        return self._common_proxy

    @property
    def _object(self) -> xmlrpc.client.ServerProxy:
        if not hasattr(self, "_object_proxy"):
            self._object_proxy = self._proxy("object")
        return self._object_proxy

    def _reset_connections(self) -> None:
        # A connection that failed mid-request may hold half a response: start afresh.
        for name in ("_common_proxy", "_object_proxy"):
            proxy = self.__dict__.pop(name, None)
            if proxy is not None:
                proxy("close")()

    def _call(self, fn, *, retries: int):
        for attempt in range(retries + 1):
            self.calls += 1
            try:
                return fn()
            except Exception as exc:  # classify() re-raises what is not a transport/Odoo error
                error = classify(exc)
                if not isinstance(exc, xmlrpc.client.Fault):
                    self._reset_connections()
                if isinstance(error, OdooPermanentError) or attempt == retries:
                    raise error from exc
                # Short and jittered: the task-level retry does the long waits.
                time.sleep(random.uniform(0.05, 0.2 * (attempt + 1)))

    def version(self) -> dict:
        return self._call(lambda: self._common.version(), retries=self.config.call_retries)

    @property
    def uid(self) -> int:
        if self._uid is None:
            cfg = self.config
            uid = self._call(
                lambda: self._common.authenticate(cfg.db, cfg.user, cfg.api_key, {}), retries=cfg.call_retries
            )
            if not uid:
                raise OdooPermanentError(
                    f"Odoo refused the credentials of {cfg.user!r} on database {cfg.db!r}", auth=True
                )
            self._uid = uid
        return self._uid

    def execute(self, model: str, method: str, *args, **kwargs):
        """``execute_kw(db, uid, key, model, method, args, kwargs)``; idempotent
        methods get a couple of quick in-call retries on transient errors."""
        uid = self.uid
        cfg = self.config
        retries = cfg.call_retries if method in IDEMPOTENT_METHODS else 0
        try:
            return self._call(
                lambda: self._object.execute_kw(cfg.db, uid, cfg.api_key, model, method, list(args), kwargs),
                retries=retries,
            )
        except OdooPermanentError as exc:
            if exc.auth:
                self._uid = None  # re-authenticate next time (the key may have been rotated)
            raise

    # --- conveniences -----------------------------------------------------------

    def search(self, model: str, domain: list, **kwargs) -> list[int]:
        return self.execute(model, "search", domain, **kwargs)

    def search_read(self, model: str, domain: list, fields: list[str], **kwargs) -> list[dict]:
        return self.execute(model, "search_read", domain, fields=fields, **kwargs)

    def create(self, model: str, values: dict, **kwargs) -> int:
        return self.execute(model, "create", values, **kwargs)

    def write(self, model: str, ids: list[int], values: dict, **kwargs) -> bool:
        return self.execute(model, "write", ids, values, **kwargs)


OFF_MESSAGE = "ODOO_URL is not set: the Odoo integration is off"
_local = threading.local()


def odoo_client() -> OdooClient:
    """This thread's client for the configured Odoo (a new one when settings change).

    Raises OdooNotConfigured when ODOO_URL is unset.
    """
    config = OdooConfig.from_settings()
    if config is None:
        raise OdooNotConfigured(OFF_MESSAGE)
    client = getattr(_local, "client", None)
    if client is None or client.config != config:
        client = _local.client = OdooClient(config)
    return client


def odoo_enabled() -> bool:
    return bool(settings.ODOO_URL)


def many2one_id(value) -> int | None:
    """Odoo reads a many2one as ``[id, display_name]`` (or False when empty)."""
    if not value:
        return None
    return value[0] if isinstance(value, (list, tuple)) else int(value)
