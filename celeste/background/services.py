from django.db import transaction
from django.utils import timezone

from .models import FailedTask, FailedTaskStatus
from .queue import enqueue


def failed_task_retry(*, failed_task_ids: list[int]) -> int:
    """Re-enqueue open inbox jobs with their original arguments; returns how many."""
    with transaction.atomic():
        jobs = list(
            FailedTask.objects.select_for_update().filter(id__in=failed_task_ids, status=FailedTaskStatus.OPEN)
        )
        for job in jobs:
            enqueue(job.task_name, **job.kwargs)
            job.status = FailedTaskStatus.RETRIED
            job.resolved_at = timezone.now()
            job.save(update_fields=["status", "resolved_at", "updated_at"])
    return len(jobs)


def failed_task_discard(*, failed_task_ids: list[int]) -> int:
    return FailedTask.objects.filter(id__in=failed_task_ids, status=FailedTaskStatus.OPEN).update(
        status=FailedTaskStatus.DISCARDED, resolved_at=timezone.now(), updated_at=timezone.now()
    )
