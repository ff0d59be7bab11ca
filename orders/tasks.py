from celeste.background.tasks import celeste_task

from .enriched import enriched_order_refresh


# A retry from the inbox redoes the work as is: it rebuilds the order from
# Postgres and writes the cache; a failed run left nothing to restore.
@celeste_task("orders.cache_enriched_order")
def cache_enriched_order(*, order_id: int) -> bool:
    return enriched_order_refresh(order_id=order_id)
