"""``enqueue()``: the one door through which code schedules background work."""

import json
import logging
import traceback

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from celeste.celery import app as celery_app

from .models import FailedTask, OutboxMessage, TaskMode, TaskSwitch
from .publisher import publisher
from .redis import client
from .switches import task_mode

logger = logging.getLogger(__name__)


def enqueue(task_name: str, **kwargs) -> OutboxMessage | None:
    """Schedule ``task_name(**kwargs)`` according to the task's switch.

    Call it inside the transaction whose writes make the work necessary: the
    outbox row commits or rolls back with them. kwargs must be JSON (ids and
    small scalars, never model instances or personal data).
    """
    if task_name not in celery_app.tasks:
        raise ValueError(f"Unknown task {task_name!r}")
    mode = task_mode(task_name)
    if mode == TaskMode.OFF:
        # Counted after commit: inside the caller's transaction the switch row's lock
        # would serialise every concurrent writer of this task type.
        transaction.on_commit(lambda: _count_skip(task_name), robust=True)
        return None
    if mode == TaskMode.SYNC:
        transaction.on_commit(lambda: run_inline(task_name, kwargs), robust=True)
        return None
    message = OutboxMessage.objects.create(task_name=task_name, kwargs=kwargs)
    transaction.on_commit(lambda: publisher.submit(message), robust=True)
    return message


def _count_skip(task_name: str) -> None:
    TaskSwitch.objects.filter(task_name=task_name).update(skipped_count=F("skipped_count") + 1)
    logger.info("task.skipped", extra={"task_name": task_name})


def _send(message: OutboxMessage) -> None:
    # The outbox id doubles as the Celery task id, so a duplicate delivery is traceable.
    celery_app.send_task(message.task_name, kwargs=message.kwargs, task_id=str(message.id))


def coalesce_key(task_name: str, kwargs: dict) -> str:
    return f"celeste:coalesce:{task_name}:{json.dumps(kwargs, sort_keys=True)}"


def coalesce_reset(task_name: str, **kwargs) -> None:
    """Forget the "already queued" mark: on worker start it may belong to a
    message a killed worker took with it."""
    try:
        client().delete(coalesce_key(task_name, kwargs))
    except redis.RedisError:
        pass


def _already_queued(message: OutboxMessage) -> bool:
    """For tasks with ``coalesce_seconds``: True if an equal message is queued and
    not started yet (it will do this one's work too). The task clears the mark
    when it starts, so work committed after that gets a message of its own."""
    seconds = getattr(celery_app.tasks[message.task_name], "coalesce_seconds", None)
    if not seconds:
        return False
    try:
        return not client().set(coalesce_key(message.task_name, message.kwargs), "1", nx=True, ex=seconds)
    except redis.RedisError:
        return False  # then publishing fails too, and the relay takes over


def publish_messages(messages: list[OutboxMessage]) -> int:
    """Publish committed outbox rows; the published ones are deleted in one
    statement. On a failure the rest stay for the relay. Returns how many went out."""
    done = []
    for message in messages:
        try:
            if not _already_queued(message):
                _send(message)
        except Exception as exc:  # broker down: this row and the rest stay in the outbox
            failed = [m.id for m in messages[len(done):]]
            OutboxMessage.objects.filter(id__in=failed).update(
                publish_attempts=F("publish_attempts") + 1, last_error=repr(exc)[:2000], updated_at=timezone.now()
            )
            logger.warning("outbox.publish_failed", extra={"task_name": message.task_name, "error": repr(exc)})
            break
        done.append(message.id)
    OutboxMessage.objects.filter(id__in=done).delete()
    return len(done)


def outbox_relay(*, limit: int = 500, min_age_seconds: float | None = None) -> int:
    """Publish what the after-commit publishers left behind. Returns how many went out.

    Rows younger than ``min_age_seconds`` (default OUTBOX_RELAY_MIN_AGE_SECONDS)
    belong to their own publisher for now; SKIP LOCKED lets several relays run
    at once without double sends.
    """
    if min_age_seconds is None:
        min_age_seconds = settings.OUTBOX_RELAY_MIN_AGE_SECONDS
    cutoff = timezone.now() - timezone.timedelta(seconds=min_age_seconds)
    published = []
    with transaction.atomic():
        rows = (
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(created_at__lte=cutoff)
            .order_by("created_at")[:limit]
        )
        for message in rows:
            try:
                _send(message)
            except Exception as exc:  # broker still down: try again next time
                OutboxMessage.objects.filter(id=message.id).update(
                    publish_attempts=F("publish_attempts") + 1, last_error=repr(exc)[:2000]
                )
                logger.warning("outbox.relay_failed", extra={"error": repr(exc), "published": len(published)})
                break
            published.append(message.id)
        OutboxMessage.objects.filter(id__in=published).delete()
    if published:
        logger.info("outbox.relayed", extra={"count": len(published)})
    return len(published)


def run_inline(task_name: str, kwargs: dict) -> None:
    """The ``sync`` switch: run the task in this process right after commit.
    A failure goes to the inbox instead of breaking the caller's response."""
    task = celery_app.tasks[task_name]
    try:
        task(**kwargs)
    except Exception as exc:
        logger.exception("task.inline_failed", extra={"task_name": task_name})
        failed_task_record(
            task_name=task_name, task_id="", kwargs=kwargs, exc=exc, tb=traceback.format_exc(), attempts=1
        )


def failed_task_record(*, task_name: str, task_id: str, kwargs: dict, exc: BaseException, tb: str, attempts: int):
    from .errors import PermanentError

    values = {
        "task_name": task_name,
        "kwargs": kwargs,
        "error": f"{type(exc).__name__}: {exc}"[:5000],
        "traceback": tb,
        "attempts": attempts,
        "permanent": isinstance(exc, PermanentError),
    }
    if task_id:  # a redelivered message that fails again updates its row
        failed, _ = FailedTask.objects.update_or_create(task_id=task_id, defaults=values)
    else:
        failed = FailedTask.objects.create(**values)
    logger.error("task.failed", extra={"task_name": task_name, "failed_task_id": failed.id})
    return failed
