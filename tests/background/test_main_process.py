"""Database use that can happen in the worker's main process (celeste/background/main_process.py):
there a database error is logged, not raised; anywhere else it propagates as before."""

import os

import pytest
from celery.exceptions import TimeLimitExceeded
from django.db import OperationalError

from celeste.background import main_process
from celeste.background.models import FailedTask
from celeste.background.tasks import relay_outbox

from ..conftest import postgres_down

pytestmark = pytest.mark.django_db(transaction=True)


def hard_time_limit_failure():
    """What Celery's main process calls when a pool child hits the hard time limit."""
    relay_outbox.on_failure(TimeLimitExceeded(330), "a-task-id", (), {}, None)


def test_in_the_worker_main_process_a_failure_it_cannot_record_is_logged(monkeypatch, embedded_root, caplog):
    monkeypatch.setattr(main_process, "_main_pid", os.getpid())  # this process plays the worker's main process

    with postgres_down(embedded_root):
        hard_time_limit_failure()

    assert "task.failure_not_recorded" in caplog.text
    assert not FailedTask.objects.exists()


def test_in_the_worker_main_process_a_stale_connection_is_replaced_before_use(monkeypatch, embedded_root):
    monkeypatch.setattr(main_process, "_main_pid", os.getpid())
    assert not FailedTask.objects.exists()  # this process now holds a connection

    with postgres_down(embedded_root, keep_connections=True):
        pass
    hard_time_limit_failure()

    assert FailedTask.objects.get(task_id="a-task-id").task_name == "background.relay_outbox"


def test_elsewhere_database_errors_propagate(embedded_root):
    with postgres_down(embedded_root), pytest.raises(OperationalError):
        hard_time_limit_failure()
