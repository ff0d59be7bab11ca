from celeste.background.backpressure import Overflow
from celeste.background.tasks import celeste_task

from . import services
from .enriched import enriched_order_refresh


# A retry from the inbox redoes the work as is: it rebuilds the order from
# Postgres and writes the cache; a failed run left nothing to restore.
# Past the queue's depth limit the cache is filled inline (one order, cheap).
# One per paid order: the cache entry is the record, so no result row is written.
@celeste_task("orders.cache_enriched_order", overflow=Overflow.SYNC, ignore_result=True)
def cache_enriched_order(*, order_id: int) -> bool:
    return enriched_order_refresh(order_id=order_id)


# Periodic (declared in apps.py). Re-runnable as is: it cancels whatever is overdue when
# it runs, each order after locking and re-checking it, so a second run changes nothing.
@celeste_task("orders.expire_unpaid_orders")
def expire_unpaid_orders() -> int:
    """Cancels pending orders past their payment timeout, returning their stock."""
    return services.orders_expire_unpaid()


# Re-runnable and order-independent: the catalog keeps what each order added
# (PopularityOrder, keyed by order id) and only applies the difference to the order's state now.
@celeste_task("orders.feed_popularity")
def feed_popularity(*, order_id: int) -> str:
    return services.order_popularity_feed(order_id=order_id)
