"""The signed payment webhook."""

import json
import time
from decimal import Decimal

import pytest

from orders.models import Order, OrderStatus, Payment, PaymentStatus
from orders.payments import SIGNATURE_HEADER, signature_header

from ..factories import place_order

pytestmark = pytest.mark.django_db

URL = "/api/v1/payments/webhook"
SECRET = "whsec_test_current"


@pytest.fixture(autouse=True)
def _secrets(settings):
    settings.PAYMENT_WEBHOOK_SECRETS = [SECRET, "whsec_test_previous"]


def event(order: Order, *, event_id="evt_1", amount=None, currency=None, type_="payment.succeeded") -> dict:
    return {
        "id": event_id,
        "type": type_,
        "data": {
            "order_number": order.number,
            "amount": str(amount if amount is not None else order.total),
            "currency": currency or order.currency,
            "provider": "testpay",
        },
    }


def deliver(client, payload, *, secrets=(SECRET,), timestamp=None, header=None, body=None):
    body = body if body is not None else json.dumps(payload).encode()
    header = header if header is not None else signature_header(body=body, secrets=list(secrets), timestamp=timestamp)
    return client.post(URL, data=body, content_type="application/json", headers={SIGNATURE_HEADER: header})


@pytest.fixture
def order():
    return place_order(lines=((Decimal("4.25"), 2),))


def test_valid_payment_marks_the_order_paid(api_client, order):
    response = deliver(api_client, event(order))

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "outcome": "succeeded", "detail": ""}
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    payment = Payment.objects.get()
    assert (payment.order, payment.amount, payment.status) == (order, Decimal("8.50"), PaymentStatus.SUCCEEDED)
    assert payment.raw_payload["id"] == "evt_1"


def test_a_signature_made_with_the_previous_secret_is_accepted_during_rotation(api_client, order):
    assert deliver(api_client, event(order), secrets=("whsec_test_previous",)).status_code == 200


def test_several_v1_signatures_are_accepted_if_one_matches(api_client, order):
    assert deliver(api_client, event(order), secrets=("whsec_unknown", SECRET)).status_code == 200


def test_a_replayed_event_returns_200_and_changes_nothing(api_client, order):
    deliver(api_client, event(order))
    paid_at = Order.objects.get(id=order.id).paid_at

    again = deliver(api_client, event(order))

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert Payment.objects.count() == 1
    assert Order.objects.get(id=order.id).paid_at == paid_at


def test_a_wrong_amount_is_recorded_and_refused(api_client, order):
    response = deliver(api_client, event(order, amount="1.00"))

    assert response.status_code == 200
    assert response.json()["outcome"] == "refused"
    order.refresh_from_db()
    assert order.status == OrderStatus.PENDING
    assert "does not match the order total 8.50" in order.payment_error
    assert Payment.objects.get().status == PaymentStatus.REFUSED


def test_a_wrong_currency_is_refused(api_client, order):
    deliver(api_client, event(order, currency="USD"))

    assert Order.objects.get(id=order.id).status == OrderStatus.PENDING


def test_a_later_correct_payment_clears_the_error(api_client, order):
    deliver(api_client, event(order, event_id="evt_bad", amount="1.00"))
    deliver(api_client, event(order, event_id="evt_good"))

    order.refresh_from_db()
    assert (order.status, order.payment_error) == (OrderStatus.PAID, "")


def test_payment_for_an_already_paid_order_is_refused(api_client, order):
    deliver(api_client, event(order, event_id="evt_1"))

    response = deliver(api_client, event(order, event_id="evt_2"))

    assert response.json()["outcome"] == "refused"
    assert "is paid, not pending" in response.json()["detail"]


def test_unknown_order_is_recorded_and_refused(api_client, order):
    payload = event(order)
    payload["data"]["order_number"] = "CEL-99999999"

    response = deliver(api_client, payload)

    assert response.json()["outcome"] == "refused"
    assert Payment.objects.get().order is None


