"""Reconciliation: where Odoo's on-hand quantities differ from Celeste's stock.
Reads only; the fix is a push of Celeste's quantities (inventory.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from catalog.models import StockLevel, Store

from ..client import many2one_id, odoo_client

logger = logging.getLogger(__name__)


@dataclass
class Drift:
    store_id: int
    store_code: str
    sku: str
    product_id: int | None  # None: the product exists in Odoo only
    celeste: int
    odoo: float | None  # None: no quant in Odoo

    def line(self) -> str:
        odoo = "none" if self.odoo is None else f"{self.odoo:g}"
        return f"{self.store_code:<20} {self.sku:<24} celeste={self.celeste:<8} odoo={odoo}"


def inventory_reconcile(*, store_ids: list[int] | None = None, progress=None, page_size: int = 1000) -> list[Drift]:
    """Read Odoo's on-hand quantities of every mapped store and list every pair
    that differs from Celeste's StockLevel. Changes nothing."""
    client = odoo_client()
    stores = Store.objects.filter(odoo_location_id__isnull=False).order_by("id")
    if store_ids is not None:
        stores = stores.filter(id__in=store_ids)
    drifts: list[Drift] = []
    for store in stores:
        ours = {
            sku: (product_id, quantity)
            for sku, product_id, quantity in StockLevel.objects.filter(store=store).values_list(
                "product__sku", "product_id", "quantity"
            )
        }
        quants: dict[int, float] = {}
        offset = 0
        while True:
            page = client.search_read(
                "stock.quant",
                [("location_id", "=", store.odoo_location_id)],
                ["product_id", "quantity"],
                offset=offset,
                limit=page_size,
                order="id",
            )
            for row in page:
                pid = many2one_id(row["product_id"])
                quants[pid] = quants.get(pid, 0.0) + row["quantity"]
            if len(page) < page_size:
                break
            offset += page_size
        codes = {}
        if quants:
            codes = {
                row["id"]: row["default_code"]
                for row in client.execute("product.product", "read", sorted(quants), fields=["default_code"])
            }
        theirs = {codes.get(pid) or f"odoo-product-{pid}": qty for pid, qty in quants.items()}
        for sku in sorted(set(ours) | set(theirs)):
            product_id, quantity = ours.get(sku, (None, 0))
            odoo = theirs.get(sku)
            if (odoo if odoo is not None else 0) != quantity:
                drifts.append(Drift(store.id, store.code, sku, product_id, quantity, odoo))
        if progress:
            progress(1)
    logger.info("odoo.inventory_reconciled", extra={"drifts": len(drifts)})
    return drifts
