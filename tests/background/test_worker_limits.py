"""The limits every worker runs under (CELERY_* in celeste/settings/base.py), proven
on real workers: a task over its soft time limit is stopped and lands in the
inbox; a pool child over its memory limit is replaced without losing a message.
(JSON only: test_signing.py refuses a pickled message.)"""

import psutil
import pytest
from django_celery_results.models import TaskResult

from catalog.tasks import embed_products
from celeste.background.models import FailedTask, OutboxMessage
from celeste.background.queue import enqueue
from notifications.campaigns import campaign_start
from notifications.models import Campaign, CampaignRecipient, Delivery, Notification
from notifications.models import RecipientStatus as Status
from notifications.tasks import campaign_send_chunk, dispatch_order_event

from ..conftest import published, wait_for
from ..factories import UserFactory, place_order, reach


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_task_over_its_soft_time_limit_is_stopped_and_lands_in_the_inbox(
    start_worker, channels_env, smtp_server, set_switch
):
    set_switch(embed_products.name, "off")
    # A real task made slow for real: a campaign chunk throttled to one email a second, 8 recipients,
    # against a 2 s soft limit. TASK_MAX_RETRIES=1: the retry is stopped too, then the inbox.
    worker = start_worker(**channels_env, CELERY_TASK_MAX_SECONDS="2", CAMPAIGN_MAX_PER_SECOND="1")
    recipients = [UserFactory(email=f"c{i}@example.com") for i in range(8)]
    campaign = Campaign.objects.create(subject="Oat milk week", body="Hello {{ name }}. {{ unsubscribe_url }}")
    campaign_start(campaign_id=campaign.id)

    failed = wait_for(
        lambda: FailedTask.objects.filter(task_name=campaign_send_chunk.name).first(), message="the inbox row"
    )

    assert "SoftTimeLimitExceeded" in failed.error
    assert failed.attempts == 2
    assert TaskResult.objects.get(task_id=failed.task_id).status == "FAILURE"
    wait_for(lambda: not OutboxMessage.objects.exists(), message="the ledger empty")
    sent = smtp_server.recipients()
    assert 0 < len(sent) < len(recipients)  # stopped part-way, each run
    assert len(sent) == len(set(sent))  # nobody twice
    statuses = set(CampaignRecipient.objects.values_list("status", flat=True))
    assert statuses == {Status.SENT, Status.QUEUED}  # the unsent are queued again, none left "sending"
    assert worker.proc.poll() is None


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_child_over_its_memory_limit_is_replaced_and_every_job_completes_once(redis, start_worker, set_switch):
    set_switch(embed_products.name, "off")
    orders = [reach(place_order(), "paid") for _ in range(2)]
    published()
    redis.flushdb()  # the stock jobs of the setup: not what this is about
    OutboxMessage.objects.all().delete()
    worker = start_worker(CELERY_WORKER_MAX_MEMORY_PER_CHILD_KB="1")  # every child is over it after its first task
    pool = psutil.Process(worker.proc.pid)
    first_child = {child.pid for child in pool.children()}
    seen = set(first_child)

    jobs = [enqueue(dispatch_order_event, order_id=order.id, status="paid") for order in orders]

    def finished() -> bool:
        seen.update(child.pid for child in pool.children())
        return not OutboxMessage.objects.exists()

    wait_for(finished, timeout=90, interval=0.05, message="every job finished")
    # 6 jobs (2 dispatches, each enqueueing an email and a push): a child each (a fresh one takes seconds)
    assert len(seen) >= 4
    assert first_child.isdisjoint(child.pid for child in pool.children())
    assert "job.recovered" not in worker.log()  # no message lost with a replaced child
    # Each dispatch ran once (it stores no result row: its notification is the record).
    assert not OutboxMessage.objects.filter(id__in=[job.id for job in jobs]).exists()
    assert Notification.objects.count() == 2
    # The jobs they enqueued (a child may exit before its publisher thread sent them: the relay
    # does) ran too: the in-app and email deliveries sent, push skipped (no subscription).
    assert Delivery.objects.count() == 6
    assert set(Delivery.objects.values_list("channel", "status")) == {
        ("email", "sent"),
        ("in_app", "sent"),
        ("push", "skipped"),
    }
    assert worker.proc.poll() is None
