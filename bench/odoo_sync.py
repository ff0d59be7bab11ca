"""Odoo inventory sync: 10,000 stock changes over 500 (product, store) pairs, coalesced vs one by one.

Coalesced (Celeste): a real Celery worker (concurrency 2) and the local fake Odoo
(XML-RPC over loopback, no injected latency or failures). This process makes the
changes through ``stock_level_set``, each in its own transaction as the API or an
order would: the first N create the pairs' stock rows, the rest set random
quantities on random pairs. Every change enqueues
``integrations.odoo_inventory_changed``, which marks its pair dirty; pushes take
up to ODOO_INVENTORY_BATCH_SIZE dirty pairs and send the quantity StockLevel
holds at send time. Timed from the first change until Odoo's on-hand quantities
equal Celeste's for every pair (and no pair is dirty). Two runs:
- burst: the worker is paused (SIGSTOP) while the changes are made, as when
  changes outpace the worker or it was down; then resumed. This is the case the
  "at most one write per pair" target is about.
- stream: the worker runs during the changes and keeps up with them, so most
  pushes find a pair changed once: coalescing saves little on writes here (it
  cannot: a fresh Odoo needs a write per change when changes are spread out).

One by one (baseline): the same change sequence against a fresh fake Odoo, each
change sent at once, in this process (no queue overhead, which favours the
baseline): find the product by default_code, find the quant, write
``inventory_quantity`` in inventory mode, ``action_apply_inventory`` = 4 calls.
Ratios compare the two, measured in this run.

Standalone: ``python -m bench.odoo_sync [--quick]`` (same var/bench setup as ``python -m bench``).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

STORES, PRODUCTS, CHANGES = 10, 50, 10_000
QUICK = (5, 20, 1_000)
BENCH = "odoo_sync"


def _catalog(stores: int, products: int):
    from bench import reset_catalog, set_switch
    from catalog import services, tasks

    reset_catalog()
    set_switch(tasks.embed_products.name, "off")  # embeddings are not what this measures
    from catalog.models import Store

    Store.objects.filter(code__startswith="odoo-bench-").delete()
    store_rows = [services.store_create(code=f"odoo-bench-{i}", name=f"Odoo bench {i}") for i in range(stores)]
    product_rows = [
        services.product_create(sku=f"ODOO-{i:05d}", name=f"Bench product {i}", price="1.00") for i in range(products)
    ]
    return store_rows, product_rows


def _map(server, stores, products) -> None:
    from catalog.services import store_update

    for product in products:
        server.state.add_product(product.sku, product.name)
    for store in stores:
        store_update(store=store, odoo_location_id=server.state.add_location(store.code))


def _changes(pairs, count: int, seed: int = 42) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    sequence = [(i, rng.randint(0, 500)) for i in range(len(pairs))]
    sequence += [(rng.randrange(len(pairs)), rng.randint(0, 500)) for _ in range(count - len(pairs))]
    return sequence


def _matches(server, stores) -> bool:
    from catalog.models import StockLevel
    from integrations.models import InventorySyncState

    if InventorySyncState.objects.filter(dirty=True).exists():
        return False
    ours: dict[int, dict[str, float]] = {s.id: {} for s in stores}
    for store_id, sku, quantity in StockLevel.objects.filter(store__in=stores).values_list(
        "store_id", "product__sku", "quantity"
    ):
        ours[store_id][sku] = float(quantity)
    return all(server.state.on_hand(s.odoo_location_id) == ours[s.id] for s in stores)


def _coalesced(stores, products, count: int, *, paused: bool) -> dict:
    from django.conf import settings

    from bench import BASE_DIR
    from catalog.services import stock_level_set
    from celeste.devserver.processes import celery_worker
    from integrations.odoo.testing.server import FakeOdooServer

    server = FakeOdooServer().start()
    try:
        _map(server, stores, products)
        pairs = [(p, s) for s in stores for p in products]
        sequence = _changes(pairs, count)
        env = {
            **server.env(),
            "TASK_SWITCH_CACHE_SECONDS": "0",
            "ODOO_INVENTORY_BATCH_SIZE": str(settings.ODOO_INVENTORY_BATCH_SIZE),
        }
        with celery_worker(env=env, concurrency=2, log_dir=BASE_DIR / "var" / "bench" / "logs") as worker:
            if paused:  # the burst lands while the worker is busy elsewhere / down
                os.killpg(worker.proc.pid, signal.SIGSTOP)
            started = time.monotonic()
            for index, quantity in sequence:
                product, store = pairs[index]
                stock_level_set(product=product, store=store, quantity=quantity)
            changes_done = time.monotonic()
            if paused:
                os.killpg(worker.proc.pid, signal.SIGCONT)
            deadline = changes_done + 600
            while not _matches(server, stores):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Odoo did not match Celeste in 600 s; worker log:\n{worker.log()[-3000:]}")
                time.sleep(0.1)
            matched = time.monotonic()
        return {
            "seconds": matched - started,
            "changes_seconds": changes_done - started,
            "tail_seconds": matched - changes_done,
            "calls": server.total_calls,
            "writes": server.quantity_writes,
            "applies": server.calls[("stock.quant", "action_apply_inventory")],
        }
    finally:
        server.stop()


def _one_by_one(stores, products, count: int) -> dict:
    from catalog.models import StockLevel
    from catalog.services import stock_level_set
    from integrations.odoo.client import OdooClient, OdooConfig
    from integrations.odoo.testing.server import FakeOdooServer

    server = FakeOdooServer().start()
    try:
        _map(server, stores, products)
        client = OdooClient(OdooConfig(url=server.url, db=server.db, user=server.user, api_key=server.api_key))
        pairs = [(p, s) for s in stores for p in products]
        sequence = _changes(pairs, count)
        StockLevel.objects.filter(store__in=stores).delete()
        context = {"inventory_mode": True}
        started = time.monotonic()
        for index, quantity in sequence:
            product, store = pairs[index]
            stock_level_set(product=product, store=store, quantity=quantity)
            (odoo_product,) = client.search("product.product", [("default_code", "=", product.sku)], limit=1)
            quants = client.search_read(
                "stock.quant", [("product_id", "=", odoo_product), ("location_id", "=", store.odoo_location_id)], ["id"]
            )
            if quants:
                quant_id = quants[0]["id"]
                client.write("stock.quant", [quant_id], {"inventory_quantity": quantity}, context=context)
            else:
                quant_id = client.create(
                    "stock.quant",
                    {"product_id": odoo_product, "location_id": store.odoo_location_id, "inventory_quantity": quantity},
                    context=context,
                )
            client.execute("stock.quant", "action_apply_inventory", [quant_id])
        seconds = time.monotonic() - started
        assert _matches(server, stores), "the one-by-one run did not end equal"
        return {"seconds": seconds, "calls": server.total_calls, "writes": server.quantity_writes}
    finally:
        server.stop()


def run(quick: bool):
    from bench import Result, report
    from integrations.models import InventorySyncState

    stores_n, products_n, count = QUICK if quick else (STORES, PRODUCTS, CHANGES)
    pairs = stores_n * products_n
    InventorySyncState.objects.all().delete()
    stores, products = _catalog(stores_n, products_n)

    def fresh_stock():
        from catalog.models import StockLevel

        StockLevel.objects.filter(store__in=stores).delete()
        InventorySyncState.objects.all().delete()
        from bench import flush_redis

        flush_redis()

    burst = _coalesced(stores, products, count, paused=True)
    fresh_stock()
    stream = _coalesced(stores, products, count, paused=False)
    fresh_stock()
    naive = _one_by_one(stores, products, count)
    tag = f"{count:,} changes / {pairs} pairs"
    results = [
        Result(BENCH, f"one by one: XML-RPC calls ({tag})", naive["calls"], "calls"),
        Result(BENCH, "one by one: quantity writes", naive["writes"], "writes"),
        Result(BENCH, "one by one: first change -> Odoo matches Celeste", naive["seconds"], "s"),
    ]
    for name, ours in (("burst", burst), ("stream", stream)):
        results += [
            Result(BENCH, f"{name}: XML-RPC calls", ours["calls"], "calls"),
            Result(
                BENCH, f"{name}: quantity writes", ours["writes"], "writes", f"<= {pairs}" if name == "burst" else ""
            ),
            Result(BENCH, f"{name}: action_apply_inventory calls (batches)", ours["applies"], "calls"),
            Result(BENCH, f"{name}: making the changes (API-like loop)", ours["changes_seconds"], "s"),
            Result(BENCH, f"{name}: first change -> Odoo matches Celeste", ours["seconds"], "s"),
            Result(BENCH, f"{name}: last change -> Odoo matches Celeste", ours["tail_seconds"], "s"),
            Result(BENCH, f"{name}: ratio XML-RPC calls vs one by one", ours["calls"] / naive["calls"], "x"),
            Result(BENCH, f"{name}: ratio quantity writes vs one by one", ours["writes"] / naive["writes"], "x"),
            Result(BENCH, f"{name}: ratio time to match vs one by one", ours["seconds"] / naive["seconds"], "x"),
        ]
    return report(results)


if __name__ == "__main__":
    from bench.__main__ import setup, summary

    quick = "--quick" in sys.argv[1:]
    print(f"Setting up (var/bench){' [quick]' if quick else ''} ...", flush=True)
    setup()
    started = time.monotonic()
    summary(run(quick=quick))
    print(f"Total time: {time.monotonic() - started:.0f} s")
