import logging
import random

from celery import Task, shared_task
from celery.exceptions import Ignore
from celery.signals import task_postrun
from django.conf import settings

from celeste.logs import request_id

from . import breaker, main_process
from .backpressure import Overflow
from .errors import PermanentError
from .ledger import JOB_HEADER, REQUEST_ID_HEADER, job_claim, job_finish, job_retry_scheduled
from .limits import slot_acquire, slot_release
from .metrics import DEFERRED, DUPLICATES_SKIPPED, REJECTED, request_labels
from .models import OutboxMessage
from .queue import coalesce_reset, failed_task_record, outbox_relay
from .services import task_samples_record
from .signing import SIGNATURE_HEADER, SignatureError, signature_verify

logger = logging.getLogger(__name__)


class CelesteTask(Task):
    """Base for every Celeste task: retries transient errors with exponential
    backoff and jitter; a permanent error or exhausted retries land in the inbox."""

    autoretry_for = (Exception,)
    dont_autoretry_for = (PermanentError,)
    retry_backoff = settings.TASK_RETRY_BACKOFF_SECONDS
    retry_backoff_max = settings.CELERY_TASK_MAX_RETRY_DELAY
    retry_jitter = True
    max_retries = settings.TASK_MAX_RETRIES
    # If set: while a message of this task (same kwargs) waits in the queue, new
    # ones are dropped at publish time; for tasks that do "whatever is pending".
    coalesce_seconds = None
    # With coalesce_seconds: messages coalesce per task whatever their kwargs, and a
    # coalesced job is not dropped but stays in the ledger in the care of the queued
    # one, which takes it (ledger.jobs_take_gathered) and does its work along with
    # its own; for tasks whose kwargs name the work (a pair to mark) but whose runs batch it.
    coalesce_gathers = False
    # If set: a function(**kwargs) that failed_task_retry calls, in its transaction,
    # before re-enqueueing a job from the inbox. It restores the domain state the
    # job needs to redo its work (e.g. a failed delivery becomes pending again).
    on_inbox_retry = None
    # The queue the task runs on (celeste_task(queue=…); routing.py reads it).
    # None: CELERY_TASK_DEFAULT_QUEUE ("fast").
    queue_name = None
    # If set: at most this many runs at once across all workers (limits.py); a run
    # that finds no free slot is put back on the queue for a little later.
    max_concurrency = None
    # What enqueue() does when the task's queue is at its maximum depth (backpressure.py).
    overflow = Overflow.REFUSE
    # What the switch's ``off`` means for this task, shown on its switch page.
    when_off = (
        "Dropped: jobs enqueued while off are counted as skipped and never run later; "
        "a periodic task runs again at its next tick."
    )
    # If set: a function() that task_switch_set calls after commit when the switch goes
    # from off back to background, for tasks whose skipped work must be redone.
    on_switch_back = None
    # High-frequency control-plane ticks: a run that returns 0 (found nothing) stores no
    # result row, its start is not tracked, and Celery's received/succeeded lines for it
    # are dropped (celeste.logs.IdleTickFilter), so idle ticks flood neither.
    quiet_when_idle = False

    def before_start(self, task_id, args, kwargs):
        if not self.request.is_eager:
            self._verify_signature(task_id, args, kwargs)
            # The job's log lines, and the jobs it enqueues, carry the id of the request it
            # came from. Set (or cleared) on every run; task_postrun clears it again
            # (signals.py), so a pool child never lends one job's id to the next.
            request_id.set(self.request.get(REQUEST_ID_HEADER) or "")
        if self._is_job() and not job_claim(job_id=task_id, lease_seconds=self._lease_seconds()):
            # A second copy of the message (a recovered job meeting its original):
            # the job is finished, or another live worker (or pool process) has it.
            holder = OutboxMessage.objects.filter(id=task_id).values_list("worker_id", "worker_pid").first()
            logger.info(
                "job.duplicate_skipped",
                extra={
                    "job_id": task_id,
                    "task_name": self.name,
                    "held_by": f"{holder[0]} pid {holder[1]}" if holder is not None else "(finished)",
                },
            )
            DUPLICATES_SKIPPED.labels(name=self.name).inc()
            raise Ignore()
        if self.coalesce_seconds:
            coalesce_reset(self.name, **kwargs)
        if self.max_concurrency and not self.request.is_eager:
            slot = slot_acquire(self.name, limit=self.max_concurrency, hold_seconds=self._lease_seconds())
            if slot is None:
                self._defer(task_id, args, kwargs)
            self.request.celeste_slot = slot

    def slot_give_back(self):
        """After every run, whatever its outcome (task_postrun: Celery skips after_return
        for a retry or an Ignore, and a retried run must not keep its slot)."""
        slot = getattr(self.request, "celeste_slot", None)
        if slot:
            self.request.celeste_slot = None
            slot_release(self.name, slot)

    def _defer(self, task_id, args, kwargs):
        """No free slot: the same message (same id, same retry count) comes back
        after a short, jittered delay; this run ends without doing anything."""
        delay = settings.TASK_SLOT_WAIT_SECONDS * (1 + random.random())
        if self._is_job():
            job_retry_scheduled(job_id=task_id, countdown=delay)
        self.signature_from_request(self.request, args, kwargs, countdown=delay).apply_async()
        logger.info("task.deferred", extra={"task_name": self.name, "job_id": task_id, "limit": self.max_concurrency})
        DEFERRED.labels(name=self.name).inc()
        raise Ignore()

    def retry(
        self, args=None, kwargs=None, exc=None, throw=True, eta=None, countdown=None, max_retries=None, **options
    ):
        # The retry message is held by some worker until its ETA; record when it is
        # due, so the ledger neither counts it lost nor gives it to nobody.
        will_retry = self.request.retries < (self.max_retries if max_retries is None else max_retries)
        if will_retry and not self.request.called_directly:  # the last one is counted by on_failure
            breaker.outcome_record(self.name, ok=False)
        if self._is_job() and will_retry:
            # The due time is taken when the ledger records it (that may wait out a
            # database restart), just before the retry message is published.
            job_retry_scheduled(
                job_id=self.request.id, at=eta, countdown=self.default_retry_delay if countdown is None else countdown
            )
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def on_success(self, retval, task_id, args, kwargs):
        if self._is_job():
            job_finish(job_id=task_id)
        breaker.outcome_record(self.name, ok=True)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Normally called in the pool child; after a hard time limit, in the worker's main
        # process, where a database error must be logged rather than end the worker.
        with main_process.database_guard(
            "task.failure_not_recorded", task_name=self.name, task_id=task_id, task_kwargs=kwargs
        ):
            failed_task_record(
                task_name=self.name,
                task_id=task_id or "",
                kwargs=kwargs,
                exc=exc,
                tb=str(einfo),
                attempts=self.request.retries + 1,
            )
            # In the inbox now, so finished for the ledger (no-op for messages without a row).
            job_finish(job_id=task_id)
            breaker.outcome_record(self.name, ok=False)

    def _verify_signature(self, task_id, args, kwargs) -> None:
        """Run only what a Celeste process published (signing.py). Anything else is
        dropped before the ledger claim: Ignore acknowledges the message (acks_late
        would otherwise redeliver it forever) and writes no result, since a forged id
        may be a real job's. A real job dropped here (signed with a key removed too
        early) is still in the ledger, and the relay republishes it, signed afresh."""
        if not settings.TASK_SIGNING_ENABLED:
            return
        try:
            signature_verify(
                header=self.request.get(SIGNATURE_HEADER),
                task_name=self.name,
                task_id=task_id,
                args=args,
                kwargs=kwargs,
                job=bool(self.request.get(JOB_HEADER)),
            )
        except SignatureError as exc:
            logger.warning(
                "task.signature_rejected", extra={"task_name": self.name, "task_id": task_id, "reason": str(exc)}
            )
            REJECTED.labels(**request_labels(self)).inc()
            raise Ignore() from None  # the reason is in the line above

    def _is_job(self) -> bool:
        return bool(not self.request.called_directly and self.request.get(JOB_HEADER))

    def _lease_seconds(self) -> float:
        # A running job is done by its hard time limit; past that, it is lost.
        return (self.time_limit or settings.CELERY_TASK_TIME_LIMIT) + settings.JOB_UNCLAIMED_AFTER_SECONDS


