"""Notification writes: dispatching order events, sending deliveries, the
notification center, preferences and push subscriptions."""

import functools
import logging

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from celeste.background.ledger import waiting_for_the_database
from celeste.background.models import TaskMode
from celeste.background.queue import enqueue
from celeste.background.switches import task_mode
from orders.models import Order

from . import channels, tasks
from .metrics import DELIVERIES
from .models import (
    Channel,
    Delivery,
    DeliveryStatus,
    Notification,
    NotificationEvent,
    NotificationPreference,
    PushSubscription,
)
from .ratelimit import rate_limit_allow
from .stream import stream_notification_append
from .unsubscribe import unsubscribe_token_user

logger = logging.getLogger(__name__)

# Why a delivery was not sent (its last_error).
SWITCHED_OFF = "The channel is switched off."
TURNED_OFF = "The user turned this channel off."
NO_SUBSCRIPTION = "The user has no active push subscription."
RATE_LIMITED = "Over the per-user hourly limit."

EVENT_FOR_STATUS = {
    "paid": NotificationEvent.ORDER_PAID,
    "confirmed": NotificationEvent.ORDER_CONFIRMED,
    "shipped": NotificationEvent.ORDER_SHIPPED,
    "delivered": NotificationEvent.ORDER_DELIVERED,
    "cancelled": NotificationEvent.ORDER_CANCELLED,
}
MESSAGES = {
    NotificationEvent.ORDER_PAID: (
        "Payment received for order {number}",
        "We received your payment of {total} {currency}.",
    ),
    NotificationEvent.ORDER_CONFIRMED: ("Order {number} confirmed", "{store} is preparing your order."),
    NotificationEvent.ORDER_SHIPPED: ("Order {number} shipped", "Your order is on its way."),
    NotificationEvent.ORDER_DELIVERED: ("Order {number} delivered", "Your order was delivered. Enjoy!"),
    NotificationEvent.ORDER_CANCELLED: ("Order {number} cancelled", "Your order was cancelled."),
}


def _send_task(channel: str):
    """The task that sends on ``channel``; None for in-app (the record is the message)."""
    return {Channel.EMAIL: tasks.send_email, Channel.PUSH: tasks.send_push}.get(channel)


def channel_enabled(*, user_id: int, channel: str) -> bool:
    return not NotificationPreference.objects.filter(user_id=user_id, channel=channel, enabled=False).exists()


# --- dispatch -------------------------------------------------------------------


@transaction.atomic
def notification_dispatch_order_event(*, order_id: int, status: str) -> Notification | None:
    """Create the notification and one delivery per channel, then enqueue each
    channel's send on its own. Running it again for the same event does nothing.

    Only for a status the order has really reached (it may have moved on since the
    event was enqueued): a message must not make us tell a customer their pending
    order was delivered."""
    event = EVENT_FOR_STATUS.get(status)
    order = Order.objects.select_related("store").filter(id=order_id).first()
    if event is None or order is None:
        return None
    if not order.has_reached(status):
        logger.warning("notification.status_not_reached", extra={"order_id": order.id, "status": status})
        return None
    title, body = MESSAGES[event]
    values = {"number": order.number, "total": order.total, "currency": order.currency, "store": order.store.name}
    notification, created = Notification.objects.get_or_create(
        user_id=order.user_id,
        event=event,
        order=order,
        defaults={
            "title": title.format(**values),
            "body": body.format(**values),
            "data": {"order_id": order.id, "order_number": order.number, "status": status},
        },
    )
    if not created:
        return notification
    _deliver(notification, Channel.values)
    return notification


@transaction.atomic
def notification_email(*, user_id: int, event: str, title: str, body: str, data: dict) -> Notification:
    """A notification that goes out by email only (e.g. a report is ready), through
    the same delivery path as order events: its switch, preference, rate limit and
    SMTP handling. Not deduplicated here: the caller sends it once (in its own
    transaction, with its own mark)."""
    notification = Notification.objects.create(user_id=user_id, event=event, title=title, body=body, data=data)
    _deliver(notification, [Channel.EMAIL])
    return notification


