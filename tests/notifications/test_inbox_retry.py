"""Retry from the failed-task inbox redoes the work: a real failure runs the
retries out, the dependency comes back, and the retried job really delivers."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from celeste.background.models import FailedTask, FailedTaskStatus, OutboxMessage
from celeste.background.services import failed_task_retry
from celeste.devserver import embedded
from notifications import services
from notifications.campaigns import (
    campaign_progress,
    campaign_recipients_requeue,
    campaign_send_chunk,
    campaign_start,
    campaigns_recover,
)
from notifications.models import Campaign, CampaignRecipient, CampaignStatus, Delivery, Notification
from notifications.tasks import campaign_fan_out, dispatch_order_event, send_email

from ..conftest import published, wait_for
from ..factories import UserFactory, place_order, reach

SEND_EMAIL = "notifications.send_email"
SEND_PUSH = "notifications.send_push"
CHUNK = "notifications.campaign_send_chunk"
BODY = "Hello {{ name }}. Unsubscribe: {{ unsubscribe_url }}"


@pytest.fixture(autouse=True)
def _no_embeddings(db, set_switch):
    # Orders need products; their embeddings (a model load in the worker) are another story.
    set_switch("catalog.embed_products", "off")


def inbox_job(task_name: str) -> FailedTask:
    return wait_for(
        lambda: FailedTask.objects.filter(task_name=task_name).first(), timeout=60, message=f"{task_name} in the inbox"
    )


def outbox(task_name: str) -> list[dict]:
    # In the tests without a worker nothing commits: what enqueue() wrote is still in the outbox.
    return [m.kwargs for m in OutboxMessage.objects.filter(task_name=task_name)]


def email_of(notification) -> Delivery:
    return notification.deliveries.get(channel="email")


def failed_email(smtp_server) -> Delivery:
    """An order email whose send job ran out of retries against a 451 (in this process)."""
    smtp_server.fail_with = "451 4.3.0 Try again later"
    user = UserFactory(email="ada@example.com")
    notification = services.notification_dispatch_order_event(
        order_id=reach(place_order(user=user), "paid").id, status="paid"
    )
    send_email.apply(kwargs={"delivery_id": email_of(notification).id})
    smtp_server.fail_with = None
    return Delivery.objects.get(id=email_of(notification).id)


def subscribe(receiver, user, name="phone"):
    client = receiver.new_client(name)
    services.push_subscription_save(user=user, endpoint=client.endpoint, p256dh=client.p256dh, auth=client.auth)


def a_sending_campaign(*emails: str) -> Campaign:
    for email in emails:
        UserFactory(email=email)
    return Campaign.objects.create(
        subject="Oat milk week", body=BODY, status=CampaignStatus.SENDING, started_at=timezone.now()
    )


# --- the restore, in this process -----------------------------------------------------


@pytest.mark.django_db
def test_a_retry_makes_the_failed_delivery_pending_again_and_keeps_its_attempts(redis, smtp_server, channels_env):
    email = failed_email(smtp_server)
    runs = send_email.max_retries + 1
    assert (email.status, email.attempts) == ("failed", runs)
    job = FailedTask.objects.get(task_name=SEND_EMAIL)
    queued_before = outbox(SEND_EMAIL)

    failed_task_retry(failed_task_ids=[job.id])

    email.refresh_from_db()
    assert (email.status, email.attempts, email.last_error) == ("pending", runs, "")
    assert outbox(SEND_EMAIL) == [*queued_before, {"delivery_id": email.id}]


@pytest.mark.django_db
def test_a_rolled_back_retry_leaves_the_delivery_failed_and_the_job_open(redis, smtp_server, channels_env):
    email = failed_email(smtp_server)
    job = FailedTask.objects.get(task_name=SEND_EMAIL)
    queued_before = outbox(SEND_EMAIL)

    with pytest.raises(RuntimeError), transaction.atomic():
        failed_task_retry(failed_task_ids=[job.id])
        assert Delivery.objects.get(id=email.id).status == "pending"  # restored inside the transaction
        raise RuntimeError("the caller's transaction fails")

    assert Delivery.objects.get(id=email.id).status == "failed"
    assert FailedTask.objects.get(id=job.id).status == FailedTaskStatus.OPEN
    assert outbox(SEND_EMAIL) == queued_before


@pytest.mark.django_db
def test_retrying_the_job_of_a_sent_email_sends_nothing_again(redis, smtp_server, channels_env):
    notification = services.notification_dispatch_order_event(order_id=reach(place_order(), "paid").id, status="paid")
    email = email_of(notification)
    assert services.delivery_send(delivery_id=email.id) == "sent"
    job = FailedTask.objects.create(task_name=SEND_EMAIL, kwargs={"delivery_id": email.id}, error="a duplicate")

    failed_task_retry(failed_task_ids=[job.id])

    assert Delivery.objects.get(id=email.id).status == "sent"
    assert send_email.apply(kwargs={"delivery_id": email.id}).get() == "sent"
    assert len(smtp_server.messages) == 1


@pytest.mark.django_db
def test_with_the_send_switch_off_a_retry_leaves_the_delivery_failed(redis, smtp_server, channels_env, set_switch):
    email = failed_email(smtp_server)
    job = FailedTask.objects.get(task_name=SEND_EMAIL)
    set_switch(SEND_EMAIL, "off")
    queued_before = outbox(SEND_EMAIL)

    failed_task_retry(failed_task_ids=[job.id])

    assert Delivery.objects.get(id=email.id).status == "failed"  # no run follows, so nothing claims it is pending
    assert outbox(SEND_EMAIL) == queued_before


@pytest.mark.django_db
def test_requeue_queues_the_refused_recipients_of_the_chunk_and_reopens_the_campaign(redis, smtp_server, channels_env):
    campaign = a_sending_campaign("a@example.com", "b@example.com", "c@example.com")
    campaign_fan_out.apply(kwargs={"campaign_id": campaign.id})
    first, second, other = CampaignRecipient.objects.filter(campaign=campaign).values_list("id", flat=True)
    smtp_server.fail_with = "550 5.7.1 Relaying denied"
    campaign_send_chunk(campaign_id=campaign.id, recipient_ids=[first, second, other])
    assert Campaign.objects.get(id=campaign.id).status == CampaignStatus.SENT

    assert campaign_recipients_requeue(campaign_id=campaign.id, recipient_ids=[first, second]) == 2

    assert campaign_progress(campaign.id) == {"queued": 2, "sending": 0, "sent": 0, "failed": 1, "skipped": 0}
    assert CampaignRecipient.objects.get(id=first).error == ""
    reopened = Campaign.objects.get(id=campaign.id)
    assert (reopened.status, reopened.finished_at) == (CampaignStatus.SENDING, None)


@pytest.mark.django_db
def test_requeue_leaves_recipients_in_doubt_failed():
    campaign = a_sending_campaign("a@example.com")
    campaign_fan_out.apply(kwargs={"campaign_id": campaign.id})
    CampaignRecipient.objects.update(status="sending", updated_at=timezone.now() - timedelta(minutes=20))
    campaigns_recover()  # a killed worker: whether the server took the message is unknown
    recipient = CampaignRecipient.objects.get()

    assert campaign_recipients_requeue(campaign_id=campaign.id, recipient_ids=[recipient.id]) == 0

    assert CampaignRecipient.objects.get().status == "failed"
    assert Campaign.objects.get(id=campaign.id).status == CampaignStatus.SENT


# --- through real workers: a real failure, the fix, the retry ------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_failed_email_job_sends_the_email(start_worker, channels_env, smtp_server):
    # Given an email whose retries ran out against an SMTP server answering 451
    smtp_server.fail_with = "451 4.3.0 Try again later"
    start_worker(**channels_env)
    user = UserFactory(email="ada@example.com")
    notification = services.notification_dispatch_order_event(
        order_id=reach(place_order(user=user), "paid").id, status="paid"
    )
    email = email_of(notification)
    job = inbox_job(SEND_EMAIL)
    assert Delivery.objects.get(id=email.id).status == "failed"
    assert smtp_server.messages == []

    # When the server takes mail again and staff retry the job
    smtp_server.fail_with = None
    failed_task_retry(failed_task_ids=[job.id])

    # Then the email arrives, once
    wait_for(lambda: Delivery.objects.get(id=email.id).status == "sent", timeout=30, message="the email sent")
    assert smtp_server.recipients() == ["ada@example.com"]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_failed_push_job_sends_the_push(start_worker, channels_env, smtp_server, push_receiver):
    # Given a push whose retries ran out against a push service answering 503
    user = UserFactory(email="grace@example.com")
    subscribe(push_receiver, user)
    push_receiver.status["phone"] = 503
    start_worker(**channels_env)
    notification = services.notification_dispatch_order_event(
        order_id=reach(place_order(user=user), "paid").id, status="paid"
    )
    push = notification.deliveries.get(channel="push")
    job = inbox_job(SEND_PUSH)
    assert Delivery.objects.get(id=push.id).status == "failed"

    # When the service takes pushes again and staff retry the job
    push_receiver.status["phone"] = 201
    failed_task_retry(failed_task_ids=[job.id])

    # Then the push arrives, once
    wait_for(lambda: Delivery.objects.get(id=push.id).status == "sent", timeout=30, message="the push sent")
    assert [r["payload"]["notification_id"] for r in push_receiver.received] == [notification.id]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_failed_campaign_chunk_emails_its_refused_and_unsent_recipients_once(
    start_worker, channels_env, smtp_server
):
    # Given a chunk whose first recipient was refused (550) and whose retries ran out on a 451
    campaign = Campaign.objects.create(subject="Oat milk week", body=BODY)
    for email in ("first@example.com", "second@example.com"):
        UserFactory(email=email)
    smtp_server.answers = ["550 5.7.1 Relaying denied"]
    smtp_server.fail_with = "451 4.3.0 Try again later"
    start_worker(**channels_env)
    campaign_start(campaign_id=campaign.id)
    job = inbox_job(CHUNK)
    assert campaign_progress(campaign.id)["failed"] == 1 and campaign_progress(campaign.id)["queued"] == 1

    # When the server is fixed and staff retry the chunk
    smtp_server.fail_with = None
    failed_task_retry(failed_task_ids=[job.id])

    # Then both recipients get the campaign, once each, and it finishes
    wait_for(
        lambda: Campaign.objects.get(id=campaign.id).status == CampaignStatus.SENT,
        timeout=30,
        message="the campaign sent",
    )
    assert sorted(smtp_server.recipients()) == ["first@example.com", "second@example.com"]
    assert campaign_progress(campaign.id)["sent"] == 2


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_dispatch_that_failed_with_redis_down_emails_the_customer(
    start_worker, channels_env, smtp_server, embedded_root
):
    # Given an order event whose dispatch ran out of retries while Redis (the rate limit) was down
    order = reach(place_order(user=UserFactory(email="ada@example.com")), "paid")
    published()
    embedded.stop_redis(embedded_root)
    dispatch_order_event.apply(kwargs={"order_id": order.id, "status": "paid"})
    embedded.start_redis(embedded_root)
    job = FailedTask.objects.get(task_name="notifications.dispatch_order_event")
    assert not Notification.objects.exists()  # the failed run left nothing behind

    # When staff retry it with Redis back
    start_worker(**channels_env)
    failed_task_retry(failed_task_ids=[job.id])

    # Then the customer is notified and emailed, once
    wait_for(
        lambda: Delivery.objects.filter(channel="email", status="sent").exists(), timeout=30, message="the email sent"
    )
    assert smtp_server.recipients() == ["ada@example.com"]
    assert Notification.objects.get().order_id == order.id


@pytest.fixture
def outbox_refusing_chunks(transactional_db):
    """Postgres refuses to store chunk jobs (as on a full disk), until the test ends or calls the fix."""
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION test_refuse_chunks() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.task_name = 'notifications.campaign_send_chunk' THEN
                    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = '53100';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_refuse_chunks BEFORE INSERT ON background_outboxmessage
                FOR EACH ROW EXECUTE FUNCTION test_refuse_chunks();
        """)

    def fix():
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS test_refuse_chunks ON background_outboxmessage;"
                "DROP FUNCTION IF EXISTS test_refuse_chunks();"
            )

    yield fix
    fix()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_fan_out_that_failed_half_way_sends_the_campaign(
    start_worker, channels_env, smtp_server, outbox_refusing_chunks
):
    # Given a fan-out that created the recipients, then ran out of retries enqueueing their chunk
    campaign = a_sending_campaign("first@example.com", "second@example.com")
    campaign_fan_out.apply(kwargs={"campaign_id": campaign.id})
    job = FailedTask.objects.get(task_name="notifications.campaign_fan_out")
    assert campaign_progress(campaign.id)["queued"] == 2
    assert not OutboxMessage.objects.filter(task_name=CHUNK).exists()

    # When the database takes writes again and staff retry the fan-out
    outbox_refusing_chunks()
    start_worker(**channels_env)
    failed_task_retry(failed_task_ids=[job.id])

    # Then the campaign goes out to both, once each
    wait_for(
        lambda: Campaign.objects.get(id=campaign.id).status == CampaignStatus.SENT,
        timeout=30,
        message="the campaign sent",
    )
    assert sorted(smtp_server.recipients()) == ["first@example.com", "second@example.com"]
