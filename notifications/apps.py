from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"

    def ready(self):
        from . import signals, tasks  # noqa: F401  (registers the tasks)

        signals.connect()