def _deliver(notification: Notification, channels_: list[str]) -> None:
    """One delivery per channel, each sent on its own. The deliveries are created in one
    statement, those with no one to send to (the channel switched off or turned off by the
    user; push without a subscription, as for most customers) already skipped, and the
    in-app one is finished here (its record is the message): a job per channel that finds
    nothing to do would cost the worker as much bookkeeping as one that sends. The send
    jobs re-check all of it."""
    closed = _closed_channels(user_id=notification.user_id, channels_=channels_)
    deliveries = Delivery.objects.bulk_create(
        Delivery(
            notification=notification,
            channel=channel,
            status=DeliveryStatus.SKIPPED if channel in closed else DeliveryStatus.PENDING,
            last_error=closed.get(channel, ""),
        )
        for channel in channels_
    )
    for delivery in deliveries:
        send = _send_task(delivery.channel)
        if delivery.status == DeliveryStatus.SKIPPED:
            DELIVERIES.labels(channel=delivery.channel, outcome=DeliveryStatus.SKIPPED).inc()
        elif send is None:
            _in_app_deliver(delivery, notification)
        else:
            enqueue(send, delivery_id=delivery.id)
    logger.info("notification.dispatched", extra={"notification_id": notification.id, "event": notification.event})


def _closed_channels(*, user_id: int, channels_: list[str]) -> dict[str, str]:
    """Of ``channels_``, those with no one to send to for the user, each with the reason
    (one query for the user's preferences, one for push subscriptions if push is open)."""
    turned_off = set(
        NotificationPreference.objects.filter(user_id=user_id, channel__in=channels_, enabled=False).values_list(
            "channel", flat=True
        )
    )
    closed = {}
    for channel in channels_:
        send = _send_task(channel)
        if send is not None and task_mode(send.name) == TaskMode.OFF:
            closed[channel] = SWITCHED_OFF
        elif channel in turned_off:
            closed[channel] = TURNED_OFF
    if Channel.PUSH in channels_ and Channel.PUSH not in closed and not _has_push_subscription(user_id):
        closed[Channel.PUSH] = NO_SUBSCRIPTION
    return closed


def _has_push_subscription(user_id: int) -> bool:
    return PushSubscription.objects.filter(user_id=user_id, active=True).exists()


def _in_app_deliver(delivery: Delivery, notification: Notification) -> None:
    """The in-app delivery: its record is the message, so it is sent once counted against
    the rate limit, and the user's live streams are told (in the caller's transaction,
    published after commit)."""
    if not rate_limit_allow(user_id=notification.user_id, channel=Channel.IN_APP, delivery_id=delivery.id):
        _finish(delivery, DeliveryStatus.RATE_LIMITED, RATE_LIMITED)
        return
    delivery.attempts += 1
    _finish(delivery, DeliveryStatus.SENT)
    stream_notification_append(notification)


def _finish(delivery: Delivery, status: str, error: str = "") -> Delivery:
    delivery.status = status
    delivery.last_error = error
    if status == DeliveryStatus.SENT:
        delivery.sent_at = timezone.now()
    delivery.save(update_fields=["status", "last_error", "sent_at", "attempts", "updated_at"])
    DELIVERIES.labels(channel=delivery.channel, outcome=status).inc()
    return delivery


