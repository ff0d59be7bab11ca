from django.db import transaction
from django.db.models.signals import post_delete, post_save

from celeste.background.queue import enqueue

from . import tasks
from .cache import enriched_order_forget
from .models import Address, Order, OrderItem, OrderStatus


def order_saved(sender, instance: Order, **kwargs):
    if instance.status_transition and instance.status == OrderStatus.PAID:
        enqueue(tasks.cache_enriched_order, order_id=instance.id)


def order_popularity(sender, instance: Order, **kwargs):
    # Placing (the new order's first save) and cancelling change what the order adds to popularity.
    if instance.status_transition and instance.status in (OrderStatus.PENDING, OrderStatus.CANCELLED):
        enqueue(tasks.feed_popularity, order_id=instance.id)


# Cache invalidation is the one thing receivers do besides enqueueing: it must
# happen at commit, not later, so no client reads a copy older than the change.
# (Reads also check the order's version, so a missed invalidation is harmless.)
def _forget_on_commit(*order_ids):
    transaction.on_commit(lambda: enriched_order_forget(*order_ids))


def order_changed(sender, instance: Order, **kwargs):
    _forget_on_commit(instance.id)


def order_item_changed(sender, instance: OrderItem, **kwargs):
    _forget_on_commit(instance.order_id)


def address_changed(sender, instance: Address, **kwargs):
    order_ids = list(instance.orders.values_list("id", flat=True)) if instance.pk else []
    if order_ids:
        _forget_on_commit(*order_ids)


def connect():
    post_save.connect(order_saved, sender=Order, dispatch_uid="orders.order_saved")
    post_save.connect(order_popularity, sender=Order, dispatch_uid="orders.order_popularity")
    for signal, name in ((post_save, "saved"), (post_delete, "deleted")):
        signal.connect(order_changed, sender=Order, dispatch_uid=f"orders.cache.order_{name}")
        signal.connect(order_item_changed, sender=OrderItem, dispatch_uid=f"orders.cache.item_{name}")
    post_save.connect(address_changed, sender=Address, dispatch_uid="orders.cache.address_saved")
