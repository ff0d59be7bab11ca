"""The live event stream's record and fan-out (the writing side; the serving side is
``notifications/live.py``).

Every event of a user's stream (a new in-app notification, a status change of one
of their orders) is a ``StreamEvent`` row written in the transaction that made it
happen, with the user's next ``event_id``; after commit it is published on the
user's Redis channel, from which each ASGI process forwards it to its own
connections. Postgres is the record, Redis only the transport: a publication that
is lost (Redis down, the process gone between commit and publish) is replayed from
the rows, by id, when the client reconnects, or fetched by the stream itself as soon
as a later event of the same user shows the gap.
"""

import json
import logging
import secrets

import redis
from django.conf import settings
from django.core import signing
from django.db import connection, transaction
from django.utils import timezone

from celeste.background.redis import client

from .models import StreamEvent, StreamKind, StreamSequence

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "celeste:stream:user:"
TICKET_SALT = "notifications.stream-ticket"
TICKET_USED_PREFIX = "celeste:stream:ticket-used:"


def stream_channel(user_id: int) -> str:
    return f"{CHANNEL_PREFIX}{user_id}"


def stream_event_append(*, user_id: int, kind: str, data: dict) -> int:
    """Add an event to ``user_id``'s stream in the caller's transaction; returns its id.

    The id comes from the user's ``StreamSequence`` row, updated here and so locked
    until the caller commits: two writers for one user commit in id order, and a
    rolled-back one leaves no hole. Published to Redis after commit."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO notifications_streamsequence (user_id, last_id) VALUES (%s, 1) "
            "ON CONFLICT (user_id) DO UPDATE SET last_id = notifications_streamsequence.last_id + 1 "
            "RETURNING last_id",
            [user_id],
        )
        (event_id,) = cursor.fetchone()
        StreamEvent.objects.create(user_id=user_id, event_id=event_id, kind=kind, data=data)
    message = stream_message(event_id=event_id, kind=kind, data=data)
    transaction.on_commit(lambda: _publish(user_id, message))
    return event_id


def stream_message(*, event_id: int, kind: str, data: dict) -> str:
    """The JSON published on the channel (and what live.py turns into SSE lines)."""
    return json.dumps({"id": event_id, "event": kind, "data": data}, separators=(",", ":"), default=str)


def _publish(user_id: int, message: str) -> None:
    # After commit: a failure must not reach the caller, whose write is done. The
    # client gets the event on reconnect (the stream told it Redis is down).
    try:
        client().publish(stream_channel(user_id), message)
    except redis.RedisError as exc:
        logger.warning("stream.publish_failed", extra={"user_id": user_id, "error": repr(exc)})


def stream_notification_append(notification) -> int:
    """The in-app notification ``notification`` reached the user's notification center."""
    return stream_event_append(
        user_id=notification.user_id,
        kind=StreamKind.NOTIFICATION,
        data={
            "id": notification.id,
            "event": notification.event,
            "order": notification.order_id,
            "title": notification.title,
            "body": notification.body,
            "data": notification.data,
            "created_at": notification.created_at.isoformat(),
        },
    )


def stream_order_status_append(order, *, previous: str | None) -> int:
    return stream_event_append(
        user_id=order.user_id,
        kind=StreamKind.ORDER_STATUS,
        data={
            "order": order.id,
            "number": order.number,
            "status": order.status,
            "previous": previous,
            "changed_at": order.updated_at.isoformat(),
        },
    )


# --- reads for the stream -------------------------------------------------------


def stream_last_id(user_id: int) -> int:
    return StreamSequence.objects.filter(user_id=user_id).values_list("last_id", flat=True).first() or 0


def stream_events_after(user_id: int, after: int, *, upto: int | None = None, limit: int = 500) -> list[str]:
    """Messages (stream_message JSON) of the user's events with ids above ``after``
    (and at most ``upto``), in id order, at most ``limit``."""
    events = StreamEvent.objects.filter(user_id=user_id, event_id__gt=after)
    if upto is not None:
        events = events.filter(event_id__lte=upto)
    return [
        stream_message(event_id=event_id, kind=kind, data=data)
        for event_id, kind, data in events.order_by("event_id").values_list("event_id", "kind", "data")[:limit]
    ]


# --- retention -------------------------------------------------------------------


def stream_events_sweep(*, batch_size: int = 5000) -> int:
    """Delete events older than STREAM_RETENTION_HOURS; returns how many. Any number
    of runs, at any time, leave the same rows (the sequences stay: ids never repeat)."""
    cutoff = timezone.now() - timezone.timedelta(hours=settings.STREAM_RETENTION_HOURS)
    deleted = 0
    while True:
        ids = list(StreamEvent.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        deleted += StreamEvent.objects.filter(id__in=ids).delete()[0]


# --- tickets (EventSource cannot send headers) -----------------------------------


class InvalidTicket(Exception):
    pass


def stream_ticket_issue(*, user_id: int) -> str:
    """A signed ticket naming the user and a random nonce, valid for
    STREAM_TICKET_TTL_SECONDS and (checked in Redis when used) once."""
    return signing.dumps({"u": user_id, "n": secrets.token_urlsafe(16)}, salt=TICKET_SALT, compress=False)


def stream_ticket_read(ticket: str) -> tuple[int, str]:
    """(user id, nonce) of a well-signed ticket that has not expired; raises InvalidTicket.
    Whether it was used already is the caller's check (``ticket_used_key``)."""
    try:
        payload = signing.loads(ticket, salt=TICKET_SALT, max_age=settings.STREAM_TICKET_TTL_SECONDS)
    except signing.SignatureExpired:
        raise InvalidTicket("The ticket has expired; ask for a new one.") from None
    except signing.BadSignature:
        raise InvalidTicket("The ticket is not valid.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("u"), int) or not payload.get("n"):
        raise InvalidTicket("The ticket is not valid.")
    return payload["u"], str(payload["n"])


def ticket_used_key(nonce: str) -> str:
    return TICKET_USED_PREFIX + nonce