def delivery_send(*, delivery_id: int) -> str:
    """Send one pending delivery on its channel; returns its final or current status.

    Idempotent: a delivery that is no longer pending is left alone. Raises
    TransientDeliveryError when a retry may succeed (the delivery stays pending).
    The one window in which a message can go out twice lies between the server
    accepting it and the delivery being marked sent: the mark is the very next
    thing done (for email, before the SMTP connection is even closed). A worker
    lost inside it leaves the delivery pending and the job is redelivered; the
    email it resends carries the same Message-ID, so the receiver can tell.
    """
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("notification__user", "notification__order")
            .get(id=delivery_id)
        )
        if delivery.status != DeliveryStatus.PENDING:
            return delivery.status
        notification, channel = delivery.notification, delivery.channel
        if reason := _closed_channels(user_id=notification.user_id, channels_=[channel]).get(channel):
            return _finish(delivery, DeliveryStatus.SKIPPED, reason).status
        if _send_task(channel) is None:  # in-app: nothing to transmit
            _in_app_deliver(delivery, notification)
            return delivery.status
        if not rate_limit_allow(user_id=notification.user_id, channel=channel, delivery_id=delivery.id):
            return _finish(delivery, DeliveryStatus.RATE_LIMITED, RATE_LIMITED).status
        delivery.attempts += 1
        delivery.save(update_fields=["attempts", "updated_at"])
    # Send outside the row lock: a slow SMTP or push server must not hold it.
    try:
        _send(delivery_id=delivery_id, channel=channel, notification=notification)
    except channels.PermanentDeliveryError as exc:
        delivery_mark_failed(delivery_id=delivery_id, error=str(exc))
        logger.warning("notification.delivery_failed", extra={"delivery_id": delivery_id, "error": str(exc)})
        return DeliveryStatus.FAILED
    except channels.TransientDeliveryError as exc:
        Delivery.objects.filter(id=delivery_id).update(last_error=str(exc), updated_at=timezone.now())
        raise
    return DeliveryStatus.SENT


def _mark_sent(delivery_id: int, channel: str) -> bool:
    # The message is out: this write must not be lost to a database restart, or the
    # retry would send it again. So it waits for the database like the ledger's own.
    marked = waiting_for_the_database(
        lambda: Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.PENDING).update(
            status=DeliveryStatus.SENT, sent_at=timezone.now(), last_error="", updated_at=timezone.now()
        )
    )
    if marked:
        DELIVERIES.labels(channel=channel, outcome=DeliveryStatus.SENT).inc()
    return bool(marked)


def _send(*, delivery_id: int, channel: str, notification: Notification) -> None:
    """Transmit on ``channel``; the delivery is marked sent the moment the message is taken."""
    accepted = functools.partial(_mark_sent, delivery_id, channel)
    if channel == Channel.EMAIL:
        channels.email_send(notification, message_id=channels.delivery_message_id(delivery_id), accepted=accepted)
    else:
        _push_to_all(notification, accepted=accepted)


def _push_to_all(notification: Notification, *, accepted) -> None:
    subscriptions = list(PushSubscription.objects.filter(user_id=notification.user_id, active=True))
    if not subscriptions:
        raise channels.PermanentDeliveryError(NO_SUBSCRIPTION)
    payload = channels.push_payload(notification)
    outcomes: dict[int, Exception | None] = {}  # subscription id → its error, None if it took the message
    for subscription in subscriptions:
        try:
            channels.push_send(subscription, payload)
        except channels.SubscriptionGone as exc:
            outcomes[subscription.id] = exc
        except channels.PushNotConfigured:
            raise  # nothing can be sent to anyone
        except channels.PermanentDeliveryError as exc:
            outcomes[subscription.id] = exc
        except channels.TransientDeliveryError as exc:
            outcomes[subscription.id] = exc
        else:
            outcomes[subscription.id] = None
    delivered = None in outcomes.values()
    if delivered:
        accepted()  # before the bookkeeping below: nothing may widen the window
    _push_outcomes_record(outcomes)
    if delivered:
        return
    errors = list(outcomes.values())
    transient = next((e for e in errors if isinstance(e, channels.TransientDeliveryError)), None)
    if transient is not None:
        raise transient
    refused = next((e for e in errors if not isinstance(e, channels.SubscriptionGone)), None)
    raise refused or channels.PermanentDeliveryError("Every push subscription of the user is gone.")


def _push_outcomes_record(outcomes: dict[int, Exception | None]) -> None:
    for subscription_id, error in outcomes.items():
        if error is None:
            PushSubscription.objects.filter(id=subscription_id).update(
                last_success_at=timezone.now(), last_error="", updated_at=timezone.now()
            )
        elif isinstance(error, channels.SubscriptionGone):
            push_subscription_deactivate(subscription_id=subscription_id, reason=str(error))
        elif isinstance(error, channels.PermanentDeliveryError):
            PushSubscription.objects.filter(id=subscription_id).update(last_error=str(error), updated_at=timezone.now())


