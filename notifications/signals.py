from django.db.models.signals import post_save

from celeste.background.queue import enqueue
from orders.models import Order

from . import tasks
from .services import EVENT_FOR_STATUS
from .stream import stream_order_status_append


def order_status_changed(sender, instance: Order, **kwargs):
    if instance.status_transition and instance.status in EVENT_FOR_STATUS:
        enqueue(tasks.dispatch_order_event, order_id=instance.id, status=instance.status)


def order_status_streamed(sender, instance: Order, **kwargs):
    # Like enqueue(), a row in the status change's own transaction (its record for
    # replay), published to the user's live streams after commit: no queue hop, so
    # the change reaches an open order page at once.
    if instance.status_transition:
        stream_order_status_append(instance, previous=instance.status_transition[0])


def connect():
    post_save.connect(order_status_changed, sender=Order, dispatch_uid="notifications.order_status_changed")
    post_save.connect(order_status_streamed, sender=Order, dispatch_uid="notifications.order_status_streamed")
