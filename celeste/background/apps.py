from django.apps import AppConfig
from django.db.models.signals import post_migrate


class BackgroundConfig(AppConfig):
    name = "celeste.background"
    label = "background"
    verbose_name = "Background tasks"

    def ready(self):
        from . import signals, schedules

        # post_migrate also runs after a test flush, so schedules survive it.
        post_migrate.connect(schedules.on_post_migrate, dispatch_uid="background.ensure_schedules")
        signals.connect_worker_signals()
