"""What each app asks the control plane to run for it, declared from its
``AppConfig.ready()``: periodic tasks, steps every worker runs when it starts,
steps every web process runs when it starts.

The base package names no domain app; apps declare, the control plane collects
(schedules.py creates the beat rows, signals.py runs the worker steps, wsgi.py
the web steps). Declaring the same thing twice (``ready()`` may run again in
tests) keeps one entry.
"""

from collections.abc import Callable
from dataclasses import dataclass

from celery import Task


@dataclass(frozen=True)
class PeriodicTask:
    name: str  # the django-celery-beat row's name, as staff see it in the admin
    task: Task
    every: int  # seconds


_periodic: dict[str, PeriodicTask] = {}
_worker_start: list[Callable[[], object]] = []
_web_start: list[Callable[[], object]] = []


def periodic_task_declare(*, name: str, task: Task, every: int) -> None:
    """A beat row created if missing and never overwritten (staff may re-time or pause it)."""
    _periodic[name] = PeriodicTask(name=name, task=task, every=every)


def periodic_tasks() -> list[PeriodicTask]:
    return list(_periodic.values())


def worker_start_declare(step: Callable[[], object]) -> None:
    """A recovery step every worker runs when it starts (after the outbox relay),
    e.g. re-enqueueing work a killed worker held."""
    if step not in _worker_start:
        _worker_start.append(step)


def worker_start_steps() -> list[Callable[[], object]]:
    return list(_worker_start)


def web_start_declare(step: Callable[[], object]) -> None:
    """A step every web process runs once it has loaded (e.g. warming a model)."""
    if step not in _web_start:
        _web_start.append(step)


def web_start_run() -> None:
    for step in _web_start:
        step()
