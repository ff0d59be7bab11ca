"""Notifications crossing the queue, with real workers, SMTP server and push service."""

import pytest

from celeste.background.queue import enqueue
from notifications import services, tasks
from notifications.campaigns import campaign_start
from notifications.models import Campaign, CampaignRecipient, Delivery, Notification
from orders import services as orders

from ..conftest import wait_for
from ..factories import UserFactory, place_order, reach

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def statuses(notification) -> dict[str, str]:
    return dict(Delivery.objects.filter(notification=notification).values_list("channel", "status"))


def subscribe(receiver, user, name="phone"):
    client = receiver.new_client(name)
    services.push_subscription_save(user=user, endpoint=client.endpoint, p256dh=client.p256dh, auth=client.auth)


def test_a_status_change_reaches_every_channel(start_worker, channels_env, smtp_server, push_receiver):
    start_worker(**channels_env)
    user = UserFactory(email="ada@example.com")
    subscribe(push_receiver, user)
    order = place_order(user=user)

    orders.order_mark_paid(order_id=order.id)

    notification = wait_for(
        lambda: Notification.objects.filter(order=order).first(), timeout=60, message="the notification"
    )
    wait_for(
        lambda: statuses(notification) == {"in_app": "sent", "email": "sent", "push": "sent"},
        timeout=60,
        message="all three deliveries sent",
    )
    assert smtp_server.recipients() == ["ada@example.com"]
    assert push_receiver.received[0]["payload"]["order"] == order.id
    assert push_receiver.rejected == []


def test_a_failing_smtp_server_retries_email_alone(start_worker, channels_env, smtp_server, push_receiver):
    smtp_server.fail_with = "451 4.3.0 Try again later"
    start_worker(**{**channels_env, "TASK_MAX_RETRIES": "5"})
    user = UserFactory(email="grace@example.com")
    subscribe(push_receiver, user)
    order = place_order(user=user)

    orders.order_mark_paid(order_id=order.id)

    notification = wait_for(
        lambda: Notification.objects.filter(order=order).first(), timeout=60, message="the notification"
    )
    wait_for(
        lambda: statuses(notification)["push"] == "sent" and smtp_server.refused >= 2,
        timeout=60,
        message="push sent while email keeps failing",
    )
    assert statuses(notification) == {"in_app": "sent", "email": "pending", "push": "sent"}

    smtp_server.fail_with = None
    wait_for(lambda: statuses(notification)["email"] == "sent", timeout=90, message="email sent after recovery")
    assert len(push_receiver.received) == 1  # push was never sent again
    assert Delivery.objects.get(notification=notification, channel="email").attempts >= 3


def test_the_rate_limit_holds_across_two_workers(start_worker, channels_env, smtp_server):
    env = {**channels_env, "NOTIFY_RATE_LIMIT_PER_HOUR": "5"}
    start_worker(**env)
    start_worker(**env)
    user = UserFactory(email="busy@example.com")
    email_ids = []
    for _ in range(12):
        notification = services.notification_dispatch_order_event(
            order_id=reach(place_order(user=user), "paid").id, status="paid"
        )
        email_ids.append(notification.deliveries.get(channel="email").id)

    wait_for(
        lambda: not Delivery.objects.filter(id__in=email_ids, status="pending").exists(),
        timeout=90,
        message="every email delivery decided",
    )

    outcome = list(Delivery.objects.filter(id__in=email_ids).values_list("status", flat=True))
    assert outcome.count("sent") == 5
    assert outcome.count("rate_limited") == 7
    assert len(smtp_server.recipients()) == 5


def test_a_campaign_reaches_each_recipient_exactly_once_even_when_a_chunk_runs_twice(
    start_worker, channels_env, smtp_server, settings
):
    start_worker(**{**channels_env, "CAMPAIGN_CHUNK_SIZE": "100"})
    users = [UserFactory(email=f"fan{i}@example.com") for i in range(300)]
    campaign = Campaign.objects.create(subject="Hello", body="Hi {{ name }} {{ unsubscribe_url }}")

    campaign_start(campaign_id=campaign.id)
    wait_for(lambda: CampaignRecipient.objects.filter(campaign=campaign).count() == 300, timeout=60, message="fan-out")
    first_chunk = list(
        CampaignRecipient.objects.filter(campaign=campaign).order_by("id").values_list("id", flat=True)[:100]
    )
    enqueue(tasks.campaign_send_chunk, campaign_id=campaign.id, recipient_ids=first_chunk)
    enqueue(tasks.campaign_fan_out, campaign_id=campaign.id)

    wait_for(lambda: Campaign.objects.get(id=campaign.id).status == "sent", timeout=120, message="campaign sent")
    received = smtp_server.recipients()
    assert sorted(received) == sorted(u.email for u in users)
    assert len(received) == len(set(received)) == 300