def delivery_mark_failed(*, delivery_id: int, error: str) -> None:
    """The delivery is failed for good: a permanent error, or retries ran out."""
    failed = Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, last_error=error, updated_at=timezone.now()
    )
    if failed:
        channel = Delivery.objects.filter(id=delivery_id).values_list("channel", flat=True).get()
        DELIVERIES.labels(channel=channel, outcome=DeliveryStatus.FAILED).inc()


@transaction.atomic
def delivery_reopen(*, delivery_id: int) -> bool:
    """Make a ``failed`` delivery ``pending`` again; returns whether it was failed.

    What a send job retried from the inbox needs: when its retries ran out the
    delivery was marked failed, and delivery_send leaves anything not pending
    alone, so without this the retry would return at once and send nothing.
    ``attempts`` keeps the history; ``last_error`` is cleared. A delivery that is
    sent, skipped or rate-limited stays as it is, so retrying it does nothing.
    """
    return bool(
        Delivery.objects.filter(id=delivery_id, status=DeliveryStatus.FAILED).update(
            status=DeliveryStatus.PENDING, last_error="", updated_at=timezone.now()
        )
    )


# --- notification center, preferences, subscriptions ------------------------------


def notification_mark_read(*, notification: Notification) -> Notification:
    if notification.read_at is None:
        notification.read_at = timezone.now()
        notification.save(update_fields=["read_at", "updated_at"])
    return notification


def notifications_mark_all_read(*, user) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).update(
        read_at=timezone.now(), updated_at=timezone.now()
    )


@transaction.atomic
def preference_set(*, user_id: int, channel: str, enabled: bool) -> NotificationPreference:
    preference, _ = NotificationPreference.objects.update_or_create(
        user_id=user_id, channel=channel, defaults={"enabled": enabled}
    )
    return preference


def push_subscription_save(*, user, endpoint: str, p256dh: str, auth: str) -> PushSubscription:
    """Subscribe (or re-subscribe) a browser for ``user``.

    Raises channels.InvalidPushSubscription (naming the field) for keys that are
    not a P-256 point and 16-byte secret, or an endpoint that is not a public https
    push service (celeste/egress.py); nothing is stored then. The check resolves
    the host, so it runs before the transaction. Another user registering the same
    endpoint gets a row of their own: theirs never takes over this user's."""
    channels.push_subscription_check(endpoint=endpoint, p256dh=p256dh, auth=auth)
    with transaction.atomic():
        subscription, _ = PushSubscription.objects.update_or_create(
            user=user,
            endpoint=endpoint,
            defaults={"p256dh": p256dh, "auth": auth, "active": True, "last_error": ""},
        )
    return subscription


def push_subscription_deactivate(*, subscription_id: int, reason: str) -> None:
    PushSubscription.objects.filter(id=subscription_id).update(
        active=False, last_error=reason, updated_at=timezone.now()
    )
    logger.info("push.subscription_deactivated", extra={"subscription_id": subscription_id})


def email_unsubscribe(*, token: str):
    """Turn email off for the token's user. Raises unsubscribe.InvalidUnsubscribeToken."""
    user = unsubscribe_token_user(token=token)
    preference_set(user_id=user.id, channel=Channel.EMAIL, enabled=False)
    return user


def in_app_notifications(user):
    """The user's notification center: what reached them in-app."""
    return Notification.objects.filter(
        user=user, deliveries__channel=Channel.IN_APP, deliveries__status=DeliveryStatus.SENT
    )


def delivery_rates(*, hours: int = 1) -> dict[str, dict]:
    """sent / attempted per channel over the last ``hours`` (for the metrics endpoint)."""
    since = timezone.now() - timezone.timedelta(hours=hours)
    rates = {}
    recent = Delivery.objects.filter(updated_at__gte=since)
    for channel in Channel.values:
        attempted = (
            recent.filter(channel=channel)
            .filter(Q(status__in=[DeliveryStatus.SENT, DeliveryStatus.FAILED]) | Q(attempts__gt=0))
            .count()
        )
        sent = recent.filter(channel=channel, status=DeliveryStatus.SENT).count()
        rates[channel] = {"attempted": attempted, "sent": sent, "rate": (sent / attempted) if attempted else None}
    return rates
