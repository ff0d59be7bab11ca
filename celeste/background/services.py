from django.db import transaction
from django.utils import timezone

from celeste.celery import app as celery_app

from .models import FailedTask, FailedTaskStatus, TaskMode
from .queue import enqueue
from .switches import task_mode


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
            enqueue(task, **job.kwargs)
            job.status = FailedTaskStatus.RETRIED
            job.resolved_at = timezone.now()
            job.save(update_fields=["status", "resolved_at", "updated_at"])
    return len(jobs)


def failed_task_discard(*, failed_task_ids: list[int]) -> int:
    return FailedTask.objects.filter(id__in=failed_task_ids, status=FailedTaskStatus.OPEN).update(
        status=FailedTaskStatus.DISCARDED, resolved_at=timezone.now(), updated_at=timezone.now()
    )
