"""The job ledger's worker side: claiming, finishing and recovering jobs.

Redis is the transport, Postgres the record (see OutboxMessage). A worker claims
a job when it starts it and deletes the row when the job is finished; live
workers beat a heartbeat. The recovery (``jobs_recover``, part of the outbox
relay) republishes a job whose row says nobody can be working on it:

- claimed by a worker whose heartbeat stopped (SIGKILL, OOM, lost host), or whose
  lease ran out (the worker lost track of it);
- published, unclaimed, past its lease, and not in its broker queue: the message
  was taken by a worker that died before starting it (the Redis transport removes
  a message from the queue before it records it as unacknowledged).

A republished job may meet an older copy of its message (Redis restores a dead
worker's unacknowledged messages at the visibility timeout). The claim lets only
one copy run: a job that is finished, or held by another live worker, is skipped.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from . import main_process, metrics
from .models import OutboxMessage, WorkerHeartbeat
from .redis import client

logger = logging.getLogger(__name__)

# The message header that marks a ledger job (beat ticks and direct sends have no row).
JOB_HEADER = "celeste_job"
# The message header with the id of the request that enqueued the job (celeste/logs.py).
REQUEST_ID_HEADER = "celeste_request_id"
# How far from the right (the consuming end) the lost-message check looks in a queue.
QUEUE_SCAN_LIMIT = 20_000
_QUEUE_SCAN_PAGE = 1_000

# This worker's identity: set in the main process when the worker starts (before
# the pool forks, so its children inherit it). A restarted worker gets a new one.
_worker_id = ""


def worker_id() -> str:
    return _worker_id


def worker_id_assign(hostname: str) -> str:
    global _worker_id
    _worker_id = f"{hostname}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return _worker_id


def live_workers(now):
    return WorkerHeartbeat.objects.filter(
        last_seen_at__gte=now - timezone.timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS)
    )


def _live_workers(now):
    return live_workers(now).filter(worker_id=OuterRef("worker_id"))


# --- the task side (runs in the worker child that executes the job) ---------------


def waiting_for_the_database(write):
    """Run one of a task's bookkeeping writes (ledger claim, retry, finish; its
    stored result), waiting out a database restart.

    A write that fails leaves its job claimed by a live worker until the lease
    runs out (the hard time limit: minutes). So while the database is unreachable
    the write is tried again on a fresh connection, for up to
    JOB_LEDGER_DATABASE_WAIT_SECONDS. Not in the worker's main process (its loop
    must not stall; errors are logged there) nor inside a transaction (its
    connection cannot be replaced): there errors propagate at once."""
    deadline = time.monotonic() + settings.JOB_LEDGER_DATABASE_WAIT_SECONDS
    pause, waited = 0.1, False
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError) as exc:
            if (
                connection.in_atomic_block
                or main_process.in_worker_main_process()
                or time.monotonic() + pause > deadline
            ):
                raise
            if not waited:
                logger.warning("job.ledger_waits_for_database", extra={"error": repr(exc)})
                waited = True
        connection.close()  # broken: the next query connects afresh
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


# Joined into a bookkeeping statement (claim, finish, a stored result): that statement, run
# alone in autocommit, is its own transaction, and it commits without waiting for the WAL
# flush, which was most of its cost. A database crash may forget the last fraction of a second
# of them: then a finished job runs once more, or a lost claim gets the job republished, or a
# result row is missing. At-least-once delivery and idempotent tasks cover all three; domain
# writes stay synchronous. One statement, one round trip: no BEGIN / SET LOCAL / COMMIT around
# it (four round trips per write, each a wake-up of Postgres on a busy host).
ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS async_commit"


def job_claim(*, job_id: str, lease_seconds: float) -> bool:
    """Take the job for this process of this worker. False if it is finished already or
    another live process holds it: then this copy of the message must not run. A job held
    by a sibling pool process that is gone (killed inside it; the worker replaced it) is
    taken over at once: its message came back for that reason."""
    me, pid = worker_id() or f"{socket.gethostname()}:{os.getpid()}", os.getpid()
    if _claim(job_id=job_id, lease_seconds=lease_seconds, me=me, pids=[pid]):
        return True
    holder = OutboxMessage.objects.filter(id=job_id).values_list("worker_id", "worker_pid").first()
    if holder and holder[0] == me and holder[1] and not _process_alive(holder[1]):
        return _claim(job_id=job_id, lease_seconds=lease_seconds, me=me, pids=[pid, holder[1]])
    return False


def _claim(*, job_id: str, lease_seconds: float, me: str, pids: list[int]) -> bool:
    """The claim's one statement: the job is nobody's, already this process's (or the gone
    sibling's in ``pids``), its lease ran out, or its worker stopped beating."""

    def claim() -> bool:
        now = timezone.now()
        # One statement on the primary key (the ORM's form of it went through a subquery, 3x slower).
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                UPDATE background_outboxmessage AS o
                   SET worker_id = %(me)s, worker_pid = %(pid)s, lease_until = %(lease)s, runs = o.runs + 1,
                       updated_at = %(now)s,
                       -- its worker may start it before the publisher marked it published
                       published_at = COALESCE(o.published_at, %(now)s)
                  FROM {ASYNC_COMMIT}
                 WHERE o.id = %(id)s
                   AND (o.worker_id = '' OR (o.worker_id = %(me)s AND o.worker_pid = ANY(%(pids)s))
                        OR o.lease_until < %(now)s
                        OR NOT EXISTS (SELECT 1 FROM background_workerheartbeat AS h
                                        WHERE h.worker_id = o.worker_id AND h.last_seen_at >= %(alive_since)s))
                """,
                {
                    "me": me,
                    "pid": pids[0],
                    "pids": pids,
                    "id": job_id,
                    "now": now,
                    "lease": now + timezone.timedelta(seconds=lease_seconds),
                    "alive_since": now - timezone.timedelta(seconds=settings.WORKER_DEAD_AFTER_SECONDS),
                },
            )
            return cursor.rowcount == 1

    return waiting_for_the_database(claim)


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` (a pool child of this worker, so on this host) still runs.
    A killed child its parent has not reaped yet (a zombie) is gone too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc to ask: it answered the signal, so it is there
    return state not in ("Z", "X")


def jobs_take_gathered(*, task, limit: int) -> list[dict]:
    """Take over the jobs of a gathering task (CelesteTask.coalesce_gathers) that
    the publisher left in the care of a queued one: coalesced, so published but
    never sent. Called by that job when it runs, to do their work along with its
    own (e.g. mark all their rows in one statement). Returns their kwargs and
    finishes them in the caller's transaction: call it inside
    ``transaction.atomic()`` with the writes that do their work, so a rollback
    gives them back. Rows another caller holds are passed over (SKIP LOCKED); one
    nobody takes is republished when its lease runs out (``jobs_recover``)."""
    taken = list(
        OutboxMessage.objects.select_for_update(skip_locked=True)
        .filter(task_name=task.name, worker_id="", published_at__isnull=False, published_count=0)
        .order_by("created_at")
        .values_list("id", "kwargs")[:limit]
    )
    if taken:
        OutboxMessage.objects.filter(id__in=[job_id for job_id, _ in taken]).delete()
    return [kwargs for _, kwargs in taken]


def job_retry_scheduled(*, job_id: str, at=None, countdown: float = 0) -> None:
    """The job will run again at ``at`` (or ``countdown`` seconds from now: a Celery
    retry): whoever receives that message claims it then. Until then it is nobody's,
    and not lost."""

    def release() -> None:
        # The due time is taken when the write succeeds (it may have waited for the database).
        due = at or timezone.now() + timezone.timedelta(seconds=countdown)
        lease = due + timezone.timedelta(seconds=settings.JOB_UNCLAIMED_AFTER_SECONDS)
        OutboxMessage.objects.filter(id=job_id).update(
            worker_id="", worker_pid=None, lease_until=lease, updated_at=timezone.now()
        )

    waiting_for_the_database(release)


def job_finish(*, job_id: str) -> None:
    """The job is done, failed into the inbox, or skipped on purpose: drop its record.
    Ids that are not a ledger job's (beat ticks, direct sends) are ignored."""
    try:
        uuid.UUID(str(job_id))
    except ValueError:
        return

    def finish() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM background_outboxmessage USING {ASYNC_COMMIT} WHERE id = %s", [str(job_id)])

    waiting_for_the_database(finish)


