from django.db.models.signals import post_save

from celeste.background.queue import enqueue

from . import tasks
from .models import Product


def product_saved(sender, instance: Product, created: bool, **kwargs):
    if instance.text_changed:
        enqueue(tasks.embed_products)


def connect():
    post_save.connect(product_saved, sender=Product, dispatch_uid="catalog.product_saved")
