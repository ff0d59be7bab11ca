"""The job ledger: a job's row stays until its task finishes; dead workers' jobs
and lost messages are republished; a second copy of a message never runs twice."""

import json
import os
import socket
import subprocess
import threading
import time

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone

from celeste.background import ledger, main_process
from celeste.background.models import OutboxMessage, WorkerHeartbeat
from celeste.background.queue import _send, coalesce_key, enqueue, outbox_relay, publish_messages
from celeste.devserver import embedded
from integrations.odoo.tasks import odoo_inventory_changed
from notifications.models import Channel, Delivery, DeliveryStatus, Notification, NotificationEvent
from notifications.tasks import send_email

from ..conftest import postgres_down, published, queued_messages, wait_for
from ..factories import UserFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)
SEND_EMAIL = "notifications.send_email"


@pytest.fixture(autouse=True)
def no_worker_id_afterwards(monkeypatch):
    """These tests play workers in the test process: the id they assign must not outlive them
    (code that runs differently in a worker, such as the embed job's lanes, reads it)."""
    monkeypatch.setattr(ledger, "_worker_id", ledger.worker_id())


def ago(seconds: float):
    return timezone.now() - timezone.timedelta(seconds=seconds)


def beat(worker_id: str, *, seconds_ago: float = 0) -> None:
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"hostname": "h", "pid": 1, "started_at": ago(600), "last_seen_at": ago(seconds_ago)},
    )


def email_delivery(email: str = "ada@example.com") -> Delivery:
    order = place_order(user=UserFactory(email=email))
    notification = Notification.objects.create(
        user=order.user, order=order, event=NotificationEvent.ORDER_PAID, title="Paid", body="Thanks"
    )
    return Delivery.objects.create(notification=notification, channel=Channel.EMAIL)


def job(**fields) -> OutboxMessage:
    return OutboxMessage.objects.create(task_name=SEND_EMAIL, kwargs={"delivery_id": 1}, **fields)


# --- claim -------------------------------------------------------------------------


def test_a_published_job_is_claimed_once_while_its_worker_lives(redis):
    row = job(published_at=ago(1))
    ledger.worker_id_assign("a")
    beat(ledger.worker_id())

    assert ledger.job_claim(job_id=row.id, lease_seconds=60)
    ledger.worker_id_assign("b")  # another worker gets the same message
    assert not ledger.job_claim(job_id=row.id, lease_seconds=60)

    row.refresh_from_db()
    assert row.runs == 1 and row.worker_id.startswith("a:")


def test_a_job_held_by_a_dead_worker_can_be_claimed(redis, settings):
    row = job(published_at=ago(60), worker_id="dead:1:x", lease_until=ago(-600))
    beat("dead:1:x", seconds_ago=settings.WORKER_DEAD_AFTER_SECONDS + 1)
    ledger.worker_id_assign("b")

    assert ledger.job_claim(job_id=row.id, lease_seconds=60)


def test_a_pool_process_cannot_claim_a_job_a_live_sibling_holds(redis):
    """Two pool processes of one worker share its id: the claim also records the process,
    so a second copy of the message meeting a sibling that runs the job is skipped."""
    sibling = subprocess.Popen(["sleep", "60"])
    try:
        ledger.worker_id_assign("a")
        beat(ledger.worker_id())
        row = job(published_at=ago(1), worker_id=ledger.worker_id(), worker_pid=sibling.pid, lease_until=ago(-600))

        assert not ledger.job_claim(job_id=row.id, lease_seconds=60)
    finally:
        sibling.kill()
        sibling.wait()


