from django.apps import AppConfig
from django.conf import settings


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        from celeste.background import startup

        from . import signals, tasks

        signals.connect()
        startup.periodic_task_declare(
            name="Unpaid order expiry", task=tasks.expire_unpaid_orders, every=settings.ORDER_EXPIRY_INTERVAL_SECONDS
        )
