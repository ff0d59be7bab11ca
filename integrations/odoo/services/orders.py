"""Paid orders become confirmed sale.orders in Odoo, once each.

All writes to the order links happen here. The task (tasks.odoo_sync_order) is a
thin wrapper taking the order id; the receiver (signals.py) calls order_sync_request.
"""

import logging

from django.db import transaction
from django.utils import timezone

from celeste.background.queue import enqueue
from orders.models import Order, OrderStatus

from ...models import OdooOrderLink, SyncStatus
from .. import tasks
from ..client import OFF_MESSAGE, OdooClient, odoo_client, odoo_enabled
from ..errors import OdooError, OdooPermanentError

logger = logging.getLogger(__name__)


def order_sync(*, order_id: int) -> str:
    """Create (once) and confirm the order's sale.order in Odoo; returns the link status.

    Idempotent: an order already synced is left alone, and Odoo is searched by
    ``client_order_ref`` = order number before anything is created, so a retry
    after a lost response, or a duplicate delivery, finds the first sale order.
    The link row is locked for the whole call, so two runs of the same order
    never race to create. A failure is recorded on the link, then re-raised
    (transient: the task retries; permanent: the inbox).
    """
    order = Order.objects.filter(id=order_id).only("paid_at").first()
    if order is None:
        logger.warning("odoo.order_gone", extra={"order_id": order_id})
        return "gone"
    if not order.has_reached(OrderStatus.PAID):  # only paid orders are sales; the message may say otherwise
        logger.warning("odoo.order_not_paid", extra={"order_id": order_id})
        return "not_paid"
    OdooOrderLink.objects.get_or_create(order_id=order_id)
    failure = None
    with transaction.atomic():
        link = OdooOrderLink.objects.select_for_update().select_related("order__user").get(order_id=order_id)
        if link.status == SyncStatus.SYNCED:
            return link.status
        if not odoo_enabled():
            link.status, link.error = SyncStatus.SKIPPED, OFF_MESSAGE
            link.save(update_fields=["status", "error", "updated_at"])
            logger.info("odoo.order_skipped", extra={"order_id": order_id})
            return link.status
        link.attempts += 1
        try:
            link.odoo_id = _sale_order_push(odoo_client(), link.order)
        except OdooError as exc:
            failure = exc
            link.status, link.error = SyncStatus.FAILED, f"{type(exc).__name__}: {exc}"
        else:
            link.status, link.error, link.synced_at = SyncStatus.SYNCED, "", timezone.now()
        link.save()
    if failure is not None:
        logger.warning(
            "odoo.order_sync_failed", extra={"order_id": order_id, "attempt": link.attempts, "error": link.error}
        )
        raise failure
    logger.info("odoo.order_synced", extra={"order_id": order_id, "odoo_id": link.odoo_id})
    return link.status


def _sale_order_push(client: OdooClient, order: Order) -> int:
    found = client.search_read("sale.order", [("client_order_ref", "=", order.number)], ["id", "state"], limit=1)
    if found:
        sale_order = found[0]
    else:
        items = list(order.items.select_related("product"))
        skus = sorted({item.product.sku for item in items})
        products = {
            row["default_code"]: row["id"]
            for row in client.search_read("product.product", [("default_code", "in", skus)], ["id", "default_code"])
        }
        missing = [sku for sku in skus if sku not in products]
        if missing:
            raise OdooPermanentError(f"No Odoo product.product with default_code {', '.join(missing)}")
        lines = [
            (
                0,
                0,
                {
                    "product_id": products[item.product.sku],
                    "name": item.product_name,
                    "product_uom_qty": item.quantity,
                    "price_unit": float(item.unit_price),  # XML-RPC has no decimal; Odoo stores floats anyway
                },
            )
            for item in items
        ]
        sale_order_id = client.create(
            "sale.order",
            {
                "partner_id": _partner_find_or_create(client, order.user),
                "client_order_ref": order.number,
                "order_line": lines,
            },
        )
        sale_order = {"id": sale_order_id, "state": "draft"}
    if sale_order["state"] in ("draft", "sent"):
        client.execute("sale.order", "action_confirm", [sale_order["id"]])
    return sale_order["id"]


def _partner_find_or_create(client: OdooClient, user) -> int:
    ref = f"celeste-user-{user.id}"
    domain = [("email", "=ilike", user.email)] if user.email else [("ref", "=", ref)]
    found = client.search("res.partner", domain, limit=1)
    if found:
        return found[0]
    return client.create(
        "res.partner",
        {
            "name": user.get_full_name() or user.username,
            "email": user.email or False,
            "ref": ref,
        },
    )


def order_sync_request(*, order_id: int) -> None:
    """The order was paid: sync it to Odoo in a job. With the integration off (no
    ODOO_URL) the job would only record the link as skipped, so that is recorded here
    instead, in the caller's transaction (one statement, where a job costs the worker a
    whole run): the link is there to requeue from the admin once Odoo is configured,
    just as one the job skipped."""
    if odoo_enabled():
        enqueue(tasks.odoo_sync_order, order_id=order_id)
        return
    OdooOrderLink.objects.bulk_create(
        [OdooOrderLink(order_id=order_id, status=SyncStatus.SKIPPED, error=OFF_MESSAGE)], ignore_conflicts=True
    )
    logger.info("odoo.order_skipped", extra={"order_id": order_id})


@transaction.atomic
def order_link_reopen(*, order_id: int) -> bool:
    """A ``failed`` order link becomes ``pending`` again; returns whether it was failed.

    For odoo_sync_order retried from the inbox. order_sync redoes any link that
    is not synced, so the retry would push without this; but until it runs the
    link should say a sync is pending, not failed (as after "sync again" in the
    admin). The last error stays until the next attempt replaces it.
    """
    return bool(
        OdooOrderLink.objects.filter(order_id=order_id, status=SyncStatus.FAILED).update(
            status=SyncStatus.PENDING, updated_at=timezone.now()
        )
    )


def order_sync_requeue(*, order_ids: list[int]) -> int:
    """Staff asked to sync these orders again (e.g. after fixing a product in Odoo)."""
    with transaction.atomic():
        OdooOrderLink.objects.filter(order_id__in=order_ids).exclude(status=SyncStatus.SYNCED).update(
            status=SyncStatus.PENDING, updated_at=timezone.now()
        )
        for order_id in order_ids:
            enqueue(tasks.odoo_sync_order, order_id=order_id)
    return len(order_ids)
