"""Reads for the task console (admin page and staff API): per task type, its switch,
queue and backlog now, and its runs, errors, retries and run time over a window,
from the per-minute TaskSample rows the sampler writes (services.task_samples_record).

Durations come from the merged run time histograms of the window, interpolated
within a bucket as Prometheus' ``histogram_quantile`` does, so p95 over a day is
the p95 of the day's runs, not an average of per-minute p95s."""

import logging
import math
from datetime import datetime, timedelta

import redis
from django.db.models import Count
from django.utils import timezone

from celeste.celery import app as celery_app

from .metrics import queue_lengths
from .models import FailedTask, FailedTaskStatus, OutboxMessage, TaskMode, TaskSample, TaskSwitch
from .routing import queue_of

logger = logging.getLogger(__name__)

# At most this many points per series: a day is 144 ten-minute buckets.
SERIES_POINTS = 144
MAX_HOURS = 168


# --- histograms ---------------------------------------------------------------------


def _bound(le: str) -> float:
    return math.inf if le in ("+Inf", "inf", "Inf") else float(le)


def buckets_add(into: dict[str, float], more: dict[str, float], *, sign: int = 1) -> dict[str, float]:
    """``into`` + ``more`` (or minus, ``sign=-1``), bucket by bucket; returns ``into``."""
    for le, count in more.items():
        into[le] = into.get(le, 0) + sign * count
    return into


def histogram_quantile(q: float, buckets: dict[str, float]) -> float | None:
    """The ``q``-quantile (0..1) of cumulative buckets ``{le: count}``, as Prometheus
    computes it: find the bucket holding the rank, interpolate linearly within it
    (from 0 for the first bucket); a rank in the +Inf bucket is the highest finite
    bound. None without observations."""
    ordered = sorted((_bound(le), count) for le, count in buckets.items())
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, (_, count) in enumerate(ordered) if count >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    upper, count = ordered[index]
    lower, below = (0.0, 0) if index == 0 else ordered[index - 1]
    if index == 0 and upper <= 0:
        return upper
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


# --- the console --------------------------------------------------------------------


def outbox_backlog_counts() -> dict[str, int]:
    """Unfinished jobs per task."""
    return dict(OutboxMessage.objects.values_list("task_name").annotate(n=Count("id")).order_by())


def inbox_open_counts() -> dict[str, int]:
    """Open failed-task inbox rows per task."""
    open_rows = FailedTask.objects.filter(status=FailedTaskStatus.OPEN)
    return dict(open_rows.values_list("task_name").annotate(n=Count("id")).order_by())


def inbox_open_total() -> int:
    """Open failed-task inbox rows (the admin home shows it)."""
    return FailedTask.objects.filter(status=FailedTaskStatus.OPEN).count()


def task_names() -> list[str]:
    """Every registered task of ours (Celery's own aside)."""
    return sorted(name for name in celery_app.tasks if not name.startswith("celery."))


def _window(hours: int, now: datetime) -> tuple[datetime, datetime, int]:
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    bucket_minutes = max(1, math.ceil(hours * 60 / SERIES_POINTS))
    return end - timedelta(hours=hours), end, bucket_minutes


def _live_queue_lengths() -> dict[str, int] | None:
    try:
        return queue_lengths()
    except redis.RedisError:
        # The page stays useful while Redis is down; the figure shows as unknown.
        logger.warning("console.queue_lengths_failed", exc_info=True)
        return None


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def task_console(*, hours: int = 24, now: datetime | None = None) -> dict:
    """The console's figures for the last ``hours`` (1..MAX_HOURS), one entry per task:
    switch, queue, messages waiting, backlog and open inbox rows now; runs, runs per
    minute, failures, error rate, retries, p50/p95 run time over the window; the last
    failure; and ``series``: the window in buckets of ``bucket_minutes`` (runs,
    failures, retries, p95, and the largest queue length and backlog sampled)."""
    now = now or timezone.now()
    since, until, bucket_minutes = _window(hours, now)
    points = math.ceil(hours * 60 / bucket_minutes)
    samples = TaskSample.objects.filter(minute__gte=since, minute__lt=until).values(
        "minute", "task_name", "runs", "failures", "retries", "runtime_buckets", "queue_length", "outbox_backlog"
    )

    names = set(task_names())
    by_task: dict[str, list[dict]] = {}
    for sample in samples.iterator(chunk_size=2000):
        by_task.setdefault(sample["task_name"], []).append(sample)
    names |= set(by_task)

    modes = dict(TaskSwitch.objects.values_list("task_name", "mode"))
    backlog = outbox_backlog_counts()
    inbox = inbox_open_counts()
    latest_failures = (
        FailedTask.objects.filter(task_name__in=names)
        .order_by("task_name", "-created_at", "-id")
        .distinct("task_name")  # the latest per task (Postgres DISTINCT ON)
        .only("id", "task_name", "error", "created_at", "status")
    )
    last_failures = {failure.task_name: failure for failure in latest_failures}
    lengths = _live_queue_lengths()
    minutes = hours * 60

    tasks = []
    for name in sorted(names):
        series = [
            {
                "start": since + timedelta(minutes=i * bucket_minutes),
                "runs": 0,
                "failures": 0,
                "retries": 0,
                "queue_length": 0,
                "outbox_backlog": 0,
                "_buckets": {},
            }
            for i in range(points)
        ]
        window_buckets: dict[str, float] = {}
        runs = failures = retries = 0
        for sample in by_task.get(name, []):
            point = series[int((sample["minute"] - since).total_seconds() // 60) // bucket_minutes]
            point["runs"] += sample["runs"]
            point["failures"] += sample["failures"]
            point["retries"] += sample["retries"]
            point["queue_length"] = max(point["queue_length"], sample["queue_length"])
            point["outbox_backlog"] = max(point["outbox_backlog"], sample["outbox_backlog"])
            buckets_add(point["_buckets"], sample["runtime_buckets"])
            buckets_add(window_buckets, sample["runtime_buckets"])
            runs += sample["runs"]
            failures += sample["failures"]
            retries += sample["retries"]
        for point in series:
            point["p95_seconds"] = _seconds(histogram_quantile(0.95, point.pop("_buckets")))

        queue = queue_of(name)
        failure = last_failures.get(name)
        tasks.append(
            {
                "task_name": name,
                "mode": modes.get(name, TaskMode.BACKGROUND),
                "queue": queue,
                "messages_waiting": None if lengths is None else lengths.get(queue, 0),
                "runs": runs,
                "runs_per_minute": round(runs / minutes, 3),
                "failures": failures,
                "error_rate": round(failures / runs, 4) if runs else None,
                "retries": retries,
                "p50_seconds": _seconds(histogram_quantile(0.5, window_buckets)),
                "p95_seconds": _seconds(histogram_quantile(0.95, window_buckets)),
                "outbox_backlog": backlog.get(name, 0),
                "inbox_open": inbox.get(name, 0),
                "last_failure": None
                if failure is None
                else {
                    "id": failure.id,
                    "at": failure.created_at,
                    "error": failure.error[:200],
                    "status": failure.status,
                },
                "series": series,
            }
        )
    return {"hours": hours, "since": since, "until": until, "bucket_minutes": bucket_minutes, "tasks": tasks}
