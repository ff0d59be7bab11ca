"""Order writes. Status changes happen here and nowhere else (API, admin and
tasks all call these), each under a row lock."""

import logging
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from catalog.errors import InsufficientStock
from catalog.models import Product, Store
from catalog.services import stock_release, stock_reserve

from .errors import InvalidTransition, OutOfStock
from .models import STATUS_TIMESTAMPS, TRANSITIONS, Address, Order, OrderItem, OrderStatus

logger = logging.getLogger(__name__)

ADDRESS_FIELDS = ("label", "recipient", "line1", "line2", "city", "postal_code", "country", "phone")


# --- addresses ------------------------------------------------------------------


@transaction.atomic
def address_create(*, user, **fields) -> Address:
    return Address.objects.create(user=user, **fields)


@transaction.atomic
def address_update(*, address: Address, **fields) -> Address:
    for field, value in fields.items():
        if field not in ADDRESS_FIELDS:
            raise ValueError(f"Unknown address field {field!r}")
        setattr(address, field, value)
    address.save()
    return address


# --- placing --------------------------------------------------------------------


def _next_order_number() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('orders_order_number_seq')")
        (value,) = cursor.fetchone()
    return f"CEL-{value:08d}"


@transaction.atomic
def order_place(*, user, store: Store, address: Address, items: list[tuple[Product, int]]) -> Order:
    """Place an order and take its stock.

    Preconditions: ``address`` belongs to ``user``; items name distinct active
    products with quantity ≥ 1. Prices come from the catalog, never the client.
    The catalog takes the stock (stock_reserve: rows locked in product-id order,
    so no deadlocks between two orders, checked, decremented) in this
    transaction: of two buyers racing for the last unit exactly one wins, the
    other gets OutOfStock.
    """
    wanted = {product.id: (product, quantity) for product, quantity in items}
    try:
        stock_reserve(store_id=store.id, quantities={pid: quantity for pid, (_, quantity) in wanted.items()})
    except InsufficientStock as short:
        product = wanted[short.product_id][0]
        raise OutOfStock(f"Only {short.available} of {product.name!r} ({product.sku}) left in {store.name}.") from None
    currencies = {product.currency for product, _ in wanted.values()}
    if len(currencies) != 1:
        raise ValueError("All items of an order must share one currency.")  # rolls the reservation back

    lines = [(product, quantity, product.price * quantity) for _, (product, quantity) in sorted(wanted.items())]
    subtotal = sum((line_total for *_, line_total in lines), Decimal("0.00"))
    order = Order.objects.create(
        number=_next_order_number(),
        user=user,
        store=store,
        address=address,
        currency=currencies.pop(),
        subtotal=subtotal,
        total=subtotal,
    )
    OrderItem.objects.bulk_create(
        OrderItem(
            order=order,
            product=product,
            product_name=product.name,
            sku=product.sku,
            unit_price=product.price,
            quantity=quantity,
            line_total=line_total,
        )
        for product, quantity, line_total in lines
    )
    logger.info("order.placed", extra={"order_id": order.id, "store_id": store.id})
    return order


# --- status machine -------------------------------------------------------------


def _transition(order_id: int, to: str) -> Order:
    order = Order.objects.select_for_update().get(id=order_id)
    if to not in TRANSITIONS[order.status]:
        raise InvalidTransition(f"Order {order.number} is {order.status}; it cannot become {to}.")
    order.status = to
    setattr(order, STATUS_TIMESTAMPS[to], timezone.now())
    order.save()
    logger.info("order.status_changed", extra={"order_id": order.id, "status": to})
    return order


@transaction.atomic
def order_mark_paid(*, order_id: int) -> Order:
    order = _transition(order_id, OrderStatus.PAID)
    if order.payment_error:
        order.payment_error = ""
        order.save(update_fields=["payment_error", "updated_at"])
    return order


@transaction.atomic
def order_confirm(*, order_id: int) -> Order:
    return _transition(order_id, OrderStatus.CONFIRMED)


@transaction.atomic
def order_ship(*, order_id: int) -> Order:
    return _transition(order_id, OrderStatus.SHIPPED)


@transaction.atomic
def order_deliver(*, order_id: int) -> Order:
    return _transition(order_id, OrderStatus.DELIVERED)


@transaction.atomic
def order_cancel(*, order_id: int) -> Order:
    """Cancel and return the items' stock to the order's store."""
    order = _transition(order_id, OrderStatus.CANCELLED)
    stock_release(store_id=order.store_id, quantities={item.product_id: item.quantity for item in order.items.all()})
    return order


TRANSITION_SERVICES = {
    "mark_paid": order_mark_paid,
    "confirm": order_confirm,
    "ship": order_ship,
    "deliver": order_deliver,
    "cancel": order_cancel,
}


@transaction.atomic
def order_record_payment_error(*, order: Order, error: str) -> Order:
    """Keep why a payment was refused on the order, for staff. Precondition: ``order`` is locked."""
    order.payment_error = error
    order.save(update_fields=["payment_error", "updated_at"])
    return order
