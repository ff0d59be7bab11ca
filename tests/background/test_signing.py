"""Signed task messages: a worker runs only what a Celeste process published, and
refuses messages in any serialization but JSON.

The forged messages are written straight into Redis, as anyone holding the broker
could, in the shape of a real message captured from the queue."""

import base64
import json
import pickle
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_results.models import TaskResult

from catalog.tasks import embed_products
from celeste.background.models import OutboxMessage, TaskSwitch
from celeste.background.queue import enqueue
from celeste.background.signing import SIGNATURE_HEADER, SignatureError, signature_make, signature_verify
from celeste.background.tasks import ping, relay_outbox
from notifications.models import Notification
from notifications.tasks import dispatch_order_event

from ..conftest import published, wait_for
from ..factories import place_order, reach
from .test_metrics import scrape, total

MESSAGE = {"task_name": "notifications.dispatch_order_event", "task_id": "6c1f", "args": [], "job": True}


def test_a_signature_verifies_only_the_message_it_was_made_for():
    header = signature_make(**MESSAGE, kwargs={"order_id": 1, "status": "paid"})

    signature_verify(header=header, **MESSAGE, kwargs={"status": "paid", "order_id": 1})  # key order: canonical
    for changed in (
        {"kwargs": {"order_id": 2, "status": "paid"}},
        {"task_id": "other"},
        {"task_name": "notifications.send_email"},
        {"job": False},
    ):
        with pytest.raises(SignatureError, match="does not match"):
            signature_verify(header=header, **{**MESSAGE, "kwargs": {"order_id": 1, "status": "paid"}, **changed})
    for bad, reason in [(None, "no signature"), ("v1=abc", "malformed"), ({"t": 1}, "malformed")]:
        with pytest.raises(SignatureError, match=reason):
            signature_verify(header=bad, **MESSAGE, kwargs={})


def test_during_a_rotation_the_old_key_still_verifies_and_the_new_one_signs(settings):
    settings.TASK_SIGNING_KEYS = ["old-key"]
    old = signature_make(**MESSAGE, kwargs={})

    settings.TASK_SIGNING_KEYS = ["new-key", "old-key"]
    signature_verify(header=old, **MESSAGE, kwargs={})
    new = signature_make(**MESSAGE, kwargs={})

    settings.TASK_SIGNING_KEYS = ["new-key"]  # rotation over
    signature_verify(header=new, **MESSAGE, kwargs={})
    with pytest.raises(SignatureError):
        signature_verify(header=old, **MESSAGE, kwargs={})


# --- on the wire, with a real worker -----------------------------------------------------


def paid_orders(redis, count: int = 1) -> list:
    """Paid orders, and none of the jobs their setup enqueued (stock, embeddings) in the way."""
    TaskSwitch.objects.update_or_create(task_name=embed_products.name, defaults={"mode": "off"})  # no model loading
    orders = [reach(place_order(), "paid") for _ in range(count)]
    published()
    redis.flushdb()
    OutboxMessage.objects.all().delete()
    return orders


def captured(redis, queue: str = "fast") -> dict:
    """Take the one message of ``queue`` off Redis (so no worker runs it) as kombu wrote it."""
    published()
    raw = redis.rpop(queue)
    assert raw is not None and redis.llen(queue) == 0
    return json.loads(raw)


def body_of(message: dict):
    return json.loads(base64.b64decode(message["body"]))


