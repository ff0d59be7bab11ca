from celery import shared_task
from django.conf import settings

from celeste.background.tasks import CelesteTask

from . import services


@shared_task(name="catalog.embed_products", base=CelesteTask)
def embed_products() -> int:
    """Embed one batch of stale products (whichever are stale when it runs)."""
    return services.embeddings_embed_stale()


@shared_task(name="catalog.sweep_stale_embeddings", base=CelesteTask)
def sweep_stale_embeddings() -> int:
    return services.embedding_sweep(stale_after_seconds=settings.EMBEDDING_STALE_AFTER_SECONDS)