def test_a_pool_process_takes_over_the_job_of_a_sibling_that_is_gone(redis):
    """A pool process killed inside a job (its worker lives on and replaced it): the job's
    message comes back and a sibling runs it at once, without waiting for the lease."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    ledger.worker_id_assign("a")
    beat(ledger.worker_id())
    row = job(published_at=ago(1), worker_id=ledger.worker_id(), worker_pid=gone.pid, lease_until=ago(-600))

    assert ledger.job_claim(job_id=row.id, lease_seconds=60)
    row.refresh_from_db()
    assert (row.worker_pid, row.runs) == (os.getpid(), 1)


def test_a_finished_job_cannot_be_claimed(redis):
    row = job(published_at=ago(1))
    ledger.job_finish(job_id=row.id)

    assert not ledger.job_claim(job_id=row.id, lease_seconds=60)


def test_claim_finish_and_result_are_one_statement_each_committed_without_waiting_for_the_flush(redis):
    """A job's bookkeeping is three writes; each was four round trips (BEGIN, SET LOCAL or
    SELECT, the write, COMMIT), the bulk of a small job's cost. Now one statement each, in
    autocommit, that turns synchronous_commit off for its own transaction."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_celery_results.models import TaskResult

    from celeste.celery import app

    row = job(published_at=ago(1))
    ledger.worker_id_assign("a")
    for write in (
        lambda: ledger.job_claim(job_id=row.id, lease_seconds=60),
        lambda: app.backend.mark_as_done(str(row.id), 42),
        lambda: ledger.job_finish(job_id=row.id),
    ):
        with CaptureQueriesContext(connection) as queries:
            write()
        assert len(queries) == 1 and "set_config('synchronous_commit', 'off', true)" in queries[0]["sql"]

    assert not OutboxMessage.objects.filter(id=row.id).exists()
    stored = TaskResult.objects.get(task_id=str(row.id))
    assert (stored.status, stored.result, stored.date_done is not None) == ("SUCCESS", "42", True)
    app.backend.mark_as_failure(str(row.id), ValueError("again"))  # a second outcome updates the row
    assert TaskResult.objects.get(task_id=str(row.id)).status == "FAILURE"


def test_a_task_keeps_its_database_connection_for_the_next_one():
    """Celery's Django fixup closed every connection before and after each task: a new
    Postgres connection per job. With CELERY_DB_REUSE_MAX the worker keeps it, as a web
    process does between requests (closed once older than CONN_MAX_AGE or broken)."""
    from celery.fixups.django import DjangoWorkerFixup
    from celery.signals import task_postrun, task_prerun
    from django.db import connection

    from celeste.background.tasks import ping
    from celeste.celery import app

    fixup = DjangoWorkerFixup(app)
    OutboxMessage.objects.exists()
    opened = connection.connection
    for _ in range(5):
        fixup.on_task_prerun(sender=ping)
        task_prerun.send(sender=ping, task_id="t", task=ping, args=(), kwargs={})
        OutboxMessage.objects.exists()
        task_postrun.send(sender=ping, task_id="t", task=ping, args=(), kwargs={}, retval=None, state="SUCCESS")
        fixup.on_task_postrun(sender=ping)
    assert connection.connection is opened


def test_a_retry_is_recorded_once_a_restarting_database_is_back(embedded_root):
    """Found by tests/faults/test_postgres_restart.py: a task failed on its connection while
    Postgres restarted, recording its retry failed too, and the job stayed claimed by the
    live worker until the lease ran out (over five minutes)."""
    row = job(published_at=ago(5), worker_id="w:1:x", lease_until=ago(-600), runs=1)
    embedded.stop_postgres(embedded_root)  # this process's connection dies with it
    back = threading.Timer(1.5, embedded.start_postgres, args=(embedded_root,))
    back.start()
    try:
        ledger.job_retry_scheduled(job_id=row.id, countdown=2)
    finally:
        back.join()

    row.refresh_from_db()
    assert row.worker_id == ""
    assert row.lease_until > timezone.now() + timezone.timedelta(seconds=1)


def test_a_task_result_is_stored_once_a_restarting_database_is_back(embedded_root):
    """Same fault, other write: the tracer stores a result before on_success finishes the
    job; a store that failed skipped on_success and left the job claimed."""
    from django_celery_results.models import TaskResult

    from celeste.celery import app

    TaskResult.objects.exists()  # this process holds a connection, which dies with the server
    embedded.stop_postgres(embedded_root)
    back = threading.Timer(1.5, embedded.start_postgres, args=(embedded_root,))
    back.start()
    try:
        app.backend.mark_as_done("a-task-id", 42)
    finally:
        back.join()

    assert TaskResult.objects.get(task_id="a-task-id").status == "SUCCESS"


