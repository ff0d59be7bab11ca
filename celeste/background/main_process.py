"""Database use in the Celery worker's main process.

Tasks run in pool children, but a few database writes happen in the main process, inside
the consumer loop that receives messages and hands them to the pool (celery/worker/
request.py, strategy.py, consumer.py, control.py): recording a task as REVOKED when its
message expired or was revoked, FAILURE when a child hit the hard time limit or was lost or
the task is unknown, RETRY when a lost child's task is retried, plus our own hard-time-limit
handler (``CelesteTask.on_failure``) and the recovery that runs when the worker starts.

Two things make this fragile, and this module fixes both:
- Nobody checks the main process's connection. Web requests call ``close_old_connections()``
  at start and end, and Celery's Django fixup closes a child's connection around each task,
  but the main process keeps its connection (CONN_MAX_AGE) across a database restart and
  then fails on it with "the connection is closed".
- An exception there escapes the consumer loop, and Celery treats that as unrecoverable:
  the worker exits (and under ``runall`` takes web and beat with it).
So in the main process every such use first re-arms the connection health check, and a
database error is logged instead of raised. In pool children nothing changes: there the
task tracer handles errors (retry, failed-task inbox).
"""

import logging
import os
from contextlib import contextmanager

from celery import current_task
from django.db import DatabaseError, InterfaceError, close_old_connections

logger = logging.getLogger(__name__)

_main_pid: int | None = None


def remember_main_process(**_) -> None:
    """``worker_init`` receiver: it fires in the main process before the pool forks its
    children, which inherit the value but have a pid of their own."""
    global _main_pid
    _main_pid = os.getpid()


def in_worker_main_process() -> bool:
    """True in the worker's main process, unless it is running a task itself (solo or
    threads pool): then the tracer handles errors, as in a pool child."""
    return _main_pid == os.getpid() and not current_task


def check_connections() -> None:
    """With CONN_HEALTH_CHECKS on, ``close_old_connections()`` makes the next query ping
    first and reconnect if the server went away (it also drops connections past their
    CONN_MAX_AGE or with errors). Precondition: no transaction open in this thread."""
    close_old_connections()


@contextmanager
def database_guard(event: str, **context):
    """Wrap a database use that can happen in the worker's main process. There: check the
    connection first, and log a database error as ``event`` (with ``context``) instead of
    letting it end the worker. Anywhere else: no effect, errors propagate as usual."""
    if not in_worker_main_process():
        yield
        return
    try:
        check_connections()
        yield
    except (DatabaseError, InterfaceError):  # InterfaceError: "connection already closed"
        logger.exception(event, extra=context)
