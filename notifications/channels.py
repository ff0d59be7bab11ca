"""Sending one notification on one channel. Errors are classified: a
PermanentDeliveryError is never retried, a TransientDeliveryError is."""

import base64
import binascii
import functools
import json
import logging
import re
import smtplib
from collections.abc import Callable
from contextlib import contextmanager
from email.utils import parseaddr

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.utils import DNS_NAME
from django.template.loader import render_to_string

from celeste import egress

from .models import Notification, PushSubscription
from .unsubscribe import unsubscribe_headers

logger = logging.getLogger(__name__)


class TransientDeliveryError(Exception):
    pass


class PermanentDeliveryError(Exception):
    pass


def email_message_id(local_part: str) -> str:
    """A deterministic ``Message-ID`` for ``local_part``, on the domain of
    DEFAULT_FROM_EMAIL (the host name if it has none). The same thing sent again
    carries the same id, so the receiving side can recognise the resend."""
    return f"<{local_part}@{_message_id_domain(settings.DEFAULT_FROM_EMAIL)}>"


@functools.lru_cache(maxsize=8)
def _message_id_domain(from_email: str) -> str:
    # Cached: parsing the address costs more than the rest of a campaign email's headers.
    domain = parseaddr(from_email)[1].rpartition("@")[2]
    try:
        domain = domain.encode("idna").decode("ascii") if domain else ""
    except UnicodeError:
        domain = ""
    return domain or str(DNS_NAME)


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
    headers = unsubscribe_headers(user=notification.user)
    if message_id:
        headers["Message-ID"] = message_id
    message = EmailMultiAlternatives(
        subject=notification.title,
        body=render_to_string(f"notifications/email/{template}.txt", context),
        to=[notification.user.email],
        headers=headers,
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


class InvalidPushSubscription(ValueError):
    """A subscription we will not store; ``field`` is the request field at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


def _b64url_decode(text: str) -> bytes | None:
    if not isinstance(text, str) or not _BASE64URL.match(text):
        return None
    try:
        return base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return None


def push_keys_check(*, p256dh: str, auth: str) -> None:
    """RFC 8291 keys: p256dh an uncompressed P-256 point (65 bytes, on the curve),
    auth 16 bytes, both base64url. Raises InvalidPushSubscription naming the key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    point = _b64url_decode(p256dh)
    if point is None or len(point) != 65 or point[0] != 4:
        raise InvalidPushSubscription("p256dh", "Expected the base64url uncompressed P-256 public key (65 bytes).")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise InvalidPushSubscription("p256dh", "This is not a point on the P-256 curve.") from None
    secret = _b64url_decode(auth)
    if secret is None or len(secret) != 16:
        raise InvalidPushSubscription("auth", "Expected the base64url 16-byte auth secret of the subscription.")


def push_endpoint_check(endpoint: str) -> list[egress.Address]:
    """The endpoint's checked addresses (celeste/egress.py with the PUSH_* settings).
    Raises egress.EgressRefused, or egress.EgressLookupFailed when its host does not resolve."""
    return egress.url_check_public(
        endpoint, allowed_hosts=settings.PUSH_ALLOWED_HOSTS, allow_private=settings.PUSH_ALLOW_PRIVATE_HOSTS
    )


def push_subscription_check(*, endpoint: str, p256dh: str, auth: str) -> None:
    """Everything a new subscription must pass; raises InvalidPushSubscription."""
    push_keys_check(p256dh=p256dh, auth=auth)
    try:
        push_endpoint_check(endpoint)
    except egress.EgressError as exc:
        raise InvalidPushSubscription("endpoint", str(exc)) from None


class PushNotConfigured(PermanentDeliveryError):
    """Nothing can be sent to anyone: no usable VAPID key."""


class SubscriptionGone(PermanentDeliveryError):
    """This subscription can never take a message: it is deactivated."""


@functools.cache
def _vapid_key_usable(private_key: str) -> bool:
    from py_vapid import Vapid

    try:
        Vapid.from_string(private_key=private_key)
    except Exception:  # whatever py_vapid raises for a malformed key
        return False
    return True


def push_send(subscription: PushSubscription, payload: bytes) -> None:
    """Encrypt (RFC 8291, aes128gcm) and send to one subscription with a VAPID header.

    The endpoint is checked again here (its DNS may have changed since it was
    stored) and the request goes to the address just checked, with no redirects."""
    from http_ece import ECEException
    from pywebpush import WebPushException, webpush

    if not settings.VAPID_PRIVATE_KEY:
        raise PushNotConfigured("VAPID keys are not configured (manage.py generate_vapid_keys).")
    if not _vapid_key_usable(settings.VAPID_PRIVATE_KEY):
        raise PushNotConfigured("VAPID_PRIVATE_KEY is not a valid key (manage.py generate_vapid_keys).")
    try:
        addresses = push_endpoint_check(subscription.endpoint)
    except egress.EgressLookupFailed as exc:
        raise TransientDeliveryError(f"Push endpoint unreachable: {exc}") from exc
    except egress.EgressRefused as exc:
        raise SubscriptionGone(f"Push endpoint refused: {exc}") from exc
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
            requests_session=egress.pinned_session(subscription.endpoint, addresses[0]),
        )
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status is None:  # raised before sending: the library refused the subscription's keys
            raise SubscriptionGone(f"The push library refused the subscription: {exc}") from exc
        if status in (404, 410):
            raise SubscriptionGone(f"Push service answered {status}: the subscription is gone.") from exc
        if 300 <= status < 400:
            raise PermanentDeliveryError(
                f"Push service answered {status} (a redirect to {exc.response.headers.get('Location', '?')!r}); "
                "redirects are not followed."
            ) from exc
        if 400 <= status < 500 and status != 429:
            raise PermanentDeliveryError(f"Push service refused the message: {status}") from exc
        raise TransientDeliveryError(f"Push service error: {status or exc}") from exc
    except requests.RequestException as exc:  # connection errors and timeouts
        raise TransientDeliveryError(f"Push service unreachable: {exc!r}") from exc
    except (ValueError, TypeError, ECEException) as exc:
        # The keys do not decode or are no P-256 point (stored before they were checked):
        # no retry can change that.
        raise SubscriptionGone(f"The push library refused the subscription's keys: {exc!r}") from exc


def vapid_key_pair() -> tuple[str, str]:
    """A new (private, public) VAPID pair, base64url raw: the formats pywebpush and browsers take."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    encode = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return encode(private), encode(public)
