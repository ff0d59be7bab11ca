"""Receivers only enqueue: the work (and every Odoo call) happens in tasks."""

from django.db.models.signals import post_save

from catalog.models import StockLevel
from celeste.background.queue import enqueue
from orders.models import Order, OrderStatus

from .services import INVENTORY_CHANGED_TASK, ORDER_TASK


def stock_level_saved(sender, instance: StockLevel, **kwargs):
    # Ids only: the push reads the quantity StockLevel holds when it sends.
    enqueue(INVENTORY_CHANGED_TASK, product_id=instance.product_id, store_id=instance.store_id)


def order_saved(sender, instance: Order, **kwargs):
    if getattr(instance, "status_transition", None) and instance.status == OrderStatus.PAID:
        enqueue(ORDER_TASK, order_id=instance.id)


def connect():
    post_save.connect(stock_level_saved, sender=StockLevel, dispatch_uid="integrations.odoo.stock_level_saved")
    post_save.connect(order_saved, sender=Order, dispatch_uid="integrations.odoo.order_saved")
