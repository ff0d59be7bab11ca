"""Order events → notification + deliveries, each channel sent on its own."""

import pytest

from celeste.background.models import OutboxMessage
from notifications import services
from notifications.channels import TransientDeliveryError
from notifications.models import Channel, Delivery, Notification, PushSubscription
from orders import services as orders

from ..factories import UserFactory, place_order, reach

pytestmark = pytest.mark.django_db


def enqueued(task_name: str) -> list[dict]:
    # In these tests nothing commits, so what enqueue() wrote is still in the outbox.
    return [m.kwargs for m in OutboxMessage.objects.filter(task_name=task_name)]


def deliveries(notification) -> dict[str, str]:
    return dict(notification.deliveries.values_list("channel", "status"))


@pytest.fixture
def order():
    return place_order(user=UserFactory(email="ada@example.com", first_name="Ada"))


def subscribed(user) -> PushSubscription:
    return PushSubscription.objects.create(
        user=user, endpoint="https://push.example.com/send/ada", p256dh="key", auth="secret"
    )


@pytest.mark.parametrize("status", ["paid", "confirmed", "shipped", "delivered", "cancelled"])
def test_each_event_makes_one_notification_and_a_delivery_per_channel(order, status):
    subscribed(order.user)
    notification = services.notification_dispatch_order_event(order_id=reach(order, status).id, status=status)

    assert notification.event == f"order.{status}"
    assert order.number in notification.title
    assert deliveries(notification) == {"in_app": "sent", "email": "pending", "push": "pending"}
    email = notification.deliveries.get(channel="email")
    push = notification.deliveries.get(channel="push")
    assert enqueued("notifications.send_email") == [{"delivery_id": email.id}]
    assert enqueued("notifications.send_push") == [{"delivery_id": push.id}]


def test_an_event_the_order_has_not_reached_notifies_nobody(order):
    # What a forged message once did: told a customer their pending order was delivered.
    assert services.notification_dispatch_order_event(order_id=order.id, status="delivered") is None

    assert not Notification.objects.exists()
    assert enqueued("notifications.send_email") == []


def test_an_event_the_order_has_moved_past_still_notifies(order):
    orders.order_mark_paid(order_id=order.id)
    orders.order_confirm(order_id=order.id)  # by the time the paid event's dispatch runs

    assert services.notification_dispatch_order_event(order_id=order.id, status="paid").event == "order.paid"


def test_a_repeated_event_notifies_nobody_twice(order):
    first = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    again = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert again == first
    assert Notification.objects.count() == 1
    assert Delivery.objects.count() == 3
    assert len(enqueued("notifications.send_email")) == 1


def test_status_changes_enqueue_a_dispatch_without_waiting_for_it(order):
    orders.order_mark_paid(order_id=order.id)
    orders.order_confirm(order_id=order.id)

    assert enqueued("notifications.dispatch_order_event") == [
        {"order_id": order.id, "status": "paid"},
        {"order_id": order.id, "status": "confirmed"},
    ]
    assert not Notification.objects.exists()


def test_placing_an_order_notifies_nothing(order):
    assert enqueued("notifications.dispatch_order_event") == []


def test_a_channel_turned_off_by_the_user_is_skipped(order):
    services.preference_set(user_id=order.user_id, channel=Channel.EMAIL, enabled=False)
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id) == "skipped"
    assert deliveries(notification)["email"] == "skipped"


def test_in_app_turned_off_keeps_it_out_of_the_notification_center(order):
    services.preference_set(user_id=order.user_id, channel=Channel.IN_APP, enabled=False)

    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert deliveries(notification)["in_app"] == "skipped"
    assert not services.in_app_notifications(order.user).exists()


def test_switch_off_stops_one_channel_without_touching_the_others(order, set_switch):
    subscribed(order.user)
    set_switch("notifications.send_email", "off")

    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert deliveries(notification) == {"in_app": "sent", "email": "skipped", "push": "pending"}
    assert enqueued("notifications.send_email") == []
    assert len(enqueued("notifications.send_push")) == 1