# --- heartbeats (the worker's main process) --------------------------------------


def worker_heartbeat(*, hostname: str) -> None:
    now = timezone.now()
    # With it the worker's own task counts, for the task console's sampler (a read of
    # its metrics files, no round trip; empty while metrics are off). update_or_create
    # saves only these fields, so the sampler's bookkeeping on the row is left alone.
    beat = {
        "hostname": hostname,
        "pid": os.getpid(),
        "last_seen_at": now,
        "task_totals": metrics.task_totals(worker_id()),
    }
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id(), defaults=beat, create_defaults={**beat, "started_at": now}
    )


def worker_signed_off() -> None:
    """A clean shutdown: whatever this worker still holds is recovered at once,
    without waiting for its heartbeat to go stale. The task console loses the runs
    counted since the sampler last read the row (at most a minute's)."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id()).delete()


class HeartbeatThread(threading.Thread):
    """Beats and runs the recovery in the worker's main process, independent of
    its event loop (which stops while the broker reconnects) and of its pool
    (which may be busy with long tasks). Every database use first drops a
    connection that failed its health check; any error is logged, never fatal."""

    def __init__(self, *, hostname: str, step):
        super().__init__(name="celeste-heartbeat", daemon=True)
        self.hostname = hostname
        self.step = step
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.beat_once()
            self.stopping.wait(settings.WORKER_HEARTBEAT_SECONDS)
        try:
            main_process.check_connections()
            worker_signed_off()
        except Exception:
            logger.warning("worker.sign_off_failed", exc_info=True)
        finally:
            main_process.check_connections()

    def beat_once(self, *, step: bool = True):
        try:
            main_process.check_connections()
            worker_heartbeat(hostname=self.hostname)
            if step:
                self.step()
        except Exception:
            logger.warning("worker.heartbeat_failed", extra={"worker_id": worker_id()}, exc_info=True)

    def stop(self, timeout: float = 5):
        self.stopping.set()
        self.join(timeout)


# --- recovery (the relay) ----------------------------------------------------------


def _queue_of(task_name: str) -> str:
    from celeste.celery import app

    return app.amqp.router.route({}, task_name)["queue"].name


def _queued_ids(queue: str, wanted: set[str]) -> set[str]:
    """Which of ``wanted`` are still in the broker queue. Old jobs sit at the
    consuming (right) end, so the scan starts there and stops once all are found."""
    found: set[str] = set()
    redis_client = client()
    end = -1
    while len(found) < len(wanted) and -end <= QUEUE_SCAN_LIMIT:
        page = redis_client.lrange(queue, end - _QUEUE_SCAN_PAGE + 1, end)
        for raw in page:
            try:
                job_id = json.loads(raw)["headers"]["id"]
            except (ValueError, KeyError, TypeError):
                continue
            if job_id in wanted:
                found.add(job_id)
        if len(page) < _QUEUE_SCAN_PAGE:
            return found
        end -= _QUEUE_SCAN_PAGE
    # Past the scan limit: whatever was not found may still be further in; keep it.
    return found | (wanted if -end > QUEUE_SCAN_LIMIT else set())


def orphaned_jobs(now):
    """Claimed jobs whose worker is dead or whose lease ran out."""
    return OutboxMessage.objects.exclude(worker_id="").filter(Q(lease_until__lt=now) | ~Exists(_live_workers(now)))


def unclaimed_jobs(now):
    """Published jobs nobody started for a while and that no retry ETA covers."""
    return OutboxMessage.objects.filter(
        worker_id="",
        published_at__lt=now - timezone.timedelta(seconds=settings.JOB_UNCLAIMED_AFTER_SECONDS),
    ).filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))


def jobs_recover(*, send, limit: int = 500) -> int:
    """Republish jobs that a dead worker held or a lost message carried. Returns how many."""
    now = timezone.now()
    recovered = 0
    with transaction.atomic():
        orphans = list(orphaned_jobs(now).select_for_update(skip_locked=True)[:limit])
        candidates = list(unclaimed_jobs(now).select_for_update(skip_locked=True)[:limit])
        lost = _not_in_queue(candidates)
        for job, reason in [(j, "worker_gone") for j in orphans] + [(j, "message_lost") for j in lost]:
            try:
                send(job)
            except Exception as exc:  # broker down: next round
                logger.warning("job.recover_failed", extra={"job_id": str(job.id), "error": repr(exc)})
                break
            OutboxMessage.objects.filter(id=job.id).update(
                worker_id="",
                worker_pid=None,
                lease_until=None,
                published_at=timezone.now(),
                published_count=F("published_count") + 1,
                updated_at=timezone.now(),
            )
            recovered += 1
            logger.warning(
                "job.recovered",
                extra={"job_id": str(job.id), "task_name": job.task_name, "reason": reason, "held_by": job.worker_id},
            )
    return recovered


def _not_in_queue(candidates: list[OutboxMessage]) -> list[OutboxMessage]:
    by_queue: dict[str, set[str]] = {}
    for job in candidates:
        by_queue.setdefault(_queue_of(job.task_name), set()).add(str(job.id))
    present: set[str] = set()
    try:
        for queue, wanted in by_queue.items():
            present |= _queued_ids(queue, wanted)
    except redis.RedisError:
        return []  # cannot tell while Redis is down; and publishing would fail anyway
    return [job for job in candidates if str(job.id) not in present]


def heartbeats_prune(*, older_than_seconds: int = 86_400) -> int:
    return WorkerHeartbeat.objects.filter(
        last_seen_at__lt=timezone.now() - timezone.timedelta(seconds=older_than_seconds)
    ).delete()[0]