def test_a_ledger_write_gives_up_when_the_database_stays_down(embedded_root, settings):
    settings.JOB_LEDGER_DATABASE_WAIT_SECONDS = 1
    row = job(published_at=ago(5), worker_id="w:1:x", lease_until=ago(-600))
    started = time.monotonic()

    with postgres_down(embedded_root), pytest.raises(OperationalError):
        ledger.job_finish(job_id=row.id)

    assert time.monotonic() - started < 10


def test_the_worker_main_process_never_waits_for_the_database(monkeypatch, embedded_root):
    monkeypatch.setattr(main_process, "_main_pid", os.getpid())  # this process plays the worker's main process
    row = job(published_at=ago(5), worker_id="w:1:x", lease_until=ago(-600))
    started = time.monotonic()

    with postgres_down(embedded_root), pytest.raises(OperationalError):
        ledger.job_finish(job_id=row.id)

    assert time.monotonic() - started < 5


def test_heartbeats_of_workers_gone_for_a_day_are_pruned(redis):
    beat("gone:1:x", seconds_ago=86_401)
    beat("alive:1:x")

    assert ledger.heartbeats_prune() == 1
    assert list(WorkerHeartbeat.objects.values_list("worker_id", flat=True)) == ["alive:1:x"]


# --- recovery -------------------------------------------------------------------------


def test_the_relay_republishes_the_jobs_of_a_dead_worker(redis, settings):
    dead = job(published_at=ago(60), worker_id="dead:1:x", lease_until=ago(-600), runs=1)
    beat("dead:1:x", seconds_ago=settings.WORKER_DEAD_AFTER_SECONDS + 1)
    alive = job(published_at=ago(60), worker_id="alive:1:x", lease_until=ago(-600), runs=1)
    beat("alive:1:x")

    assert outbox_relay() == 1

    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.worker_id, dead.published_count) == ("", 1)
    assert alive.worker_id == "alive:1:x"
    assert queued_messages(redis, "fast") == 1


def test_the_relay_republishes_a_job_whose_lease_ran_out(redis):
    row = job(published_at=ago(900), worker_id="alive:1:x", lease_until=ago(1))
    beat("alive:1:x")

    assert outbox_relay() == 1
    row.refresh_from_db()
    assert row.worker_id == ""


def test_an_old_unclaimed_job_still_in_its_queue_is_left_alone(redis, settings):
    enqueue(send_email, delivery_id=1)
    published()
    OutboxMessage.objects.update(published_at=ago(settings.JOB_UNCLAIMED_AFTER_SECONDS + 1))

    assert outbox_relay() == 0
    assert queued_messages(redis, "fast") == 1


def test_a_message_taken_from_the_queue_by_a_worker_that_died_is_republished(redis, settings):
    """Finding 1: the Redis transport removes a message from the queue before it
    records it as unacknowledged; a worker killed in between loses it."""
    enqueue(send_email, delivery_id=1)
    published()
    assert redis.rpop("fast")  # what the dead worker's blocking read did
    OutboxMessage.objects.update(published_at=ago(settings.JOB_UNCLAIMED_AFTER_SECONDS + 1))

    assert outbox_relay() == 1
    assert queued_messages(redis, "fast") == 1


def test_a_retry_waiting_for_its_eta_is_not_lost(redis):
    row = job(published_at=ago(600), lease_until=ago(-300))  # unclaimed, due in 5 minutes

    assert outbox_relay() == 0
    row.refresh_from_db()
    assert row.published_count == 0


# --- with real workers ------------------------------------------------------------


@pytest.mark.worker
def test_a_lost_message_is_still_delivered(start_worker, channels_env, smtp_server, redis):
    """Finding 1 end to end: the popped message is gone, the ledger re-drives the job."""
    delivery = email_delivery()
    enqueue(send_email, delivery_id=delivery.id)
    published()
    assert redis.rpop("fast")  # taken by a worker killed before it recorded it

    start_worker(**channels_env, JOB_UNCLAIMED_AFTER_SECONDS="3")

    wait_for(
        lambda: Delivery.objects.get(id=delivery.id).status == DeliveryStatus.SENT, timeout=45, message="the email sent"
    )
    assert smtp_server.recipients() == ["ada@example.com"]
    wait_for(lambda: not OutboxMessage.objects.exists(), timeout=10, message="the job finished in the ledger")


