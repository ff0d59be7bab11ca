"""Prometheus metrics across processes: gunicorn workers and Celery pool children
each write their own counters to a file under PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode) and a scrape sums the files.

- ``/metrics`` on the web (``metrics_view``) serves every file in the directory
  plus the gauges apps compute at scrape time from Postgres and Redis
  (``collector_register``). On one host (``make run``) the workers write to the
  same directory, so one scrape sees everything.
- A worker on a host of its own (a container) serves its own files on
  WORKER_METRICS_PORT (``worker_exporter_start``).

Both answer only a bearer METRICS_TOKEN, or loopback callers when none is set.
"""

import glob
import hmac
import ipaddress
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger(__name__)

_collectors: list[Callable[[], Iterable]] = []
# A Celery worker tags its processes' files, so its exporter serves only its own
# (see worker_tag_set); web processes keep plain pid file names.
_worker_tag = ""
_identifier: str | None = None  # _process_identifier's answer in this process


def enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def multiprocess_setup(directory: Path | str, *, clean: bool = False) -> None:
    """Switch prometheus-client to multiprocess mode on ``directory``. Must run
    before the first metric is created (settings call it); ``clean`` empties it,
    for whoever starts all the processes of a host (``make run``, the tests)."""
    directory = Path(directory)
    if clean and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # The class reads the directory when a process opens its file, and reopens
    # when the identifier changes (a fork, or a worker tagging itself).
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)


def multiprocess_off() -> None:
    """METRICS_ENABLED=0: counters stay in each process's memory, nothing is written,
    even if the directory variable was inherited from a parent process."""
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    values.ValueClass = values.MutexValue


def _process_identifier() -> str:
    # prometheus-client asks on every counter increment (to notice a fork): worked out once
    # per process and tag, not per increment (a few per request, dozens per job).
    global _identifier
    if _identifier is None:
        pid = str(os.getpid())
        _identifier = f"w{_worker_tag}p{pid}" if _worker_tag else pid
    return _identifier


def _identifier_forget() -> None:
    global _identifier
    _identifier = None


os.register_at_fork(after_in_child=_identifier_forget)


def worker_tag_set(tag: str) -> None:
    """Called in a Celery worker's main process before the pool forks: from then
    on its own and its children's counters go to files named by ``tag``."""
    global _worker_tag
    _worker_tag = tag
    _identifier_forget()


def collector_register(collect: Callable[[], Iterable]) -> None:
    """An app's scrape-time gauges: ``collect()`` yields metric families
    (``prometheus_client.core.GaugeMetricFamily``). Must stay cheap (a few
    indexed queries): it runs on every scrape. An error skips that collector."""
    if collect not in _collectors:
        _collectors.append(collect)


class _AppCollectors:
    def collect(self):
        for collect in _collectors:
            try:
                yield from collect()
            except Exception:
                logger.warning("metrics.collector_failed", extra={"collector": collect.__qualname__}, exc_info=True)


class _FilesCollector(MultiProcessCollector):
    """The directory's files whose names match ``pattern`` (one worker's)."""

    def __init__(self, registry, pattern: str):
        super().__init__(registry)
        self._pattern = pattern

    def collect(self):
        return self.merge(glob.glob(os.path.join(self._path, self._pattern)), accumulate=True)


def web_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_AppCollectors())
    return registry


def worker_registry(tag: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    _FilesCollector(registry, f"*_w{tag}p*.db")
    return registry


def worker_samples(tag: str, name: str) -> list:
    """Samples of one metric summed over one worker's processes (for the task console)."""
    return [s for family in worker_registry(tag).collect() if family.name == name for s in family.samples]


def sample_value(name: str, labels: dict | None = None) -> float:
    """One sample summed over every process on this host (tests, benchmarks)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry.get_sample_value(name, labels or {}) or 0.0


# --- who may scrape ------------------------------------------------------------------


def _allowed(authorization: str, remote_addr: str) -> bool:
    token = os.environ.get("METRICS_TOKEN", "")
    if token:
        return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(remote_addr).is_loopback
    except ValueError:
        return False


def metrics_view(request):
    from django.http import Http404, HttpResponse

    if not enabled():
        raise Http404("Metrics are off (METRICS_ENABLED=0).")
    if not _allowed(request.headers.get("Authorization", ""), request.META.get("REMOTE_ADDR", "")):
        response = HttpResponse("A bearer token (METRICS_TOKEN) is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(web_registry()), content_type=CONTENT_TYPE_LATEST)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes every 15 s are not news
        pass


def worker_exporter_start(tag: str, port: int, address: str = "0.0.0.0") -> WSGIServer:
    """Serve one worker's metrics on ``port`` from a daemon thread of its main process."""
    registry = worker_registry(tag)

    def app(request, start_response):  # WSGI: ``request`` is the environ dict
        if not _allowed(request.get("HTTP_AUTHORIZATION", ""), request.get("REMOTE_ADDR", "")):
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="metrics"')])
            return [b"A bearer token (METRICS_TOKEN) is required.\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry)]

    server = make_server(address, port, app, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="celeste-metrics", daemon=True).start()
    return server
