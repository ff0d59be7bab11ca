"""Postgres restarts while the worker is busy, and while expired tasks arrive.

Tasks running at that moment fail on their connection and retry; the worker's
main process, which records expired messages as REVOKED and beats the heartbeat,
must get a fresh connection instead of dying on the dead one. Afterwards every
job is done, once, by the same worker.
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from celeste.celery import app as celery_app

from ..conftest import postgres_down, wait_for
from .conftest import PRODUCTION_RETRIES

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.django_db(transaction=True)]
RELAY = "background.relay_outbox"


def send_expired_relay_ticks(count: int = 3) -> list[str]:
    """What beat's relay ticks become behind a backlog: messages past their ``expires``,
    which the worker's main process discards and records as REVOKED."""
    return [celery_app.send_task(RELAY, expires=timezone.now() - timedelta(seconds=30)).id for _ in range(count)]


def revoked(task_ids: list[str]) -> bool:
    return TaskResult.objects.filter(task_id__in=task_ids, status="REVOKED").count() == len(task_ids)


def test_a_postgres_restart_while_busy_and_while_expired_tasks_arrive(ledger, fault_worker, redis, embedded_root):
    # Given a worker whose main process has recorded discarded expired ticks (so it holds
    # a database connection), busy with a burst
    worker = fault_worker(**PRODUCTION_RETRIES)
    first = send_expired_relay_ticks()
    wait_for(lambda: revoked(first), timeout=30, message="the first expired ticks discarded")
    ledger.create(products=40, orders=10, stock_changes=10)
    wait_for(ledger.emails_midway, timeout=60, interval=0.05, message="the worker busy sending emails")

    # When Postgres restarts, expired ticks arriving while it is down and after
    with postgres_down(embedded_root):
        ledger.event("Postgres stopped")
        during = send_expired_relay_ticks()
        time.sleep(2)
    ledger.fault_over("Postgres started")
    after = send_expired_relay_ticks()

    # Then the same worker, alive, does every job once and records the later discards
    ledger.check(timeout=120)
    assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"
    wait_for(lambda: revoked(after), timeout=30, message="the expired ticks sent after the restart discarded")
    discarded = TaskResult.objects.filter(task_id__in=first + during + after, status="REVOKED").count()
    ledger.event(f"expired ticks recorded as discarded: {discarded} of 9")
