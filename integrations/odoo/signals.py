"""Receivers only enqueue (or, with the integration off, record an order as skipped in
its own transaction: order_sync_request): the work and every Odoo call happen in tasks."""

from django.db.models.signals import post_save

from catalog.models import StockLevel
from celeste.background.queue import enqueue
from orders.models import Order, OrderStatus

from . import services, tasks


def stock_level_saved(sender, instance: StockLevel, **kwargs):
    # Ids only: the push reads the quantity StockLevel holds when it sends.
    enqueue(tasks.odoo_inventory_changed, product_id=instance.product_id, store_id=instance.store_id)


def order_saved(sender, instance: Order, **kwargs):
    if getattr(instance, "status_transition", None) and instance.status == OrderStatus.PAID:
        services.order_sync_request(order_id=instance.id)


def connect():
    post_save.connect(stock_level_saved, sender=StockLevel, dispatch_uid="integrations.odoo.stock_level_saved")
    post_save.connect(order_saved, sender=Order, dispatch_uid="integrations.odoo.order_saved")
