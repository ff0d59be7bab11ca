"""Odoo sync, by concern: paid orders become confirmed sale.orders (orders.py);
stock changes are coalesced per (product, store) pair and pushed as inventory
adjustments (inventory.py); Odoo's quantities are compared with Celeste's
(reconcile.py). Callers use ``services.<name>``; these are the public names.
"""

from ..client import OFF_MESSAGE
from .inventory import (
    PUSH_DEFERRED_KEY,
    PUSH_SCHEDULED_KEY,
    PushResult,
    inventory_mark_changed,
    inventory_mark_dirty,
    inventory_pair_sync,
    inventory_push,
    inventory_push_all,
    inventory_push_schedule,
    inventory_recover,
)
from .orders import order_link_reopen, order_sync, order_sync_request, order_sync_requeue
from .reconcile import Drift, inventory_reconcile

__all__ = [
    "OFF_MESSAGE",
    "PUSH_DEFERRED_KEY",
    "PUSH_SCHEDULED_KEY",
    "Drift",
    "PushResult",
    "inventory_mark_changed",
    "inventory_mark_dirty",
    "inventory_pair_sync",
    "inventory_push",
    "inventory_push_all",
    "inventory_push_schedule",
    "inventory_recover",
    "inventory_reconcile",
    "order_link_reopen",
    "order_sync",
    "order_sync_request",
    "order_sync_requeue",
]
