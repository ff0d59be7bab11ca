from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "reports"

    def ready(self):
        from celeste.background import startup

        from . import tasks

        startup.periodic_task_declare(name="Report retention", task=tasks.purge_reports, every=3600)