def test_switching_a_channel_off_also_stops_what_is_already_queued(order, set_switch):
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    set_switch("notifications.send_email", "off")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id) == "skipped"


def test_over_the_rate_limit_a_delivery_is_recorded_and_not_sent(settings, redis, smtp_server, channels_env):
    settings.NOTIFY_RATE_LIMIT_PER_HOUR = 2
    user = UserFactory(email="busy@example.com")
    results = []
    for _ in range(3):
        order = place_order(user=user)
        notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
        results.append(services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id))

    assert results == ["sent", "sent", "rate_limited"]
    assert len(smtp_server.messages) == 2
    limited = Delivery.objects.get(channel="email", status="rate_limited")
    assert "limit" in limited.last_error


def test_a_retried_delivery_is_not_counted_twice_by_the_rate_limit(settings, redis):
    from notifications.ratelimit import rate_limit_allow

    settings.NOTIFY_RATE_LIMIT_PER_HOUR = 1

    assert rate_limit_allow(user_id=1, channel="email", delivery_id=10)
    assert rate_limit_allow(user_id=1, channel="email", delivery_id=10)
    assert not rate_limit_allow(user_id=1, channel="email", delivery_id=11)
    assert rate_limit_allow(user_id=1, channel="push", delivery_id=11)


# --- email ------------------------------------------------------------------------


def test_email_has_text_and_html_with_the_order(order, redis, smtp_server, channels_env):
    notification = services.notification_dispatch_order_event(order_id=reach(order, "shipped").id, status="shipped")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id) == "sent"

    (received,) = smtp_server.messages
    assert received["to"] == ["ada@example.com"]
    message = received["message"]
    assert message["Subject"] == f"Order {order.number} shipped"
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in message.walk()
        if not part.is_multipart()
    }
    item = order.items.first()
    assert "Hello Ada" in parts["text/plain"] and item.product_name in parts["text/plain"]
    assert f"{order.total} EUR" in parts["text/html"]
    assert "Order shipped" in parts["text/html"]


def test_an_email_carries_a_message_id_made_from_its_delivery(order, redis, smtp_server, channels_env):
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    email = notification.deliveries.get(channel="email")

    services.delivery_send(delivery_id=email.id)

    (received,) = smtp_server.messages
    assert received["message"]["Message-ID"] == f"<delivery-{email.id}@example.com>"  # same on every resend


def test_a_temporary_smtp_failure_leaves_the_delivery_pending_for_a_retry(order, redis, smtp_server, channels_env):
    smtp_server.fail_with = "451 4.3.0 Mailbox busy, try later"
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    email = notification.deliveries.get(channel="email")

    with pytest.raises(TransientDeliveryError, match="451"):
        services.delivery_send(delivery_id=email.id)

    email.refresh_from_db()
    assert (email.status, email.attempts) == ("pending", 1)
    assert "451" in email.last_error


def test_a_permanent_smtp_refusal_fails_the_delivery(order, redis, smtp_server, channels_env):
    smtp_server.fail_with = "550 5.1.1 No such user"
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id) == "failed"
    assert "550" in notification.deliveries.get(channel="email").last_error


def test_an_unreachable_smtp_server_is_transient(order, redis, settings, channels_env):
    settings.EMAIL_PORT = 1  # nothing listens there
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    with pytest.raises(TransientDeliveryError):
        services.delivery_send(delivery_id=notification.deliveries.get(channel="email").id)


# --- push -------------------------------------------------------------------------


def subscribe(receiver, user, name):
    client = receiver.new_client(name)
    return services.push_subscription_save(user=user, endpoint=client.endpoint, p256dh=client.p256dh, auth=client.auth)


