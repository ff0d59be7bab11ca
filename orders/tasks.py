from celeste.background.backpressure import Overflow
from celeste.background.tasks import celeste_task

from . import services
from .enriched import enriched_order_refresh


# A retry from the inbox redoes the work as is: it rebuilds the order from
# Postgres and writes the cache; a failed run left nothing to restore.
# Past the queue's depth limit the cache is filled inline (one order, cheap).
@celeste_task("orders.cache_enriched_order", overflow=Overflow.SYNC)
def cache_enriched_order(*, order_id: int) -> bool:
    return enriched_order_refresh(order_id=order_id)


# Periodic (declared in apps.py). Re-runnable as is: it cancels whatever is overdue when
# it runs, each order after locking and re-checking it, so a second run changes nothing.
@celeste_task("orders.expire_unpaid_orders")
def expire_unpaid_orders() -> int:
    return services.orders_expire_unpaid()
