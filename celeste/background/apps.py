from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate


class BackgroundConfig(AppConfig):
    name = "celeste.background"
    label = "background"
    verbose_name = "Background tasks"

    def ready(self):
        from celeste import metrics as prometheus

        from . import metrics, schedules, signals, signing, startup, tasks

        startup.periodic_task_declare(
            name="Outbox relay", task=tasks.relay_outbox, every=settings.OUTBOX_RELAY_INTERVAL_SECONDS
        )
        startup.periodic_task_declare(
            name="Task breakers", task=tasks.evaluate_breakers, every=settings.BREAKER_EVALUATE_SECONDS
        )
        startup.periodic_task_declare(name="Task console samples", task=tasks.sample_tasks, every=60)
        # post_migrate also runs after a test flush, so schedules survive it.
        post_migrate.connect(schedules.on_post_migrate, dispatch_uid="background.ensure_schedules")
        signals.connect_worker_signals()
        # Every process that publishes (web, worker, beat, commands) signs what it sends.
        signing.connect_signals()
        if prometheus.enabled():
            metrics.connect_signals()
            prometheus.collector_register(metrics.collect)
