import logging

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from celeste.celery import app as celery_app

from . import selectors
from .metrics import queue_lengths
from .models import FailedTask, FailedTaskStatus, TaskMode, TaskSample, TaskSwitch, TaskSwitchChange, WorkerHeartbeat
from .queue import enqueue
from .routing import queue_of
from .switches import forget_cached_switches, task_mode

logger = logging.getLogger(__name__)


def failed_task_retry(*, failed_task_ids: list[int]) -> int:
    """Re-enqueue open inbox jobs with their original arguments; returns how many.

    A job that ran out of retries usually left its domain state saying so (a
    delivery ``failed``), and its task leaves such state alone. So before each
    job is enqueued, its task's ``on_inbox_retry(**kwargs)`` restores the state
    the job needs, in this transaction: the restore and the new outbox row
    commit together or not at all. With the task's switch ``off`` the job is
    skipped as usual and nothing is restored (no run would follow it).
    """
    with transaction.atomic():
        jobs = list(FailedTask.objects.select_for_update().filter(id__in=failed_task_ids, status=FailedTaskStatus.OPEN))
        for job in jobs:
            task = celery_app.tasks[job.task_name]
            # Read from the class: Celery makes decorator options class attributes, and a
            # plain function read through the task instance would be bound to it.
            restore = getattr(type(task), "on_inbox_retry", None)
            if restore is not None and task_mode(job.task_name) != TaskMode.OFF:
                restore(**job.kwargs)
            message = enqueue(task, **job.kwargs)
            job.status = FailedTaskStatus.RETRIED
            job.resolved_at = timezone.now()
            # The new attempt's job id is its task id: if it fails too, its inbox row has it.
            job.retry_job_id = str(message.id) if message is not None else ""
            job.save(update_fields=["status", "resolved_at", "retry_job_id", "updated_at"])
    return len(jobs)


def failed_task_discard(*, failed_task_ids: list[int]) -> int:
    return FailedTask.objects.filter(id__in=failed_task_ids, status=FailedTaskStatus.OPEN).update(
        status=FailedTaskStatus.DISCARDED, resolved_at=timezone.now(), updated_at=timezone.now()
    )


@transaction.atomic
def task_switch_set(*, task_name: str, mode: str, by: str, reason: str = "", figures=None, **fields) -> TaskSwitch:
    """Set a task's switch and record the change (who, from, to, why). Every
    change goes through here: the admin, the task console, the breaker.
    ``fields`` are other switch fields changed with it (the breaker's state).
    Other processes see it within TASK_SWITCH_CACHE_SECONDS; this one at once."""
    if mode not in TaskMode.values:
        raise ValueError(f"Unknown mode {mode!r}.")
    switch, _ = TaskSwitch.objects.select_for_update().get_or_create(task_name=task_name)
    before = switch.mode
    switch.mode = mode
    for name, value in fields.items():
        setattr(switch, name, value)
    switch.save()
    if before != mode or reason:
        TaskSwitchChange.objects.create(
            switch=switch, changed_by=by, from_mode=before, to_mode=mode, reason=reason, figures=figures or {}
        )
    transaction.on_commit(forget_cached_switches)
    if before == TaskMode.OFF and mode == TaskMode.BACKGROUND:
        task = celery_app.tasks.get(task_name)
        redo = getattr(type(task), "on_switch_back", None) if task is not None else None
        if redo is not None:  # after forget_cached_switches: what it enqueues is queued, not skipped
            transaction.on_commit(redo)
            logger.info("task.switch_back_redo", extra={"task_name": task_name})
    return switch


# --- the task console's samples -------------------------------------------------------

_COUNTS = ("succeeded", "failed", "retried")


def _totals_empty() -> dict:
    return {"succeeded": 0, "failed": 0, "retried": 0, "runtime_buckets": {}, "runtime_sum": 0.0}


