from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"

    def ready(self):
        from celeste.background.signals import ON_WORKER_START

        from .odoo import signals, tasks  # noqa: F401  (registers the tasks)
        from .odoo.services import inventory_recover

        signals.connect()
        if inventory_recover not in ON_WORKER_START:
            ON_WORKER_START.append(inventory_recover)