def forge(message: dict, *, body=None, new_id: bool = False, **headers) -> bytes:
    """A copy of a captured message with another body and headers (None drops one), not re-signed."""
    forged = json.loads(json.dumps(message))
    if body is not None:
        forged["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    if new_id:
        job_id = str(uuid.uuid4())
        forged["headers"]["id"] = forged["headers"]["root_id"] = forged["properties"]["correlation_id"] = job_id
    forged["properties"]["delivery_tag"] = str(uuid.uuid4())
    for name, value in headers.items():
        if value is None:
            forged["headers"].pop(name, None)
        else:
            forged["headers"][name] = value
    return json.dumps(forged).encode()


def rejected_count(client) -> float:
    return total(scrape(client), "celery_task_rejected_total", name=dispatch_order_event.name)


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_no_forged_message_and_never_redelivers_it(client, redis, start_worker):
    target, real = paid_orders(redis, 2)
    enqueue(dispatch_order_event, order_id=real.id, status="paid")
    message = captured(redis)
    assert SIGNATURE_HEADER in message["headers"]
    args, kwargs, embed = body_of(message)
    before = rejected_count(client)

    # The real job's message, its order id changed: the signature no longer matches.
    redis.lpush("fast", forge(message, body=[args, {**kwargs, "order_id": target.id}, embed]))
    # A message with no signature at all, no job header (so no ledger claim stands in its way).
    unsigned = {SIGNATURE_HEADER: None, "celeste_job": None}
    redis.lpush("fast", forge(message, body=[args, {**kwargs, "order_id": target.id}, embed], new_id=True, **unsigned))
    # Recovery is quick here: the real job, whose message the worker refused, is republished signed.
    worker = start_worker(JOB_UNCLAIMED_AFTER_SECONDS="1", WORKER_HEARTBEAT_SECONDS="1")

    wait_for(lambda: worker.log().count("task.signature_rejected") == 2, timeout=30, message="both refused")
    wait_for(lambda: Notification.objects.filter(order=real).exists(), timeout=30, message="the real job run")
    wait_for(lambda: not OutboxMessage.objects.exists(), timeout=30, message="the ledger empty")
    time.sleep(2)  # time for a redelivery, were one coming

    log = worker.log()
    assert not Notification.objects.filter(order=target).exists()
    assert log.count("task.signature_rejected") == 2
    assert 'reason="signature does not match"' in log and 'reason="no signature"' in log
    assert redis.llen("fast") == 0 and redis.hlen("unacked") == 0  # acknowledged: gone, not redelivered
    assert rejected_count(client) - before == 2
    assert Notification.objects.count() == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_message_signed_with_the_old_key_runs_on_a_worker_that_holds_both(settings, redis, start_worker):
    settings.TASK_SIGNING_KEYS = ["old-task-key"]
    (order,) = paid_orders(redis)
    job = enqueue(dispatch_order_event, order_id=order.id, status="paid")
    published()

    worker = start_worker(TASK_SIGNING_KEYS="new-task-key,old-task-key")

    wait_for(lambda: Notification.objects.filter(order=order).exists(), timeout=30, message="the job run")
    wait_for(lambda: not OutboxMessage.objects.filter(id=job.id).exists(), message="the job finished")
    assert "task.signature_rejected" not in worker.log()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_pickled_message_is_refused_even_when_signed(redis, start_worker):
    (order,) = paid_orders(redis)
    enqueue(dispatch_order_event, order_id=order.id, status="paid")
    message = captured(redis)
    OutboxMessage.objects.all().delete()  # the ledger would republish the real job
    # Validly signed (the signature covers the arguments, not their encoding), but pickled.
    pickled = json.loads(forge(message))
    pickled["content-type"] = "application/x-python-serialize"
    pickled["content-encoding"] = "binary"
    pickled["body"] = base64.b64encode(pickle.dumps(tuple(body_of(message)))).decode()
    redis.lpush("fast", json.dumps(pickled))

    worker = start_worker()

    wait_for(lambda: "ContentDisallowed" in worker.log(), timeout=30, message="the message refused")
    time.sleep(2)
    assert not Notification.objects.exists()
    assert redis.llen("fast") == 0 and redis.hlen("unacked") == 0


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_beats_ticks_are_signed_too(start_worker, beat):
    # Only beat sends the relay as a message (workers run it from their heartbeat thread,
    # slowed down here). An idle tick stores no result (quiet_when_idle): a job left pending
    # gives the next tick work, so its result shows the worker ran it.
    worker = start_worker(WORKER_HEARTBEAT_SECONDS="600", WORKER_DEAD_AFTER_SECONDS="1200")

    def ticked() -> bool:
        # Keep one aged job pending: the worker's own start-up relay may take the first one.
        if not OutboxMessage.objects.filter(published_at__isnull=True).exists():
            job = OutboxMessage.objects.create(task_name=ping.name, kwargs={})
            OutboxMessage.objects.filter(id=job.id).update(created_at=timezone.now() - timedelta(seconds=60))
        return TaskResult.objects.filter(task_name=relay_outbox.name, status="SUCCESS").exists()

    wait_for(ticked, timeout=45, message="a relay tick from beat run by the worker")

    assert "task.signature_rejected" not in worker.log()
