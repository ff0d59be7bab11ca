"""Celery routing (CELERY_TASK_ROUTES): every task goes to the queue declared
where it is defined (``celeste_task(name, queue=…)``), so no setting repeats a
task's name. Tasks that are not ours go to the default queue."""

from django.conf import settings

from celeste.celery import app


def route_task(name, args=None, kwargs=None, options=None, task=None, **_):
    # Looked up by name: send_task (the outbox) and the ledger's queue check pass no task.
    queue = getattr(app.tasks.get(name), "queue_name", None)
    return {"queue": queue} if queue else None


def queue_of(name: str) -> str:
    """The queue a task's messages wait in (the task console shows its length)."""
    return getattr(app.tasks.get(name), "queue_name", None) or settings.CELERY_TASK_DEFAULT_QUEUE
