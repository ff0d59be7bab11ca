"""A worker survives database and Redis restarts: its main process keeps consuming."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from celeste.celery import app as celery_app
from celeste.devserver import embedded

from ..conftest import postgres_down, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
RELAY = "background.relay_outbox"


def result_status(task_id: str) -> str | None:
    return TaskResult.objects.filter(task_id=task_id).values_list("status", flat=True).first()


def send_expired_relay_tick() -> str:
    """What beat's relay ticks become when the fast queue is stuck: messages past their
    ``expires``, which the worker's main process discards and records as REVOKED."""
    return celery_app.send_task(RELAY, expires=timezone.now() - timedelta(seconds=30)).id


def assert_runs_tasks(worker) -> None:
    assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"
    # A ping, not a relay tick: an idle relay tick stores no result (quiet_when_idle).
    task_id = celery_app.send_task("background.ping").id
    wait_for(
        lambda: result_status(task_id) == "SUCCESS" or worker.proc.poll() is not None,
        timeout=45,
        message="a task run by the worker",
    )
    assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"


def test_worker_survives_a_postgres_restart_while_discarding_expired_tasks(start_worker, embedded_root):
    worker = start_worker()
    first = send_expired_relay_tick()
    # The main process recorded the discard, so it now holds a database connection.
    wait_for(lambda: result_status(first) == "REVOKED", timeout=20, message="the first discard recorded")

    with postgres_down(embedded_root):
        time.sleep(0.5)
    second = send_expired_relay_tick()
    wait_for(
        lambda: result_status(second) == "REVOKED" or worker.proc.poll() is not None,
        timeout=30,
        message="the second discard recorded",
    )

    assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"
    assert result_status(second) == "REVOKED"  # on a fresh connection: the health check reconnected
    assert_runs_tasks(worker)


def test_worker_logs_a_discard_it_cannot_record_while_postgres_is_down(start_worker, embedded_root):
    worker = start_worker()

    with postgres_down(embedded_root):
        send_expired_relay_tick()
        wait_for(
            lambda: "task.state_not_recorded" in worker.log() or worker.proc.poll() is not None,
            timeout=20,
            message="the failed discard logged",
        )
        assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"

    assert_runs_tasks(worker)


def test_worker_survives_a_redis_restart_and_runs_new_tasks(start_worker, embedded_root):
    # Gossip, mingle and heartbeat on, as runall and compose run workers: they reconnect too.
    worker = start_worker(lean=False)
    assert_runs_tasks(worker)

    embedded.stop_redis(embedded_root)
    try:
        time.sleep(10)
    finally:
        embedded.start_redis(embedded_root)

    assert_runs_tasks(worker)
