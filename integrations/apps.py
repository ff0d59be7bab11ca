from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"

    def ready(self):
        from celeste import metrics
        from celeste.background import startup

        from .odoo import metrics as odoo_metrics
        from .odoo import services, signals, tasks  # noqa: F401  (registers the tasks)

        signals.connect()
        startup.worker_start_declare(services.inventory_recover)
        metrics.collector_register(odoo_metrics.collect)
