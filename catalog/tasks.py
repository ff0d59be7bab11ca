from django.conf import settings

from celeste.background.backpressure import Overflow
from celeste.background.errors import TransientError
from celeste.background.ledger import worker_id
from celeste.background.tasks import celeste_task

# services imports this module (to enqueue): read it only when a task runs.
from . import images, popularity, services


# A retry from the inbox redoes the work as is: a failed batch is marked failed,
# and the claim takes every embedding that is not ready, failed ones included.
# Past the slow queue's depth limit a new job is dropped: the sweeper embeds whatever is stale.
# Switched off, products saved meanwhile stay stale: switching back to background
# enqueues them at once instead of leaving them to the sweeper's next round.
@celeste_task(
    "catalog.embed_products",
    queue="slow",
    coalesce_seconds=60,
    overflow=Overflow.DROP,
    when_off="Redone: products saved while off keep stale embeddings, embedded when the switch returns to background.",
    on_switch_back=lambda: services.embeddings_recover(),
)
def embed_products() -> int:
    """Embed whatever is pending when it runs, batch by batch. A burst of saves
    is coalesced into one queued message (see CelesteTask.coalesce_seconds)."""
    # Run inline (the sync switch: a web request, after its commit) it embeds that request's
    # products in one lane, on the request's connection: lanes are for a worker's backlog,
    # and their connections would cost a request more than they save.
    return services.embeddings_embed_pending(lanes=0 if worker_id() else 1)


# Re-runnable as is: it reconciles and enqueues from the current state.
@celeste_task("catalog.sweep_stale_embeddings")
def sweep_stale_embeddings() -> int:
    """Finds products whose embedding is missing or stale for too long and enqueues the embed task."""
    return services.embedding_sweep(stale_after_seconds=settings.EMBEDDING_STALE_AFTER_SECONDS)


# Periodic (declared in apps.py). Re-runnable as is: entries at or below the committed
# stream position are acknowledged without being counted, so a second run, or a run after
# a worker died between its commit and its XACK, counts nothing twice.
@celeste_task("catalog.aggregate_popularity")
def aggregate_popularity() -> dict:
    """Counts the tracked product views and orders into popularity scores and trending lists."""
    return popularity.popularity_aggregate()


# Periodic. Re-runnable: deletes what is older than the retention when it runs.
@celeste_task("catalog.sweep_popularity")
def sweep_popularity() -> dict:
    """Drops tracked interactions and counts older than the retention (POPULARITY_RETENTION_DAYS)."""
    return popularity.popularity_sweep()


# Queue "images": rendering is slow and must neither wait behind embeddings nor hold them up.
# A refused content or URL fails the image (no retry, no inbox); an unreachable URL is
# retried, and when retries run out the image fails and the job lands in the inbox, whose
# Retry makes the image pending again. Re-runnable: same original, same names and rows.
@celeste_task(
    "catalog.process_product_image",
    queue="images",
    bind=True,
    on_inbox_retry=lambda **job: images.product_image_reopen(**job),
)
def process_product_image(self, *, image_id: int, variant: str = "", force: bool = False) -> str:
    try:
        return images.image_process(image_id=image_id, names=[variant] if variant else None, force=force)
    except images.ImageFetchFailed as exc:
        if self.request.retries >= self.max_retries:
            images.image_mark_failed(image_id=image_id, reason=str(exc))
        raise TransientError(str(exc)) from exc


# Periodic. Re-runnable: deletes only what is unreferenced and older than the grace period when it runs.
@celeste_task("catalog.sweep_image_files", queue="images")
def sweep_image_files() -> int:
    return len(images.images_sweep_orphans())
