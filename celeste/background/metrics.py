"""Task metrics named as celery-exporter names them (so its dashboards work):
``celery_task_*_total{name, hostname, queue_name}``, ``celery_task_runtime_seconds``,
``celery_queue_length{queue_name}``, ``celery_worker_up{hostname}``; and the control
plane's own ``celeste_*`` gauges, computed at scrape time from Postgres and Redis.

Counters are bumped from Celery signals in the process where the event happens
(sent: the publisher; received: the worker's main process; the rest: the pool
child), so they cost a file write, not a round trip. ``celery_task_rejected_total``
also counts the messages CelesteTask refuses for their signature (signing.py). celery-exporter spells the
queue label ``queue_name``; we follow it rather than the shorter ``queue``.
"""

import socket
import time

from celery import states
from celery.signals import (
    after_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_rejected,
    task_retry,
    task_success,
    task_unknown,
)
from django.conf import settings
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from celeste import metrics

LABELS = ("name", "hostname", "queue_name")
SENT = Counter("celery_task_sent_total", "Tasks published to the broker.", LABELS)
RECEIVED = Counter("celery_task_received_total", "Tasks a worker took from the broker.", LABELS)
STARTED = Counter("celery_task_started_total", "Tasks started.", LABELS)
SUCCEEDED = Counter("celery_task_succeeded_total", "Tasks that succeeded.", LABELS)
FAILED = Counter("celery_task_failed_total", "Tasks that failed (for good).", LABELS)
RETRIED = Counter("celery_task_retried_total", "Task runs that ended in a retry.", LABELS)
REJECTED = Counter(
    "celery_task_rejected_total", "Messages rejected (unknown task, bad message, bad signature).", LABELS
)
RUNTIME = Histogram(
    "celery_task_runtime_seconds",
    "Task run time.",
    LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
DUPLICATES_SKIPPED = Counter(
    "celeste_job_duplicates_skipped_total", "Second copies of a job a worker skipped.", ("name",)
)

DEFERRED = Counter(
    "celeste_task_deferred_total", "Runs put back because the task's concurrency limit was reached.", ("name",)
)

OVERFLOW = Counter(
    "celeste_task_overflow_total", "Jobs enqueued past their queue's maximum depth, by policy.", ("name", "policy")
)

_hostname = socket.gethostname()
_started: dict[str, float] = {}


def worker_tag(worker_id: str) -> str:
    """The part of a worker id that names its metrics files (unique per worker start)."""
    return worker_id.rsplit(":", 1)[-1]


def worker_identify(*, hostname: str, worker_id: str) -> None:
    """In a worker's main process before the pool forks: its and its children's
    counters carry its node name (celery@host, as celery-exporter labels them)
    and go to files of its own, which its exporter and the task console read."""
    global _hostname
    _hostname = hostname
    metrics.worker_tag_set(worker_tag(worker_id))


def worker_exporter_start(worker_id: str) -> None:
    if metrics.enabled() and settings.WORKER_METRICS_PORT:
        metrics.worker_exporter_start(worker_tag(worker_id), settings.WORKER_METRICS_PORT)


def task_totals(worker_id: str) -> dict[str, dict]:
    """One worker's cumulative counts per task, summed over its processes' files and
    over hostnames and queues, for its heartbeat row (the task console samples them):
    ``{task: {"succeeded", "failed", "retried", "runtime_buckets": {le: n}, "runtime_sum"}}``.
    Empty while metrics are off."""
    if not metrics.enabled():
        return {}
    outcomes = {
        "celery_task_succeeded_total": "succeeded",
        "celery_task_failed_total": "failed",
        "celery_task_retried_total": "retried",
    }
    totals: dict[str, dict] = {}
    for family in metrics.worker_registry(worker_tag(worker_id)).collect():
        for sample in family.samples:
            name = sample.labels.get("name")
            key = outcomes.get(sample.name)
            if name is None or (key is None and not sample.name.startswith("celery_task_runtime_seconds")):
                continue
            task = totals.setdefault(
                name, {"succeeded": 0, "failed": 0, "retried": 0, "runtime_buckets": {}, "runtime_sum": 0.0}
            )
            if key is not None:
                task[key] += int(sample.value)
            elif sample.name == "celery_task_runtime_seconds_bucket":
                buckets = task["runtime_buckets"]
                buckets[sample.labels["le"]] = buckets.get(sample.labels["le"], 0) + int(sample.value)
            elif sample.name == "celery_task_runtime_seconds_sum":
                task["runtime_sum"] += sample.value
    return totals


def _labels(name, delivery_info) -> dict:
    queue = (delivery_info or {}).get("routing_key", "")
    return {"name": name or "unknown", "hostname": _hostname, "queue_name": queue}


def request_labels(task) -> dict:
    return _labels(task.name, task.request.delivery_info)


def _on_sent(sender=None, routing_key=None, **_):
    SENT.labels(name=sender or "unknown", hostname=_hostname, queue_name=routing_key or "").inc()


def _on_received(request=None, **_):
    RECEIVED.labels(**_labels(request.name, request.delivery_info)).inc()


def _on_prerun(task_id=None, task=None, **_):
    STARTED.labels(**request_labels(task)).inc()
    _started[task_id] = time.perf_counter()


def _on_postrun(task_id=None, task=None, state=None, **_):
    began = _started.pop(task_id, None)
    # A skipped duplicate (IGNORED) did no work: timing it would drag the quantiles down.
    if began is not None and state in (states.SUCCESS, states.FAILURE, states.RETRY):
        RUNTIME.labels(**request_labels(task)).observe(time.perf_counter() - began)


def _on_success(sender=None, **_):
    SUCCEEDED.labels(**request_labels(sender)).inc()


def _on_failure(sender=None, **_):
    FAILED.labels(**request_labels(sender)).inc()


def _on_retry(sender=None, **_):
    RETRIED.labels(**request_labels(sender)).inc()


def _on_rejected(message=None, **_):
    headers = getattr(message, "headers", None) or {}
    REJECTED.labels(**_labels(headers.get("task"), getattr(message, "delivery_info", None))).inc()


def _on_unknown(name=None, message=None, **_):
    REJECTED.labels(**_labels(name, getattr(message, "delivery_info", None))).inc()


def connect_signals() -> None:
    for signal, handler in [
        (after_task_publish, _on_sent),
        (task_received, _on_received),
        (task_prerun, _on_prerun),
        (task_postrun, _on_postrun),
        (task_success, _on_success),
        (task_failure, _on_failure),
        (task_retry, _on_retry),
        (task_rejected, _on_rejected),
        (task_unknown, _on_unknown),
    ]:
        signal.connect(handler, dispatch_uid=f"background.metrics.{handler.__name__}", weak=False)


# --- scrape time ---------------------------------------------------------------------


def queue_names() -> list[str]:
    from celeste.celery import app

    declared = {getattr(task, "queue_name", None) for task in app.tasks.values()}
    return sorted(q for q in declared | {settings.CELERY_TASK_DEFAULT_QUEUE} if q)


def queue_lengths() -> dict[str, int]:
    from .redis import client

    pipe = client().pipeline()
    names = queue_names()
    for name in names:
        pipe.llen(name)
    return dict(zip(names, pipe.execute(), strict=True))


def collect():
    from .ledger import live_workers
    from .models import FailedTask, FailedTaskStatus, OutboxMessage, TaskSwitch, WorkerHeartbeat

    queue = GaugeMetricFamily("celery_queue_length", "Messages waiting in the broker queue.", labels=["queue_name"])
    for name, length in queue_lengths().items():
        queue.add_metric([name], length)
    yield queue

    now = timezone.now()
    up = GaugeMetricFamily(
        "celery_worker_up", "1 while a worker beats, 0 for a day after it stopped.", labels=["hostname"]
    )
    live = set(live_workers(now).values_list("hostname", flat=True))
    for hostname in WorkerHeartbeat.objects.values_list("hostname", flat=True).distinct():
        up.add_metric([hostname], 1 if hostname in live else 0)
    yield up

    jobs = OutboxMessage.objects.aggregate(
        pending=Count("id", filter=Q(published_at__isnull=True)),
        published=Count("id", filter=Q(published_at__isnull=False, worker_id="")),
        claimed=Count("id", filter=~Q(worker_id="")),
        oldest=Min("created_at"),
    )
    backlog = GaugeMetricFamily("celeste_outbox_backlog", "Jobs in the ledger by state.", labels=["state"])
    for state in ("pending", "published", "claimed"):
        backlog.add_metric([state], jobs[state])
    yield backlog
    oldest = jobs["oldest"]
    yield GaugeMetricFamily(
        "celeste_outbox_oldest_age_seconds",
        "Age of the oldest unfinished job.",
        value=(now - oldest).total_seconds() if oldest else 0,
    )

    inbox = GaugeMetricFamily("celeste_failed_tasks_open", "Open rows of the failed-task inbox.", labels=["task"])
    open_rows = FailedTask.objects.filter(status=FailedTaskStatus.OPEN)
    for task_name, count in open_rows.values_list("task_name").annotate(n=Count("id")).order_by():
        inbox.add_metric([task_name], count)
    yield inbox

    modes = GaugeMetricFamily(
        "celeste_task_switch_mode", "1 for each task's current switch mode.", labels=["task", "mode"]
    )
    for task_name, mode in TaskSwitch.objects.values_list("task_name", "mode"):
        modes.add_metric([task_name, mode], 1)
    yield modes
