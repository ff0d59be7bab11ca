"""``enqueue()``: the one door through which code schedules background work."""

import hashlib
import json
import logging
import re
import traceback

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from celeste.celery import app as celery_app
from celeste.logs import request_id

from .backpressure import Overflow, over_limit
from .ledger import ASYNC_COMMIT, JOB_HEADER, REQUEST_ID_HEADER, jobs_recover
from .metrics import OVERFLOW
from .models import FailedTask, FailureGroup, OutboxMessage, TaskMode, TaskSwitch
from .publisher import publisher
from .redis import client
from .routing import queue_of
from .switches import task_mode

logger = logging.getLogger(__name__)


def enqueue(task, *, countdown: float = 0, **kwargs) -> OutboxMessage | None:
    """Schedule ``task(**kwargs)`` according to the task's switch.

    ``task`` is the task itself (``enqueue(tasks.embed_products)``), never its
    name: a name is written once, where the task is defined. Call it inside the
    transaction whose writes make the work necessary: the outbox row commits or
    rolls back with them. kwargs must be JSON (ids and small scalars, never
    model instances or personal data).

    ``countdown``: run it no earlier than this many seconds from now (it must
    stay below the broker's visibility timeout). Only the ``background`` switch
    can wait; ``sync`` runs it at once after commit, like any inline job.
    """
    task_name = getattr(task, "name", None)
    if not isinstance(task_name, str):
        raise TypeError(f"enqueue() takes a task (e.g. tasks.embed_products), not {task!r}")
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
    full = over_limit(queue_of(task_name))
    if full is not None:
        policy = task.overflow
        OVERFLOW.labels(name=task_name, policy=policy).inc()
        logger.warning("task.queue_full", extra={"task_name": task_name, "policy": policy, "queue": full.queue})
        if policy == Overflow.REFUSE:
            raise full
        if policy == Overflow.SYNC:
            transaction.on_commit(lambda: run_inline(task_name, kwargs), robust=True)
        return None  # Overflow.DROP: a sweeper redoes the work
    # The request (or the job) this runs for: its id follows the job into the worker's log lines.
    eta = lease_until = None
    if countdown > 0:
        # A worker holds the message until its ETA: like a scheduled retry, the ledger
        # counts it neither lost nor late before then.
        eta = timezone.now() + timezone.timedelta(seconds=countdown)
        lease_until = eta + timezone.timedelta(seconds=settings.JOB_UNCLAIMED_AFTER_SECONDS)
    message = OutboxMessage.objects.create(
        task_name=task_name, kwargs=kwargs, request_id=request_id.get(), eta=eta, lease_until=lease_until
    )
    transaction.on_commit(lambda: publisher.submit(message), robust=True)
    return message


def _count_skip(task_name: str) -> None:
    TaskSwitch.objects.filter(task_name=task_name).update(skipped_count=F("skipped_count") + 1)
    logger.info("task.skipped", extra={"task_name": task_name})


def _send(message: OutboxMessage) -> None:
    # The outbox id doubles as the Celery task id, so a duplicate delivery is
    # traceable; the header tells the worker to claim and finish it in the ledger.
    # ``retries`` carries the starts so far: a job that keeps killing its worker
    # still runs out of retries and reaches the inbox. The request id goes along for
    # the task's log lines (CelesteTask sets it while the job runs).
    celery_app.send_task(
        message.task_name,
        kwargs=message.kwargs,
        task_id=str(message.id),
        headers={JOB_HEADER: True, REQUEST_ID_HEADER: message.request_id},
        retries=message.runs,
        eta=message.eta,
    )


def coalesce_key(task_name: str, kwargs: dict) -> str:
    if getattr(celery_app.tasks.get(task_name), "coalesce_gathers", False):
        kwargs = {}  # one mark per task: the queued job takes the others' work
    return f"celeste:coalesce:{task_name}:{json.dumps(kwargs, sort_keys=True)}"


def coalesce_reset(task_name: str, **kwargs) -> None:
    """Forget the "already queued" mark: on worker start it may belong to a
    message a killed worker took with it."""
    try:
        client().delete(coalesce_key(task_name, kwargs))
    except redis.RedisError:
        pass