@pytest.mark.worker
def test_two_copies_of_a_job_reaching_one_worker_run_once(start_worker, channels_env, smtp_server, redis):
    """Found in review: a job's claim named only the worker, which all its pool processes
    share, so two copies of one message taken by two processes of one worker (a recovered
    job meeting its original) both ran, and the customer got the email twice."""
    smtp_server.delay_seconds = 3  # the first copy is still sending when the second arrives
    worker = start_worker(**channels_env, concurrency=2)
    delivery = email_delivery()
    message = enqueue(send_email, delivery_id=delivery.id)
    published()
    wait_for(lambda: OutboxMessage.objects.filter(id=message.id, runs=1).exists(), message="the first copy running")
    _send(OutboxMessage.objects.get(id=message.id))  # the second copy, to the other pool process

    wait_for(lambda: "job.duplicate_skipped" in worker.log(), timeout=30, message="the second copy skipped")
    wait_for(lambda: not OutboxMessage.objects.exists(), timeout=30, message="the job finished")
    assert smtp_server.recipients() == ["ada@example.com"]
    assert Delivery.objects.get(id=delivery.id).attempts == 1


@pytest.fixture
def silent_smtp():
    """A TCP port that accepts connections and never answers: a send hangs there."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.worker
def test_a_killed_workers_running_job_runs_elsewhere_within_a_minute(
    start_worker, channels_env, smtp_server, silent_smtp
):
    """Finding 2: jobs held by a killed worker waited the visibility timeout (~20 min)."""
    stuck = start_worker(**{**channels_env, "EMAIL_PORT": str(silent_smtp), "EMAIL_TIMEOUT": "120"})
    delivery = email_delivery()
    enqueue(send_email, delivery_id=delivery.id)
    published()
    wait_for(
        lambda: OutboxMessage.objects.filter(task_name=SEND_EMAIL, runs=1).exists(),
        timeout=60,
        message="the email job hanging on the silent server",
    )

    stuck.kill()
    killed_at = timezone.now()
    start_worker(**channels_env)

    wait_for(
        lambda: Delivery.objects.get(id=delivery.id).status == DeliveryStatus.SENT,
        timeout=60,
        message="the email sent by the second worker",
    )
    assert (timezone.now() - killed_at).total_seconds() < 60
    assert smtp_server.recipients() == ["ada@example.com"]


def test_a_row_published_by_both_its_publisher_and_the_relay_is_kept(redis):
    """A coalescing task's row must never coalesce into itself (it would be deleted
    while its own message is the one that does the work)."""
    row = OutboxMessage.objects.create(task_name="catalog.embed_products")

    assert publish_messages([row]) == 1
    assert publish_messages([row]) == 1

    assert OutboxMessage.objects.filter(id=row.id).exists()


def test_a_second_embed_job_coalesces_into_the_queued_one(redis):
    first = OutboxMessage.objects.create(task_name="catalog.embed_products")
    second = OutboxMessage.objects.create(task_name="catalog.embed_products")

    assert publish_messages([first, second]) == 2

    assert list(OutboxMessage.objects.values_list("id", flat=True)) == [first.id]
    assert queued_messages(redis) == 1


def test_a_job_never_coalesces_into_one_already_started_or_finished(redis):
    """A row published twice (publisher and relay) sets the mark again after its
    job started; the next job must not be dropped for it: nothing would do its work."""
    first = OutboxMessage.objects.create(task_name="catalog.embed_products")
    assert publish_messages([first]) == 1
    redis.delete(coalesce_key("catalog.embed_products", {}))  # the task started (and cleared the mark) ...
    assert publish_messages([first]) == 1  # ... and the relay's copy of its row sets it again
    first.delete()  # then it finished

    second = OutboxMessage.objects.create(task_name="catalog.embed_products")
    assert publish_messages([second]) == 1

    assert OutboxMessage.objects.filter(id=second.id).exists()
    assert redis.get(coalesce_key("catalog.embed_products", {})) == str(second.id).encode()
    third = OutboxMessage.objects.create(task_name="catalog.embed_products")  # while second waits: coalesced
    assert publish_messages([third]) == 1
    assert not OutboxMessage.objects.filter(id=third.id).exists()


def test_a_job_enqueued_with_a_countdown_carries_its_eta_and_is_not_lost_meanwhile(redis, settings):
    from celeste.background.tasks import ping

    before = timezone.now()
    enqueue(ping, countdown=120)
    published()

    row = OutboxMessage.objects.get()
    assert before + timezone.timedelta(seconds=120) <= row.eta <= timezone.now() + timezone.timedelta(seconds=120)
    assert row.lease_until == row.eta + timezone.timedelta(seconds=settings.JOB_UNCLAIMED_AFTER_SECONDS)
    message = json.loads(redis.lindex("fast", 0))
    assert message["headers"]["eta"] == row.eta.isoformat()
    # A worker holds it until then, so it is not in the queue; but it is not lost either.
    assert redis.rpop("fast")
    OutboxMessage.objects.update(published_at=ago(settings.JOB_UNCLAIMED_AFTER_SECONDS + 1))
    assert outbox_relay() == 0
    # Past its ETA and nobody took it: republished, with the same ETA.
    OutboxMessage.objects.update(lease_until=ago(1))
    assert outbox_relay() == 1
    assert json.loads(redis.lindex("fast", 0))["headers"]["eta"] == row.eta.isoformat()


# --- gathering (CelesteTask.coalesce_gathers) ---------------------------------------------


def gathering_jobs(count: int) -> list[OutboxMessage]:
    """Stock-change jobs, one per pair: the gathering task in the tree."""
    return [
        OutboxMessage.objects.create(task_name=odoo_inventory_changed.name, kwargs={"product_id": i, "store_id": 1})
        for i in range(count)
    ]


def test_a_gathering_tasks_jobs_are_sent_once_and_the_rest_left_to_the_queued_one(redis):
    first, *rest = gathering_jobs(3)

    assert publish_messages([first, *rest]) == 3

    assert queued_messages(redis, "fast") == 1  # other kwargs, same mark: not sent
    kept = OutboxMessage.objects.filter(id__in=[r.id for r in rest])
    assert kept.count() == 2  # still in the ledger: their pairs are work to do
    for row in kept:
        assert row.published_at and row.published_count == 0 and row.worker_id == ""
        assert row.lease_until >= row.published_at + timezone.timedelta(seconds=odoo_inventory_changed.coalesce_seconds)
    # While they wait, the relay neither sends them again nor counts them lost.
    assert outbox_relay(min_age_seconds=0) == 0


def test_the_queued_job_takes_the_gathered_ones_once_and_a_rollback_gives_them_back(redis):
    first, *rest = gathering_jobs(3)
    publish_messages([first, *rest])

    with pytest.raises(RuntimeError), transaction.atomic():
        assert len(ledger.jobs_take_gathered(task=odoo_inventory_changed, limit=10)) == 2
        raise RuntimeError("the work failed")
    assert OutboxMessage.objects.count() == 3

    with transaction.atomic():
        taken = ledger.jobs_take_gathered(task=odoo_inventory_changed, limit=10)
    assert sorted(kwargs["product_id"] for kwargs in taken) == [1, 2]
    # Taken once: a second run (or a second job) finds none; the sent job is its own.
    with transaction.atomic():
        assert ledger.jobs_take_gathered(task=odoo_inventory_changed, limit=10) == []
    assert list(OutboxMessage.objects.values_list("id", flat=True)) == [first.id]


def test_a_gathered_job_nobody_took_is_republished_when_its_lease_runs_out(redis, settings):
    """Its queued job ran without taking it (it was locked at that moment): not lost."""
    first, kept = gathering_jobs(2)
    publish_messages([first, kept])
    first.delete()  # that job finished
    OutboxMessage.objects.filter(id=kept.id).update(
        published_at=ago(settings.JOB_UNCLAIMED_AFTER_SECONDS + 1), lease_until=ago(1)
    )

    assert outbox_relay() == 1

    kept.refresh_from_db()
    assert kept.published_count == 1
    assert queued_messages(redis, "fast") == 2
    with transaction.atomic():  # it has a message of its own now: it runs itself
        assert ledger.jobs_take_gathered(task=odoo_inventory_changed, limit=10) == []
