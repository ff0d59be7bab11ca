"""Unpaid orders do not hold stock forever: pending orders expire after
ORDER_PAYMENT_TIMEOUT_MINUTES (the periodic task cancels them and returns the stock),
and a customer has at most ORDER_MAX_OPEN_UNPAID unpaid orders at once."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from catalog.models import StockLevel
from celeste.background import startup
from orders import tasks
from orders.models import Order, OrderStatus, Payment, PaymentStatus
from orders.payments import SIGNATURE_HEADER, signature_header
from orders.services import order_mark_paid

from ..factories import AddressFactory, ProductFactory, StockLevelFactory, StoreFactory, UserFactory, place_order

pytestmark = pytest.mark.django_db


def age(order: Order, minutes: float) -> None:
    Order.objects.filter(id=order.id).update(created_at=timezone.now() - timedelta(minutes=minutes))


def stock_of(order: Order) -> list[int]:
    return [StockLevel.objects.get(store=order.store, product=item.product).quantity for item in order.items.all()]


def expire() -> int:
    return tasks.expire_unpaid_orders.apply().get()


def test_a_pending_order_past_the_timeout_is_cancelled_and_its_stock_returned(settings):
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 30
    order = place_order(lines=((Decimal("2.50"), 4), (Decimal("1.00"), 10)), stock=10)
    assert stock_of(order) == [6, 0]
    age(order, 31)

    assert expire() == 1

    order.refresh_from_db()
    assert order.status == OrderStatus.CANCELLED
    assert order.cancelled_at is not None
    assert stock_of(order) == [10, 10]


def test_expiry_is_idempotent(settings):
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 30
    order = place_order(stock=10)
    age(order, 45)

    assert (expire(), expire()) == (1, 0)

    assert Order.objects.get(id=order.id).status == OrderStatus.CANCELLED
    assert stock_of(order) == [10]


def test_recent_and_paid_orders_do_not_expire(settings):
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 30
    recent, paid = place_order(), place_order()
    age(recent, 29)
    order_mark_paid(order_id=paid.id)
    age(paid, 600)

    assert expire() == 0

    assert Order.objects.get(id=recent.id).status == OrderStatus.PENDING
    assert Order.objects.get(id=paid.id).status == OrderStatus.PAID


def test_the_expiry_task_is_declared_as_a_periodic_task(settings):
    declared = {periodic.task.name: periodic for periodic in startup.periodic_tasks()}

    assert "orders.expire_unpaid_orders" in declared
    assert declared["orders.expire_unpaid_orders"].every == settings.ORDER_EXPIRY_INTERVAL_SECONDS


def test_a_payment_for_an_expired_order_is_refused_and_flagged_for_refund(settings):
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 30
    settings.PAYMENT_WEBHOOK_SECRETS = ["whsec_test"]
    order = place_order(stock=10)
    age(order, 31)
    expire()
    body = json.dumps(
        {
            "id": "evt_late",
            "type": "payment.succeeded",
            "data": {"order_number": order.number, "amount": str(order.total), "currency": order.currency},
        }
    ).encode()

    response = APIClient().post(
        "/api/v1/payments/webhook",
        data=body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: signature_header(body=body, secrets=["whsec_test"])},
    )

    assert response.status_code == 200  # the provider must not retry it
    assert response.json()["outcome"] == "refused"
    assert "cancelled" in response.json()["detail"] and "refund" in response.json()["detail"]
    assert Payment.objects.get().status == PaymentStatus.REFUSED
    assert Order.objects.get(id=order.id).status == OrderStatus.CANCELLED
    assert stock_of(order) == [10]


# --- the open unpaid orders limit -------------------------------------------------


@pytest.fixture
def shop():
    user = UserFactory()
    store = StoreFactory()
    level = StockLevelFactory(store=store, product=ProductFactory(), quantity=100)
    client = APIClient()
    client.force_authenticate(user)
    return {"user": user, "client": client, "store": store, "level": level, "address": AddressFactory(user=user)}


def place(shop):
    payload = {
        "store": shop["store"].id,
        "address": shop["address"].id,
        "items": [{"product": shop["level"].product_id, "quantity": 1}],
    }
    return shop["client"].post("/api/v1/orders/", payload, format="json")


def test_one_order_more_than_the_unpaid_limit_is_a_409_and_stores_nothing(settings, shop):
    settings.ORDER_MAX_OPEN_UNPAID = 2
    assert [place(shop).status_code for _ in range(2)] == [201, 201]

    response = place(shop)

    assert response.status_code == 409
    assert "2 unpaid orders" in response.json()["detail"]
    assert Order.objects.filter(user=shop["user"]).count() == 2
    assert StockLevel.objects.get(id=shop["level"].id).quantity == 98


def test_paying_an_order_makes_room_for_another(settings, shop):
    settings.ORDER_MAX_OPEN_UNPAID = 1
    first = place(shop).json()
    assert place(shop).status_code == 409

    order_mark_paid(order_id=first["id"])

    assert place(shop).status_code == 201


def test_expired_orders_the_task_has_not_cancelled_yet_do_not_count(settings, shop):
    settings.ORDER_MAX_OPEN_UNPAID = 1
    settings.ORDER_PAYMENT_TIMEOUT_MINUTES = 30
    first = Order.objects.get(id=place(shop).json()["id"])
    age(first, 31)

    assert place(shop).status_code == 201


def test_the_limit_is_per_customer(settings, shop):
    settings.ORDER_MAX_OPEN_UNPAID = 1
    assert place(shop).status_code == 201
    other = UserFactory()
    other_client = APIClient()
    other_client.force_authenticate(other)

    response = other_client.post(
        "/api/v1/orders/",
        {
            "store": shop["store"].id,
            "address": AddressFactory(user=other).id,
            "items": [{"product": shop["level"].product_id, "quantity": 1}],
        },
        format="json",
    )

    assert response.status_code == 201
