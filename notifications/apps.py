from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self):
        from celeste import metrics as prometheus
        from celeste.background import startup

        from . import metrics, signals, tasks

        signals.connect()
        startup.periodic_task_declare(name="Campaign recovery", task=tasks.recover_campaigns, every=300)
        startup.periodic_task_declare(name="Stream event retention", task=tasks.sweep_stream_events, every=3600)
        prometheus.collector_register(metrics.collect)
