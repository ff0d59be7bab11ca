"""Placing orders, the status machine and stock."""

import threading
from decimal import Decimal

import pytest
from django.db import connection

from catalog.models import StockLevel
from catalog.services import stock_level_set
from orders import services
from orders.errors import InvalidTransition, OutOfStock
from orders.models import Order

from ..factories import AddressFactory, ProductFactory, StoreFactory, UserFactory, place_order

pytestmark = pytest.mark.django_db

ALLOWED = {
    ("pending", "mark_paid"),
    ("pending", "cancel"),
    ("paid", "confirm"),
    ("paid", "cancel"),
    ("confirmed", "ship"),
    ("confirmed", "cancel"),
    ("shipped", "deliver"),
}
REACH = {  # how to walk a fresh order to each status
    "pending": [],
    "paid": ["mark_paid"],
    "confirmed": ["mark_paid", "confirm"],
    "shipped": ["mark_paid", "confirm", "ship"],
    "delivered": ["mark_paid", "confirm", "ship", "deliver"],
    "cancelled": ["cancel"],
}
TARGET = {"mark_paid": "paid", "confirm": "confirmed", "ship": "shipped", "deliver": "delivered", "cancel": "cancelled"}


def order_in(status: str) -> Order:
    order = place_order()
    for step in REACH[status]:
        services.TRANSITION_SERVICES[step](order_id=order.id)
    return Order.objects.get(id=order.id)


@pytest.mark.parametrize("status", list(REACH))
@pytest.mark.parametrize("step", list(TARGET))
def test_status_machine(status, step):
    order = order_in(status)

    if (status, step) in ALLOWED:
        changed = services.TRANSITION_SERVICES[step](order_id=order.id)
        assert changed.status == TARGET[step]
        assert getattr(changed, f"{TARGET[step]}_at") is not None
    else:
        with pytest.raises(InvalidTransition, match=f"is {status}"):
            services.TRANSITION_SERVICES[step](order_id=order.id)
        assert Order.objects.get(id=order.id).status == status


def test_placing_snapshots_names_and_prices_and_computes_totals():
    order = place_order(lines=((Decimal("2.50"), 2), (Decimal("10.00"), 1)))

    assert order.total == order.subtotal == Decimal("15.00")
    assert order.number.startswith("CEL-")
    item = order.items.order_by("unit_price").first()
    product = item.product
    original_name = product.name
    product.name, product.price = "Renamed", Decimal("99.00")
    product.save()
    item.refresh_from_db()
    assert (item.product_name, item.sku) == (original_name, product.sku)
    assert (item.unit_price, item.quantity, item.line_total) == (Decimal("2.50"), 2, Decimal("5.00"))


def test_placing_takes_stock_and_cancelling_returns_it():
    order = place_order(lines=((Decimal("1.00"), 3),), stock=5)
    level = StockLevel.objects.get(store=order.store)
    assert level.quantity == 2

    services.order_cancel(order_id=order.id)

    level.refresh_from_db()
    assert level.quantity == 5


def test_not_enough_stock_is_refused_and_changes_nothing():
    user, store = UserFactory(), StoreFactory()
    plenty, scarce = ProductFactory(), ProductFactory(name="Rare Tea")
    stock_level_set(product=plenty, store=store, quantity=10)
    stock_level_set(product=scarce, store=store, quantity=1)

    with pytest.raises(OutOfStock, match="Only 1 of 'Rare Tea'"):
        services.order_place(
            user=user, store=store, address=AddressFactory(user=user), items=[(plenty, 2), (scarce, 2)]
        )

    assert not Order.objects.exists()
    assert StockLevel.objects.get(product=plenty).quantity == 10


def test_a_product_the_store_does_not_stock_is_out_of_stock():
    user = UserFactory()
    with pytest.raises(OutOfStock, match="does not stock"):
        services.order_place(
            user=user, store=StoreFactory(), address=AddressFactory(user=user), items=[(ProductFactory(), 1)]
        )


@pytest.mark.django_db(transaction=True)
def test_two_customers_racing_for_the_last_unit_exactly_one_wins():
    store, product = StoreFactory(), ProductFactory()
    stock_level_set(product=product, store=store, quantity=1)
    buyers = [UserFactory(), UserFactory()]
    addresses = [AddressFactory(user=buyer) for buyer in buyers]
    barrier = threading.Barrier(2)
    outcomes = []

    def buy(index):
        try:
            barrier.wait()
            services.order_place(user=buyers[index], store=store, address=addresses[index], items=[(product, 1)])
            outcomes.append("ok")
        except OutOfStock:
            outcomes.append("out of stock")
        finally:
            connection.close()

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["ok", "out of stock"]
    assert StockLevel.objects.get(product=product).quantity == 0
    assert Order.objects.count() == 1
