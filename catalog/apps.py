from django.apps import AppConfig
from django.conf import settings


class CatalogConfig(AppConfig):
    name = "catalog"

    def ready(self):
        from celeste import metrics as prometheus
        from celeste.background import startup

        from . import embeddings, metrics, services, signals, tasks

        signals.connect()
        startup.periodic_task_declare(
            name="Embedding sweeper", task=tasks.sweep_stale_embeddings, every=settings.EMBEDDING_SWEEP_INTERVAL_SECONDS
        )
        startup.periodic_task_declare(
            name="Popularity aggregation",
            task=tasks.aggregate_popularity,
            every=settings.POPULARITY_AGGREGATE_INTERVAL_SECONDS,
        )
        # Raw interactions older than POPULARITY_RETENTION_DAYS go; hourly is plenty for a day-granular limit.
        startup.periodic_task_declare(name="Popularity retention sweep", task=tasks.sweep_popularity, every=3600)
        startup.periodic_task_declare(
            name="Image file sweep", task=tasks.sweep_image_files, every=settings.IMAGE_ORPHAN_SWEEP_INTERVAL_SECONDS
        )
        startup.worker_start_declare(services.embeddings_recover)
        startup.web_start_declare(embeddings.warm_up_in_background)
        prometheus.collector_register(metrics.collect)
