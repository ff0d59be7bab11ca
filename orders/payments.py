"""The payment provider's signed webhook.

Header ``Celeste-Signature: t=<unix time>,v1=<hex>[,v1=<hex>…]`` where each v1 is
HMAC-SHA256 over ``"{t}.{raw body}"`` with one of the shared secrets (several
during a secret rotation).
"""

import hashlib
import hmac
import json
import logging
import time
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, transaction

from . import services
from .models import Order, OrderStatus, Payment, PaymentStatus

logger = logging.getLogger(__name__)
SIGNATURE_HEADER = "Celeste-Signature"
PAYMENT_SUCCEEDED = "payment.succeeded"
# Real events nest a handful of levels; anything deeper is not an event (and deep
# nesting costs Postgres' jsonb parser and Python's recursion, a 500 otherwise).
MAX_EVENT_DEPTH = 32
# The largest amount an order can have (Order.total: 12 digits, 2 decimals).
MAX_AMOUNT = Decimal("9999999999.99")


class SignatureError(Exception):
    pass


class EventError(ValueError):
    """The signed body is not a well-formed event."""


def signature_header(*, body: bytes, secrets: list[str], timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    parts = [f"t={timestamp}"] + [
        f"v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}" for secret in secrets
    ]
    return ",".join(parts)


def signature_verify(*, body: bytes, header: str, secrets: list[str], tolerance: int, now: float | None = None):
    """Raise SignatureError unless one v1 matches one secret and t is fresh."""
    timestamp, candidates = None, []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if not timestamp or not timestamp.isdigit() or not candidates:
        raise SignatureError("Malformed or missing signature header.")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError("Signature timestamp is outside the tolerance window.")
    signed = f"{timestamp}.".encode() + body
    expected = [hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() for secret in secrets]
    # Compare every pair in constant time; no early exit on the first match.
    matched = False
    for candidate in candidates:
        for digest in expected:
            matched |= hmac.compare_digest(candidate, digest)
    if not matched:
        raise SignatureError("No signature matches.")


def payload_load(body: bytes):
    """The signed body as JSON that Postgres can store, or EventError naming what is wrong.

    Call it only after the signature check: a forged body is a 401, whatever it holds."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise EventError("the body is nested too deeply.") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise EventError(f"the body is not JSON ({exc}).") from None
    _check_storable(payload)
    return payload


def _check_storable(payload) -> None:
    """Walk the document without recursion: every string (keys too) must be storable
    text (no NUL, which Postgres refuses in text and jsonb; no lone surrogate, which
    cannot be encoded as UTF-8), and nesting stays within MAX_EVENT_DEPTH."""
    stack = [(payload, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_EVENT_DEPTH:
            raise EventError(f"'{path}' is nested more than {MAX_EVENT_DEPTH} levels deep.")
        if isinstance(value, str):
            _check_text(value, path or "(body)")
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                _check_text(key, f"{child} (key)")
                stack.append((item, child, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value))


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise EventError(f"'{path}' contains a NUL character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise EventError(f"'{path}' contains an invalid character (a lone surrogate).") from None


def _parse(payload) -> dict:
    if not isinstance(payload, dict):
        raise EventError("The event must be a JSON object.")
    event_id, event_type, data = payload.get("id"), payload.get("type"), payload.get("data")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise EventError("'id' must be a non-empty string.")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise EventError("'type' must be a non-empty string of at most 100 characters.")
    if not isinstance(data, dict):
        raise EventError("'data' must be an object.")
    parsed = {"id": event_id, "type": event_type, "provider": str(data.get("provider", "test"))[:50]}
    if event_type == PAYMENT_SUCCEEDED:
        if not isinstance(data.get("order_number"), str):
            raise EventError("'data.order_number' is required.")
        try:
            amount = Decimal(str(data.get("amount")))
        except InvalidOperation:
            raise EventError("'data.amount' must be a decimal string.") from None
        # The range first: quantize() itself fails (InvalidOperation) on huge values such as 1E+27.
        if not amount.is_finite() or not 0 <= amount <= MAX_AMOUNT or amount != amount.quantize(Decimal("0.01")):
            raise EventError(f"'data.amount' must be an amount from 0 to {MAX_AMOUNT} with at most 2 decimals.")
        currency = data.get("currency")
        if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
            raise EventError("'data.currency' must be a 3-letter ISO code.")
        parsed.update(order_number=data["order_number"], amount=amount, currency=data["currency"].upper())
    return parsed


@transaction.atomic
def payment_event_process(*, payload: dict) -> tuple[Payment, bool]:
    """Record one provider event and act on it. Returns (payment, created);
    a replayed event id returns the first record and changes nothing.

    Raises EventError (nothing stored) for a malformed event.
    """
    event = _parse(payload)
    order = None
    if event["type"] == PAYMENT_SUCCEEDED:
        # The order lock serialises concurrent deliveries of the same event.
        order = Order.objects.select_for_update().filter(number=event["order_number"]).first()
    existing = Payment.objects.filter(provider_event_id=event["id"]).first()
    if existing:
        return existing, False

    payment = Payment(
        provider=event["provider"],
        provider_event_id=event["id"],
        event_type=event["type"],
        raw_payload=payload,
        order=order,
        amount=event.get("amount"),
        currency=event.get("currency", ""),
    )
    if event["type"] != PAYMENT_SUCCEEDED:
        payment.status = PaymentStatus.IGNORED
    else:
        payment.error = _refusal(order, event)
        payment.status = PaymentStatus.REFUSED if payment.error else PaymentStatus.SUCCEEDED
    try:
        with transaction.atomic():
            payment.save()
    except IntegrityError:  # the same event id won a race without an order lock
        return Payment.objects.get(provider_event_id=event["id"]), False

    if payment.status == PaymentStatus.SUCCEEDED:
        services.order_mark_paid(order_id=order.id)
    elif payment.status == PaymentStatus.REFUSED and order is not None and order.status == OrderStatus.PENDING:
        services.order_record_payment_error(order=order, error=payment.error)
    if order is not None and order.status == OrderStatus.CANCELLED and payment.status == PaymentStatus.REFUSED:
        logger.warning("payment.refund_needed", extra={"event_id": event["id"], "order_id": order.id})
    logger.info("payment.event", extra={"event_id": event["id"], "status": payment.status})
    return payment, True


def _refusal(order: Order | None, event: dict) -> str:
    if order is None:
        return f"Unknown order {event['order_number']}."
    if order.status == OrderStatus.CANCELLED:
        # Expired (ORDER_PAYMENT_TIMEOUT_MINUTES) or cancelled before the money arrived: its
        # stock is back on sale, so the order is not revived. The provider took the money.
        return f"Order {order.number} was cancelled before this payment arrived; refund it."
    if order.status != OrderStatus.PENDING:
        return f"Order {order.number} is {order.status}, not pending."
    if event["currency"] != order.currency or event["amount"] != order.total:
        return (
            f"Amount {event['amount']} {event['currency']} does not match the order total "
            f"{order.total} {order.currency}."
        )
    return ""