def _coalesced(messages: list[OutboxMessage]) -> set:
    """Ids of the messages that another job of the same task (same kwargs; any, for a
    gathering task) will do the work of: tasks with ``coalesce_seconds`` whose "already
    queued" mark holds a job no worker has started yet. The mark holds that job's id, so a
    row published twice (by its publisher and the relay) never coalesces into itself. The
    task clears the mark when it starts, so work committed after that gets a message of its
    own; a mark whose job has started or finished (a republished row sets it again) is taken
    over instead.

    One Redis round trip and at most one query for the whole round, not three per message:
    a burst of 10,000 stock changes is 10,000 messages to decide."""
    marked = []
    for message in messages:
        seconds = getattr(celery_app.tasks[message.task_name], "coalesce_seconds", None)
        if seconds:
            marked.append((message, coalesce_key(message.task_name, message.kwargs), seconds))
    if not marked:
        return set()
    try:
        pipe = client().pipeline(transaction=False)
        for message, key, seconds in marked:
            pipe.set(key, str(message.id), nx=True, ex=seconds)
            pipe.get(key)  # after the SET: this message's own id if it took the mark
        replies = pipe.execute()
    except redis.RedisError:
        return set()  # then publishing fails too, and the relay takes over
    holders = [None if reply is None else reply.decode() for reply in replies[1::2]]
    this_round = {str(message.id) for message, _, _ in marked}
    others = {holder for holder in holders if holder is not None and holder not in this_round}
    # Checked after every message of this round committed: a holder found unclaimed here reads
    # their changes whenever a worker starts it.
    waiting = set()
    if others:
        with connection.cursor() as cursor:
            cursor.execute(_UNCLAIMED_SQL, [list(others)])
            waiting = {str(row[0]) for row in cursor.fetchall()}
    coalesced, taken = set(), {}
    for (message, key, seconds), holder in zip(marked, holders, strict=True):
        job_id = str(message.id)
        if key in taken or (holder != job_id and (holder in this_round or holder in waiting)):
            coalesced.add(message.id)  # a job sent in this round, or one still waiting, does it
        elif holder is not None and holder != job_id:
            try:
                client().set(key, job_id, ex=seconds)  # the holder started: this one takes the mark
            except redis.RedisError:
                pass
            taken[key] = job_id
    return coalesced


def _gathered_keep(messages: list[OutboxMessage], skip: set) -> set:
    """The coalesced rows of gathering tasks (CelesteTask.coalesce_gathers) stay in the
    ledger for the queued job to take: marked published, never sent. Their lease (the
    mark's lifetime) bounds how long they count on that job: a row it did not take
    by then is republished by the relay like a lost message. Marked before anything of
    this round is sent, so a job sent in this round never finds them locked."""
    kept: dict[float, list] = {}
    for message in messages:
        task = celery_app.tasks[message.task_name]
        if message.id in skip and getattr(task, "coalesce_gathers", False):
            kept.setdefault(task.coalesce_seconds, []).append(message.id)
    now = timezone.now()
    for seconds, ids in kept.items():
        OutboxMessage.objects.filter(id__in=ids).update(
            published_at=now, lease_until=now + timezone.timedelta(seconds=seconds), updated_at=now
        )
    return {job_id for ids in kept.values() for job_id in ids}


def publish_messages(messages: list[OutboxMessage]) -> int:
    """Publish pending outbox rows; on a failure the rest stay pending for the
    relay. A row stays in the ledger until its task finishes; a coalesced row
    (an equal message is queued and will do its work) is finished here, or, for a
    gathering task, left to the queued job to take (``_gathered_keep``).
    Returns how many were handled."""
    sent, coalesced = [], []
    skip = _coalesced(messages)
    kept = _gathered_keep(messages, skip) if skip else set()
    for message in messages:
        try:
            if message.id in skip:
                coalesced.append(message.id)
            else:
                _send(message)
                sent.append(message.id)
        except Exception as exc:  # broker down: this row and the rest stay in the outbox
            handled = len(sent) + len(coalesced)
            failed = [m.id for m in messages[handled:]]
            OutboxMessage.objects.filter(id__in=failed).update(
                publish_attempts=F("publish_attempts") + 1, last_error=repr(exc)[:2000], updated_at=timezone.now()
            )
            logger.warning("outbox.publish_failed", extra={"task_name": message.task_name, "error": repr(exc)})
            break
    if sent:
        _mark_published(sent)
    if dropped := [job_id for job_id in coalesced if job_id not in kept]:
        with connection.cursor() as cursor:
            cursor.execute(_DELETE_COALESCED_SQL, [dropped])
    return len(sent) + len(coalesced)


