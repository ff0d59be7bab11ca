from celery import shared_task
from django.conf import settings

from celeste.background.tasks import CelesteTask

from . import services


# A retry from the inbox redoes the work as is: a failed batch is marked failed,
# and the claim takes every embedding that is not ready, failed ones included.
@shared_task(name="catalog.embed_products", base=CelesteTask, coalesce_seconds=60)
def embed_products() -> int:
    """Embed whatever is pending when it runs, batch by batch. A burst of saves
    is coalesced into one queued message (see CelesteTask.coalesce_seconds)."""
    return services.embeddings_embed_pending()


# Re-runnable as is: it reconciles and enqueues from the current state.
@shared_task(name="catalog.sweep_stale_embeddings", base=CelesteTask)
def sweep_stale_embeddings() -> int:
    return services.embedding_sweep(stale_after_seconds=settings.EMBEDDING_STALE_AFTER_SECONDS)
