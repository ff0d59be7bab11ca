"""Periodic tasks as django-celery-beat rows, so staff see, pause and re-time
them in the admin. Created if missing, described by their task's docstring; an
existing row is never overwritten (only an empty description is filled in).
Each app declares its own (see startup.py)."""

import json

from . import startup


def ensure_periodic_tasks() -> int:
    """The periodic tasks the apps declared (startup.periodic_task_declare)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    created = 0
    for spec in startup.periodic_tasks():
        interval, _ = IntervalSchedule.objects.get_or_create(every=spec.every, period=IntervalSchedule.SECONDS)
        description = task_description(spec.task)
        _, was_created = PeriodicTask.objects.get_or_create(
            name=spec.name,
            defaults={
                "task": spec.task.name,
                "interval": interval,
                "kwargs": json.dumps({}),
                # A stale tick is worthless: drop it rather than pile up while workers are away.
                "expire_seconds": spec.every * 2,
                "description": description,
            },
        )
        PeriodicTask.objects.filter(name=spec.name, description="").update(description=description)
        created += was_created
    return created


def task_description(task) -> str:
    """What a task does, for staff: its docstring as one paragraph."""
    return " ".join((task.__doc__ or "").split())  # a task (or its proxy) has its function's docstring


def ensure_task_switches() -> int:
    from celeste.celery import app as celery_app

    from .models import TaskSwitch

    names = [n for n in celery_app.tasks if not n.startswith("celery.")]
    existing = set(TaskSwitch.objects.filter(task_name__in=names).values_list("task_name", flat=True))
    TaskSwitch.objects.bulk_create([TaskSwitch(task_name=n) for n in names if n not in existing])
    return len(names) - len(existing)


def on_post_migrate(sender, **kwargs):
    if sender.label != "background":
        return
    ensure_periodic_tasks()
    ensure_task_switches()