def _slot_give_back(task=None, **_):
    if isinstance(task, CelesteTask):
        task.slot_give_back()


task_postrun.connect(_slot_give_back, dispatch_uid="background.slot_give_back", weak=False)


def celeste_task(name: str, *, queue: str | None = None, **options):
    """Declare a task: its stable name, written here once (the outbox, the inbox,
    switches and beat rows store it as data; code refers to the task object), and
    the queue it runs on (routing.py routes by it): ``slow`` for heavy work
    (embeddings, images); without one, the default queue (``fast``), so a
    backlog of one never starves the other. ``options`` are Celery's and
    CelesteTask's."""
    return shared_task(name=name, base=CelesteTask, queue_name=queue, **options)


@celeste_task("background.relay_outbox", bind=True, max_retries=0, quiet_when_idle=True)
def relay_outbox(self) -> int:
    """Publishes the jobs whose publishing failed (Redis down, a process died after its
    commit) and republishes the jobs of dead workers; returns how many went out."""
    count = outbox_relay()
    if not count and not self.request.called_directly:
        self.request.ignore_result = True  # read by the result backend after the run
    return count


@celeste_task("background.sample_tasks", max_retries=0)
def sample_tasks() -> int:
    """The task console's per-minute samples (every 60 s from beat). No retry: the
    next minute's run counts whatever this one missed."""
    return task_samples_record()


@celeste_task("background.ping")
def ping() -> str:
    """Does nothing. Enqueued, it checks the whole path end to end (outbox,
    broker, worker, ledger); the task-throughput benchmark measures the
    control plane's own cost per job with it."""
    return "pong"


@celeste_task("background.evaluate_breakers", max_retries=0)
def evaluate_breakers() -> list[str]:
    """Opens, half-opens and closes the task breakers (breaker.py); returns what changed."""
    return breaker.breakers_evaluate()
