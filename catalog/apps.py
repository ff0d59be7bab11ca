from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"

    def ready(self):
        from celeste.background.signals import ON_WORKER_START

        from . import signals, tasks
        from .services import embeddings_recover

        signals.connect()
        if embeddings_recover not in ON_WORKER_START:
            ON_WORKER_START.append(embeddings_recover)