# The publisher runs these after every commit that enqueued: written out once, not
# compiled by the ORM each time (that was half the web's cost of a coalesced enqueue).
_UNCLAIMED_SQL = f"SELECT id FROM {OutboxMessage._meta.db_table} WHERE id = ANY(%s) AND worker_id = ''"
# Without waiting for the WAL flush: a crash that forgets the delete makes the relay publish
# the row again, and its job runs once more (every task may run twice).
_DELETE_COALESCED_SQL = f"DELETE FROM {OutboxMessage._meta.db_table} USING {ASYNC_COMMIT} WHERE id = ANY(%s)"


_MARK_PUBLISHED_SQL = f"""
UPDATE {OutboxMessage._meta.db_table}
   SET published_at = %(now)s, published_count = published_count + 1, updated_at = %(now)s
  FROM {ASYNC_COMMIT}
 WHERE id = ANY(%(ids)s) AND published_at IS NULL
"""


def _mark_published(job_ids: list) -> None:
    """Only still-pending rows: a fast worker may have claimed (or finished) one already.
    One statement written out once (the web's publisher runs it after every commit that
    enqueued), committed without waiting for the WAL flush: a crash that forgets the mark
    makes the relay publish the job again, and the claim skips the second copy."""
    with connection.cursor() as cursor:
        cursor.execute(_MARK_PUBLISHED_SQL, {"now": timezone.now(), "ids": list(job_ids)})


def outbox_relay(*, limit: int = 500, min_age_seconds: float | None = None) -> int:
    """Publish what the after-commit publishers left pending, and republish the
    jobs of dead workers and lost messages (see ledger.jobs_recover). Returns
    how many messages went out.

    Pending rows younger than ``min_age_seconds`` (default
    OUTBOX_RELAY_MIN_AGE_SECONDS) belong to their own publisher for now; SKIP
    LOCKED lets several relays run at once without double sends. Coalesced like
    the publisher: a burst left behind by an outage becomes one message per task.
    """
    if min_age_seconds is None:
        min_age_seconds = settings.OUTBOX_RELAY_MIN_AGE_SECONDS
    cutoff = timezone.now() - timezone.timedelta(seconds=min_age_seconds)
    with transaction.atomic():
        rows = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True, created_at__lte=cutoff)
            .order_by("created_at")[:limit]
        )
        handled = publish_messages(rows) if rows else 0
    recovered = jobs_recover(send=_send, limit=limit)
    if handled or recovered:
        logger.info("outbox.relayed", extra={"count": handled, "recovered": recovered})
    return handled + recovered


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
    with transaction.atomic():
        if task_id:  # a redelivered message that fails again updates its row
            failed, created = FailedTask.objects.update_or_create(task_id=task_id, defaults=values)
        else:
            failed, created = FailedTask.objects.create(**values), True
        if created or failed.group_id is None:
            failed.group = _failure_group_count(task_name, values["error"])
            failed.save(update_fields=["group"])
    # task_id explicitly: after a hard time limit this runs in the worker's main process,
    # where no running task lends its id to the line.
    job = {"task_id": task_id} if task_id else {}
    logger.error(
        "task.failed", extra={"task_name": task_name, **job, "failed_task_id": failed.id, "error": values["error"]}
    )
    return failed


# What varies between failures of one cause: ids, numbers, quoted values, addresses.
_VARIABLE = re.compile(r"'[^']*'|\"[^\"]*\"|0x[0-9a-f]+|[0-9a-f]{8}-[0-9a-f-]{27}|\d+", re.IGNORECASE)


def error_fingerprint(task_name: str, error: str) -> str:
    """The failure's group key: the task and its error's first line with what varies
    blanked (an order number, a port, a UUID), so one cause makes one group."""
    first_line = error.strip().splitlines()[0] if error.strip() else ""
    return hashlib.sha1(f"{task_name}\n{_VARIABLE.sub('_', first_line)}".encode()).hexdigest()


def _failure_group_count(task_name: str, error: str) -> FailureGroup:
    now = timezone.now()
    group, _ = FailureGroup.objects.get_or_create(
        task_name=task_name,
        fingerprint=error_fingerprint(task_name, error),
        defaults={"title": error.strip()[:300], "first_seen": now, "last_seen": now},
    )
    FailureGroup.objects.filter(id=group.id).update(count=F("count") + 1, last_seen=now)
    return group