def test_push_is_encrypted_for_the_subscription_and_signed_with_vapid(order, redis, push_receiver, channels_env):
    subscribe(push_receiver, order.user, "phone")
    notification = services.notification_dispatch_order_event(order_id=reach(order, "confirmed").id, status="confirmed")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "sent"

    assert push_receiver.rejected == []
    (received,) = push_receiver.received
    assert received["payload"]["title"] == f"Order {order.number} confirmed"
    assert PushSubscription.objects.get().last_success_at is not None


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_subscription_is_deactivated_and_not_retried(order, redis, push_receiver, channels_env, status):
    subscribe(push_receiver, order.user, "old-phone")
    push_receiver.status["old-phone"] = status
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "failed"

    subscription = PushSubscription.objects.get()
    assert subscription.active is False
    assert str(status) in subscription.last_error


def test_a_push_service_error_is_retried(order, redis, push_receiver, channels_env):
    subscribe(push_receiver, order.user, "phone")
    push_receiver.status["phone"] = 503
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    with pytest.raises(TransientDeliveryError, match="503"):
        services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id)
    assert PushSubscription.objects.get().active is True


def test_one_gone_subscription_does_not_stop_the_others(order, redis, push_receiver, channels_env):
    subscribe(push_receiver, order.user, "old")
    subscribe(push_receiver, order.user, "new")
    push_receiver.status["old"] = 410
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "sent"
    assert [r["client"] for r in push_receiver.received] == ["new"]
    assert PushSubscription.objects.filter(active=True).count() == 1


def test_no_push_subscription_means_skipped(order, redis):
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "skipped"


def test_a_channel_with_nobody_to_send_to_is_skipped_at_dispatch_without_a_job(order, redis):
    """Most customers have no push subscription: a send_push job per event found nothing to do
    and cost the worker a job's bookkeeping all the same."""
    services.preference_set(user_id=order.user.id, channel=Channel.EMAIL, enabled=False)

    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert deliveries(notification) == {"in_app": "sent", "email": "skipped", "push": "skipped"}
    assert enqueued("notifications.send_email") == enqueued("notifications.send_push") == []
    assert set(notification.deliveries.values_list("last_error", flat=True)) == {
        "",
        "The user turned this channel off.",
        "The user has no active push subscription.",
    }


def test_a_push_queued_for_a_subscriber_who_unsubscribed_since_is_skipped_by_its_send(order, redis):
    """The send re-checks what the dispatch checked."""
    subscription = subscribed(order.user)
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    PushSubscription.objects.filter(id=subscription.id).update(active=False)

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "skipped"


def test_without_vapid_keys_push_fails_clearly(order, redis, push_receiver, settings):
    settings.VAPID_PRIVATE_KEY = ""
    subscribe(push_receiver, order.user, "phone")
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "failed"
    assert "VAPID" in notification.deliveries.get(channel="push").last_error


def test_a_delivery_is_sent_once_even_if_its_task_runs_twice(order, redis, smtp_server, channels_env):
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    email_id = notification.deliveries.get(channel="email").id

    assert services.delivery_send(delivery_id=email_id) == "sent"
    assert services.delivery_send(delivery_id=email_id) == "sent"
    assert len(smtp_server.messages) == 1


def test_delivery_rates_per_channel(order, redis, smtp_server, channels_env):
    first = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")
    services.delivery_send(delivery_id=first.deliveries.get(channel="email").id)
    smtp_server.fail_with = "550 5.1.1 No such user"
    second = services.notification_dispatch_order_event(order_id=reach(order, "confirmed").id, status="confirmed")
    services.delivery_send(delivery_id=second.deliveries.get(channel="email").id)

    rates = services.delivery_rates(hours=1)

    assert rates["email"] == {"attempted": 2, "sent": 1, "rate": 0.5}
    assert rates["in_app"]["rate"] == 1.0
    assert rates["push"]["attempted"] == 0


def test_a_refusing_subscription_does_not_stop_the_others(order, redis, push_receiver, channels_env):
    subscribe(push_receiver, order.user, "refusing")
    subscribe(push_receiver, order.user, "fine")
    push_receiver.status["refusing"] = 400
    notification = services.notification_dispatch_order_event(order_id=reach(order, "paid").id, status="paid")

    assert services.delivery_send(delivery_id=notification.deliveries.get(channel="push").id) == "sent"
    assert [r["client"] for r in push_receiver.received] == ["fine"]
