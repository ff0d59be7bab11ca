"""Thin tasks: ids in, a service call, a JSON result out. Names are stable (the
outbox, the inbox and task switches store them).

services imports this module (to enqueue), so it reads services only when a
task runs; that is why the inbox-retry hook is a small lambda.
"""

from django.conf import settings

from celeste.background.tasks import celeste_task

from . import services

# ODOO_SYNC_MAX_ATTEMPTS counts runs, the first included; Celery counts retries.
SYNC_RETRIES = max(settings.ODOO_SYNC_MAX_ATTEMPTS - 1, 0)


# A retry from the inbox finds the link failed; order_sync redoes anything not
# synced (and finds a sale.order created by a lost response), the hook only
# shows the link pending until the retry runs.
@celeste_task(
    "integrations.odoo_sync_order",
    max_retries=SYNC_RETRIES,
    max_concurrency=settings.ODOO_MAX_CONCURRENT_SYNCS,
    on_inbox_retry=lambda **job: services.order_link_reopen(**job),
)
def odoo_sync_order(*, order_id: int) -> str:
    return services.order_sync(order_id=order_id)


# One per stock change, and nobody reads its result: skip the result-backend write.
# Gathered at publish time: while one change job waits in the queue, the next ones are
# not sent but left in the ledger, and that job takes them all when it runs (marking
# their pairs in one statement; the push reads the quantities when it runs), so a
# burst of any size costs about one task run, not one per change or per pair.
# A retry from the inbox redoes the work as is: the upsert marks the pair dirty again.
@celeste_task("integrations.odoo_inventory_changed", ignore_result=True, coalesce_seconds=60, coalesce_gathers=True)
def odoo_inventory_changed(*, product_id: int, store_id: int) -> bool:
    """Mark the pair dirty and make sure a push is queued (no Odoo call here)."""
    return services.inventory_mark_changed(product_id=product_id, store_id=store_id)


# A retry from the inbox redoes the work as is: a failed push leaves its pairs
# dirty (only a success cleans a pair), and a push sends whatever is dirty.
@celeste_task(
    "integrations.odoo_push_inventory", max_retries=SYNC_RETRIES, max_concurrency=settings.ODOO_MAX_CONCURRENT_SYNCS
)
def odoo_push_inventory() -> dict:
    """Push one batch of dirty pairs whose turn has come (the debounce) with the quantities they have now."""
    return services.inventory_push(debounced=True).as_dict()


# A retry from the inbox redoes the work as is: the task marks its pair dirty
# before pushing it, whatever a failure left (a parked pair is clean and failed).
@celeste_task(
    "integrations.odoo_sync_inventory_pair",
    max_retries=SYNC_RETRIES,
    max_concurrency=settings.ODOO_MAX_CONCURRENT_SYNCS,
)
def odoo_sync_inventory_pair(*, product_id: int, store_id: int) -> dict:
    """Re-send one pair's current quantity (what the inbox's Retry runs)."""
    return services.inventory_pair_sync(product_id=product_id, store_id=store_id)