def totals_delta(now: dict, before: dict) -> dict:
    """One task's counts in ``now`` minus those in ``before`` (a heartbeat's totals).
    A count that went down means the counters started again from zero (the metrics
    files were emptied): then all of ``now`` is new, as Prometheus' rate() reads a reset."""
    now = {**_totals_empty(), **now}
    before = {**_totals_empty(), **before}
    reset = any(now[key] < before[key] for key in _COUNTS) or any(
        count < before["runtime_buckets"].get(le, 0) for le, count in now["runtime_buckets"].items()
    )
    if reset:
        before = _totals_empty()
    return {
        **{key: now[key] - before[key] for key in _COUNTS},
        "runtime_buckets": selectors.buckets_add(dict(now["runtime_buckets"]), before["runtime_buckets"], sign=-1),
        "runtime_sum": max(0.0, now["runtime_sum"] - before["runtime_sum"]),
    }


def _totals_add(into: dict, more: dict) -> None:
    for key in _COUNTS:
        into[key] += more[key]
    selectors.buckets_add(into["runtime_buckets"], more["runtime_buckets"])
    into["runtime_sum"] += more["runtime_sum"]


def task_samples_record(*, at=None) -> int:
    """Write this minute's TaskSample rows (the task console's history); returns how many.

    Each worker's heartbeat carries its cumulative per-task totals. For every row this
    counts what is new since the sampler last read it (its own zero for a new worker, so
    a restart counts from there), sums that over the workers per task, and stores one
    row per task for the minute, with what waits now (queue, backlog, inbox). Rows are
    keyed by minute: a second run in the same minute recounts from the same baseline
    and rewrites the same rows. Tasks with nothing to show get no row. Samples older
    than TASK_SAMPLES_KEEP_DAYS are deleted."""
    at = at or timezone.now()
    minute = at.replace(second=0, microsecond=0)
    try:
        lengths = queue_lengths()
    except redis.RedisError:
        logger.warning("console.queue_lengths_failed", exc_info=True)
        lengths = {}
    backlog = selectors.outbox_backlog_counts()
    inbox = selectors.inbox_open_counts()

    with transaction.atomic():
        # Locked so the deltas and the rows' bookkeeping commit together (a beat waits a moment).
        beats = list(WorkerHeartbeat.objects.select_for_update().order_by("worker_id"))
        if any(beat.sampled_minute and beat.sampled_minute > minute for beat in beats):
            # A tick older than the last sample (delivered late): its runs are counted already.
            logger.info("console.sample_skipped", extra={"minute": minute.isoformat()})
            return 0
        deltas: dict[str, dict] = {}
        for beat in beats:
            baseline = beat.baseline_totals if beat.sampled_minute == minute else beat.sampled_totals
            for task_name, totals in beat.task_totals.items():
                delta = totals_delta(totals, baseline.get(task_name, {}))
                _totals_add(deltas.setdefault(task_name, _totals_empty()), delta)
            beat.baseline_totals, beat.sampled_totals, beat.sampled_minute = baseline, beat.task_totals, minute
            beat.save(update_fields=["baseline_totals", "sampled_totals", "sampled_minute"])

        written = 0
        for task_name in sorted(set(selectors.task_names()) | set(deltas)):
            delta = deltas.get(task_name, _totals_empty())
            figures = {
                "runs": delta["succeeded"] + delta["failed"],
                "failures": delta["failed"],
                "retries": delta["retried"],
                "runtime_buckets": delta["runtime_buckets"],
                "runtime_sum": delta["runtime_sum"],
                "queue_length": lengths.get(queue_of(task_name), 0),
                "outbox_backlog": backlog.get(task_name, 0),
                "inbox_open": inbox.get(task_name, 0),
            }
            if not any(figures[key] for key in ("runs", "retries", "queue_length", "outbox_backlog", "inbox_open")):
                # Nothing to show; a row an earlier run of this minute wrote goes too.
                TaskSample.objects.filter(minute=minute, task_name=task_name).delete()
                continue
            TaskSample.objects.update_or_create(minute=minute, task_name=task_name, defaults=figures)
            written += 1
    task_samples_prune()
    return written


def task_samples_prune() -> int:
    keep = timezone.timedelta(days=settings.TASK_SAMPLES_KEEP_DAYS)
    return TaskSample.objects.filter(minute__lt=timezone.now() - keep).delete()[0]