def test_other_event_types_are_recorded_and_ignored(api_client, order):
    response = deliver(api_client, event(order, type_="payment.pending"))

    assert response.json()["outcome"] == "ignored"
    assert Order.objects.get(id=order.id).status == OrderStatus.PENDING


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=abc,v1=00",
        "v1=deadbeef",
        lambda body: signature_header(body=body, secrets=["whsec_forged"]),
        lambda body: signature_header(body=body + b" ", secrets=[SECRET]),
    ],
)
def test_forged_or_malformed_signatures_are_a_401_and_store_nothing(api_client, order, header):
    body = json.dumps(event(order)).encode()
    header = header(body) if callable(header) else header

    response = deliver(api_client, None, body=body, header=header)

    assert response.status_code == 401
    assert not Payment.objects.exists()
    assert Order.objects.get(id=order.id).status == OrderStatus.PENDING


@pytest.mark.parametrize("age", [330, -330])  # past the 300 s tolerance, with room for a slow run
def test_stale_or_future_timestamps_are_a_401(api_client, order, age):
    response = deliver(api_client, event(order), timestamp=int(time.time()) - age)

    assert response.status_code == 401
    assert not Payment.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"id": "evt_x"}',
        b'{"id": "evt_x", "type": "payment.succeeded", "data": {"order_number": "X"}}',
    ],
)
def test_malformed_but_signed_events_are_a_400_and_store_nothing(api_client, order, body):
    response = deliver(api_client, None, body=body)

    assert response.status_code == 400
    assert not Payment.objects.exists()


@pytest.mark.parametrize(
    "data_change",
    [{"amount": "1" + "0" * 12}, {"amount": "8.505"}, {"amount": "-8.50"}, {"currency": "EURO"}, {"amount": "NaN"}],
)
def test_out_of_range_event_fields_are_a_400_not_a_500(api_client, order, data_change):
    payload = event(order)
    payload["data"].update(data_change)

    response = deliver(api_client, payload)

    assert response.status_code == 400
    assert not Payment.objects.exists()


def test_a_refused_event_for_a_paid_order_leaves_the_order_alone(api_client, order):
    deliver(api_client, event(order, event_id="evt_1"))

    deliver(api_client, event(order, event_id="evt_2", amount="1.00"))

    assert Order.objects.get(id=order.id).payment_error == ""


def _nested(depth: int) -> dict:
    inner: object = "deep"
    for _ in range(depth):
        inner = {"x": inner}
    return inner


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda payload: payload["data"].update(amount="1E+27"), "data.amount"),
        (lambda payload: payload["data"].update(amount=1e27), "data.amount"),
        (lambda payload: payload["data"].update(amount="1E-400"), "data.amount"),
        (lambda payload: payload["data"].update(order_number="CEL-\x0000001"), "data.order_number"),
        (lambda payload: payload.update(id="evt_\x00"), "id"),
        (lambda payload: payload["data"].update(provider="pay\x00"), "data.provider"),
        (lambda payload: payload["data"].update(note={"a": ["ok", "bad\x00"]}), "data.note.a[1]"),
        (lambda payload: payload["data"].update(provider="\ud800"), "data.provider"),
        (lambda payload: payload["data"].update(extra=_nested(40)), "data.extra"),
    ],
)
def test_signed_but_malformed_values_are_a_400_naming_the_field(api_client, order, change, field):
    payload = event(order)
    change(payload)

    response = deliver(api_client, payload)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Malformed event:")
    assert f"'{field}" in response.json()["detail"]
    assert not Payment.objects.exists()
    assert Order.objects.get(id=order.id).status == OrderStatus.PENDING


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_json_nested_too_deep_for_the_parser_is_a_400(api_client, order, depth):
    body = b'{"id": "evt_1", "type": "x", "data": ' + b"[" * depth + b"]" * depth + b"}"

    response = deliver(api_client, None, body=body)

    assert response.status_code == 400
    assert "nested" in response.json()["detail"]
    assert not Payment.objects.exists()


def test_a_malformed_body_with_a_bad_signature_is_still_a_401(api_client, order):
    body = b'{"id": "evt_\\u0000", "type": "payment.succeeded", "data": {"amount": "1E+27"}}'

    response = deliver(api_client, None, body=body, header=signature_header(body=body, secrets=["whsec_forged"]))

    assert response.status_code == 401
