from django.db.models.signals import post_save

from celeste.background.queue import enqueue
from orders.models import Order

from . import tasks
from .services import EVENT_FOR_STATUS


def order_status_changed(sender, instance: Order, **kwargs):
    if instance.status_transition and instance.status in EVENT_FOR_STATUS:
        enqueue(tasks.dispatch_order_event, order_id=instance.id, status=instance.status)


def connect():
    post_save.connect(order_status_changed, sender=Order, dispatch_uid="notifications.order_status_changed")
