from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        from . import signals, tasks  # noqa: F401  (registers the tasks)

        signals.connect()
