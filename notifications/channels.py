"""Sending one notification on one channel. Errors are classified: a
PermanentDeliveryError is never retried, a TransientDeliveryError is."""

import base64
import json
import logging
import smtplib
from collections.abc import Callable
from contextlib import contextmanager
from email.utils import parseaddr

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.utils import DNS_NAME
from django.template.loader import render_to_string

from .models import Notification, PushSubscription

logger = logging.getLogger(__name__)


class TransientDeliveryError(Exception):
    pass


class PermanentDeliveryError(Exception):
    pass


def email_message_id(local_part: str) -> str:
    """A deterministic ``Message-ID`` for ``local_part``, on the domain of
    DEFAULT_FROM_EMAIL (the host name if it has none). The same thing sent again
    carries the same id, so the receiving side can recognise the resend."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2]
    try:
        domain = domain.encode("idna").decode("ascii") if domain else ""
    except UnicodeError:
        domain = ""
    return f"<{local_part}@{domain or DNS_NAME}>"


def delivery_message_id(delivery_id: int) -> str:
    return email_message_id(f"delivery-{delivery_id}")


def email_render(notification: Notification, *, message_id: str | None = None) -> EmailMultiAlternatives:
    order = notification.order
    context = {
        "notification": notification,
        "user": notification.user,
        "order": order,
        "items": list(order.items.all()) if order else [],
    }
    template = notification.event.replace(".", "_")
    message = EmailMultiAlternatives(
        subject=notification.title,
        body=render_to_string(f"notifications/email/{template}.txt", context),
        to=[notification.user.email],
        headers={"Message-ID": message_id} if message_id else None,
    )
    message.attach_alternative(render_to_string(f"notifications/email/{template}.html", context), "text/html")
    return message


def email_send(notification: Notification, *, message_id: str, accepted: Callable[[], None]) -> None:
    """Send the notification's email and call ``accepted()`` as soon as the
    server has taken it, before the connection is closed: a failing QUIT comes
    after the caller recorded the send, so it can neither delay that record nor
    turn an accepted message into an error (and a second copy)."""
    if not notification.user.email:
        raise PermanentDeliveryError("The user has no email address.")
    message = email_render(notification, message_id=message_id)
    connection = get_connection(fail_silently=False)
    try:
        with _smtp_errors():
            connection.open()
            connection.send_messages([message])
        accepted()
    finally:
        _close_quietly(connection)


@contextmanager
def _smtp_errors():
    try:
        yield
    except smtplib.SMTPResponseException as exc:
        raise _smtp_error(exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPRecipientsRefused as exc:
        code, reason = next(iter(exc.recipients.values()))
        raise _smtp_error(code, reason) from exc
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise TransientDeliveryError(f"SMTP unavailable: {exc!r}") from exc


def _close_quietly(connection) -> None:
    try:
        connection.close()
    except (smtplib.SMTPException, OSError) as exc:  # the message was taken, or the send already failed
        logger.info("notification.smtp_close_failed", extra={"error": repr(exc)})


def _smtp_error(code: int, reason) -> Exception:
    text = f"SMTP {code}: {reason.decode() if isinstance(reason, bytes) else reason}"
    # 4xx: try again later; 5xx: the server will never take this message.
    return TransientDeliveryError(text) if 400 <= code < 500 else PermanentDeliveryError(text)


def push_payload(notification: Notification) -> bytes:
    return json.dumps(
        {
            "title": notification.title,
            "body": notification.body,
            "event": notification.event,
            "order": notification.order_id,
            "notification_id": notification.id,
        }
    ).encode()


def push_send(subscription: PushSubscription, payload: bytes) -> None:
    """Encrypt (RFC 8291, aes128gcm) and send to one subscription with a VAPID header."""
    from pywebpush import WebPushException, webpush

    if not settings.VAPID_PRIVATE_KEY:
        raise PermanentDeliveryError("VAPID keys are not configured (manage.py generate_vapid_keys).")
    try:
        webpush(
            subscription_info={
                "endpoint": subscription.endpoint,
                "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
            },
            data=payload,
            vapid_private_key=settings.VAPID_PRIVATE_KEY,
            vapid_claims={"sub": settings.VAPID_SUBJECT},
            content_encoding="aes128gcm",
            timeout=settings.PUSH_TIMEOUT_SECONDS,
            ttl=86400,
        )
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (404, 410):
            raise SubscriptionGone(f"Push service answered {status}: the subscription is gone.") from exc
        if status is not None and 400 <= status < 500 and status != 429:
            raise PermanentDeliveryError(f"Push service refused the message: {status}") from exc
        raise TransientDeliveryError(f"Push service error: {status or exc}") from exc
    except requests.RequestException as exc:  # connection errors and timeouts
        raise TransientDeliveryError(f"Push service unreachable: {exc!r}") from exc


class SubscriptionGone(PermanentDeliveryError):
    pass


def vapid_key_pair() -> tuple[str, str]:
    """A new (private, public) VAPID pair, base64url raw: the formats pywebpush and browsers take."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    encode = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return encode(private), encode(public)
