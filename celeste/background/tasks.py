import logging

from celery import Task, shared_task
from django.conf import settings

from . import main_process
from .errors import PermanentError
from .queue import coalesce_reset, failed_task_record, outbox_relay

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
    # If set: a function(**kwargs) that failed_task_retry calls, in its transaction,
    # before re-enqueueing a job from the inbox. It restores the domain state the
    # job needs to redo its work (e.g. a failed delivery becomes pending again).
    on_inbox_retry = None

    def before_start(self, task_id, args, kwargs):
        if self.coalesce_seconds:
            coalesce_reset(self.name, **kwargs)

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


@shared_task(name="background.relay_outbox", base=CelesteTask, max_retries=0)
def relay_outbox() -> int:
    return outbox_relay()
