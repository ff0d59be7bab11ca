from celery import shared_task
from django.conf import settings

from celeste.background.tasks import CelesteTask

from . import services


@shared_task(name="catalog.embed_products", base=CelesteTask, coalesce_seconds=60)
def embed_products() -> int:
    """Embed whatever is pending when it runs, batch by batch. A burst of saves
    is coalesced into one queued message (see CelesteTask.coalesce_seconds)."""
    return services.embeddings_embed_pending()


@shared_task(name="catalog.sweep_stale_embeddings", base=CelesteTask)
def sweep_stale_embeddings() -> int:
    return services.embedding_sweep(stale_after_seconds=settings.EMBEDDING_STALE_AFTER_SECONDS)
