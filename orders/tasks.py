from celeste.background.backpressure import Overflow
from celeste.background.tasks import celeste_task

from .enriched import enriched_order_refresh


# A retry from the inbox redoes the work as is: it rebuilds the order from
# Postgres and writes the cache; a failed run left nothing to restore.
# Past the queue's depth limit the cache is filled inline (one order, cheap).
@celeste_task("orders.cache_enriched_order", overflow=Overflow.SYNC)
def cache_enriched_order(*, order_id: int) -> bool:
    return enriched_order_refresh(order_id=order_id)
