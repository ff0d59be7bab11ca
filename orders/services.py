"""Order writes. Status changes happen here and nowhere else (API, admin and
tasks all call these), each under a row lock."""

import logging
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from catalog.errors import InsufficientStock
from catalog.models import Product, Store
from catalog.popularity import popularity_order_sync
from catalog.services import stock_release, stock_reserve

from .errors import InvalidTransition, OutOfStock, TooManyUnpaidOrders
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


def payment_deadline_cutoff(now: datetime | None = None) -> datetime:
    """Pending orders created before this are past their payment timeout."""
    return (now or timezone.now()) - timedelta(minutes=settings.ORDER_PAYMENT_TIMEOUT_MINUTES)


def _unpaid_limit_check(user, limit: int) -> None:
    # Lock the customer's row: two placements of one customer at once are serialised,
    # so neither slips past the limit. Expired orders the task has not cancelled yet
    # do not count: the customer must not wait for the task.
    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk").first()
    unpaid = Order.objects.filter(user=user, status=OrderStatus.PENDING, created_at__gte=payment_deadline_cutoff())
    if unpaid.count() >= limit:
        raise TooManyUnpaidOrders(f"You already have {limit} unpaid orders; pay or cancel one before placing another.")


@transaction.atomic
def order_place(
    *, user, store: Store, address: Address, items: list[tuple[Product, int]], max_open_unpaid: int | None = None
) -> Order:
    """Place an order and take its stock.

    Preconditions: ``address`` belongs to ``user``; items name distinct active
    products with quantity ≥ 1. Prices come from the catalog, never the client.
    The catalog takes the stock (stock_reserve: rows locked in product-id order,
    so no deadlocks between two orders, checked, decremented) in this
    transaction: of two buyers racing for the last unit exactly one wins, the
    other gets OutOfStock.

    ``max_open_unpaid`` (the API passes ORDER_MAX_OPEN_UNPAID; 0 or None: no limit):
    TooManyUnpaidOrders, and nothing stored, if the customer already has that many
    unexpired unpaid orders.
    """
    if max_open_unpaid:
        _unpaid_limit_check(user, max_open_unpaid)
    wanted = {product.id: (product, quantity) for product, quantity in items}
    try:
        stock_reserve(store_id=store.id, quantities={pid: quantity for pid, (_, quantity) in wanted.items()})
    except InsufficientStock as short:
        product = wanted[short.product_id][0]
        if not short.stocked:
            raise OutOfStock(f"{store.name} does not stock {product.name!r} ({product.sku}).") from None
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


def orders_expire_unpaid(*, now: datetime | None = None) -> int:
    """Cancel every pending order past its payment timeout, returning its stock; each in
    its own transaction through order_cancel. Returns how many it cancelled; a second
    run finds nothing left to do."""
    cutoff = payment_deadline_cutoff(now)
    overdue = Order.objects.filter(status=OrderStatus.PENDING, created_at__lt=cutoff).order_by("id")
    return sum(order_expire(order_id=order_id, cutoff=cutoff) for order_id in overdue.values_list("id", flat=True))


@transaction.atomic
def order_expire(*, order_id: int, cutoff: datetime) -> bool:
    """Cancel one order if it is still pending and older than ``cutoff``.

    The row is locked first and re-checked: an order paid meanwhile stays paid (the
    status machine would let order_cancel cancel a paid order). An order locked right
    now (a payment being recorded) is skipped; the next run sees how that ended."""
    order = (
        Order.objects.select_for_update(skip_locked=True)
        .filter(id=order_id, status=OrderStatus.PENDING, created_at__lt=cutoff)
        .first()
    )
    if order is None:
        return False
    order_cancel(order_id=order.id)
    logger.info("order.expired", extra={"order_id": order.id})
    return True


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


def order_popularity_feed(*, order_id: int) -> str:
    """Feed the order (placed: counted; cancelled: taken back) into the catalog's
    popularity counts, from the order's state now. Idempotent by order id."""
    order = Order.objects.filter(id=order_id).first()
    if order is None:
        return "missing"
    return popularity_order_sync(
        order_id=order.id,
        store_id=order.store_id,
        placed_at=order.created_at,
        product_ids=list(order.items.values_list("product_id", flat=True)),
        cancelled=order.status == OrderStatus.CANCELLED,
    )
