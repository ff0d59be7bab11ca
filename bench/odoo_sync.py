"""Odoo inventory sync: 10,000 stock changes over 500 (product, store) pairs, debounced and coalesced vs one by one.

Celeste: a real Celery worker (concurrency 2) and the local fake Odoo (XML-RPC
over loopback, no injected latency or failures). This process makes the changes
through ``stock_level_set``, each in its own transaction as the API or an order
would, from CHANGE_THREADS threads (API processes): the first N create the
pairs' stock rows, the rest set random quantities on random pairs. Every change
enqueues ``integrations.odoo_inventory_changed`` (gathered: while one waits in the
queue, the others wait in the ledger and it takes them), which marks the pairs
dirty; pushes take up to
ODOO_INVENTORY_BATCH_SIZE dirty pairs not pushed within
ODOO_INVENTORY_DEBOUNCE_SECONDS (the default) and send the quantity StockLevel
holds at send time. Timed until Odoo's on-hand quantities equal Celeste's for
every pair (and no pair is dirty). Two runs:
- burst: the worker is paused (SIGSTOP) while the changes are made, as when
  changes outpace the worker or it was down; then resumed. Targets: at most one
  write per pair, and Odoo matches Celeste within 10 s of the last change. Where
  that time went is printed part by part (``_parts``).
- stream: the worker runs during the changes and keeps up with them. Target: at
  most 2 writes per pair (1,000 for 500 pairs), i.e. one per pair per debounce
  while the stream lasts less than the debounce (the stream's length is printed;
  the bound is pairs x (stream / debounce + 2)). Odoo matches Celeste at most a
  debounce after the last change (the trailing writes), by design.

One by one (baseline): the same change sequence against a fresh fake Odoo, each
change sent at once, in this process (no queue overhead, which favours the
baseline): find the product by default_code, find the quant, write
``inventory_quantity`` in inventory mode, ``action_apply_inventory`` = 4 calls.
Its cost is the same for every change, so it is timed on the first
BASELINE_CHANGES changes and scaled to all of them (calls and writes exactly, 4
and 1 per change). Ratios compare the runs, measured in this run.

Standalone: ``python -m bench.odoo_sync [--quick]`` (same var/bench setup as ``python -m bench``).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter

STORES, PRODUCTS, CHANGES = 10, 50, 10_000
QUICK = (5, 20, 1_000)
BENCH = "odoo_sync"
CHANGE_THREADS = 4
BASELINE_CHANGES = 2_000
CONVERGENCE_TARGET_SECONDS = 10


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


def _make_changes(pairs, sequence) -> None:
    """The changes, each in its own transaction, from CHANGE_THREADS threads. The first
    len(pairs) create the stock rows before the rest start, as in the one-by-one run."""
    from django.db import connection

    from catalog.services import stock_level_set

    def apply(part) -> None:
        try:
            for index, quantity in part:
                product, store = pairs[index]
                stock_level_set(product=product, store=store, quantity=quantity)
        finally:
            connection.close()

    for index, quantity in sequence[: len(pairs)]:
        product, store = pairs[index]
        stock_level_set(product=product, store=store, quantity=quantity)
    rest = sequence[len(pairs) :]
    threads = [threading.Thread(target=apply, args=(rest[i::CHANGE_THREADS],)) for i in range(CHANGE_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


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


def _differences(server, stores) -> list[tuple]:
    """(store id, sku, Celeste's quantity, Odoo's, the pair's sync state) where they differ."""
    from catalog.models import StockLevel
    from integrations.models import InventorySyncState

    found = []
    for store in stores:
        odoo = server.state.on_hand(store.odoo_location_id)
        for product_id, sku, quantity in StockLevel.objects.filter(store=store).values_list(
            "product_id", "product__sku", "quantity"
        ):
            if odoo.get(sku) != float(quantity):
                state = InventorySyncState.objects.filter(product_id=product_id, store=store).values().first()
                found.append((store.id, sku, quantity, odoo.get(sku), state))
    return found


def _parts(
    server, *, changes_done: float, published: float, resumed: float, jobs_done: float, matched: float
) -> dict[str, float]:
    """Where the time from the last change to "Odoo matches" went, as seconds after the
    last change committed: the bench's publisher done, the worker resumed, the first
    pair marked dirty (its sync state's ``created_at``, the database's clock), the last
    pair marked (``changed_at``), no change job left in the ledger (polled), the first
    and last push (its first Odoo call), Odoo's last quantity write, the bench seeing
    the match."""
    from django.db.models import Max, Min

    from integrations.models import InventorySyncState

    # Database timestamps are wall-clock time; the bench counts on the monotonic clock.
    offset = time.time() - time.monotonic()
    marks = InventorySyncState.objects.aggregate(first=Min("created_at"), last=Max("changed_at"))
    pushes = [at for at, model, method in server.call_log if (model, method) == ("product.product", "search_read")]
    points = {
        "bench publisher done": published,
        "worker resumed": resumed,
        "first pair marked dirty": marks["first"].timestamp() - offset,
        "last pair marked dirty": marks["last"].timestamp() - offset,
        "every change job finished": jobs_done,
        "first push starts": pushes[0],
        "last push starts": pushes[-1],
        "Odoo has the last write": max(at for at, _ in server.quantity_write_log),
        "bench sees the match": matched,
    }
    return {name: at - changes_done for name, at in points.items()}


def _coalesced(stores, products, count: int, *, paused: bool) -> dict:
    from django.conf import settings

    from bench import BASE_DIR
    from celeste.background.models import OutboxMessage
    from celeste.devserver.processes import celery_worker
    from integrations.odoo.tasks import odoo_inventory_changed
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
            "ODOO_INVENTORY_DEBOUNCE_SECONDS": str(settings.ODOO_INVENTORY_DEBOUNCE_SECONDS),
        }
        with celery_worker(env=env, concurrency=2, log_dir=BASE_DIR / "var" / "bench" / "logs") as worker:
            if paused:  # the burst lands while the worker is busy elsewhere / down
                os.killpg(worker.proc.pid, signal.SIGSTOP)
            started = time.monotonic()
            _make_changes(pairs, sequence)
            changes_done = published = resumed = time.monotonic()
            if paused:
                from celeste.background.publisher import publisher

                publisher.flush(timeout=60)  # every change is in the queue before the worker goes on
                published = time.monotonic()
                os.killpg(worker.proc.pid, signal.SIGCONT)
                resumed = time.monotonic()
            deadline = changes_done + 600 + settings.ODOO_INVENTORY_DEBOUNCE_SECONDS
            jobs_done, change_jobs = None, OutboxMessage.objects.filter(task_name=odoo_inventory_changed.name)
            while not _matches(server, stores):
                if jobs_done is None and not change_jobs.exists():
                    jobs_done = time.monotonic()
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Odoo did not match Celeste in 600 s: {_differences(server, stores)[:10]}; worker log:\n"
                        f"{worker.log()[-3000:]}"
                    )
                time.sleep(0.1)
            matched = time.monotonic()
        return {
            "parts": _parts(
                server,
                changes_done=changes_done,
                published=published,
                resumed=resumed,
                jobs_done=jobs_done or matched,
                matched=matched,
            ),
            "seconds": matched - started,
            "changes_seconds": changes_done - started,
            "tail_seconds": matched - changes_done,
            "calls": server.total_calls,
            "writes": server.quantity_writes,
            "applies": server.calls[("stock.quant", "action_apply_inventory")],
            "writes_per_pair_max": max(Counter(quant for _, quant in server.quantity_write_log).values()),
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
        sequence = _changes(pairs, count)[: max(BASELINE_CHANGES, len(pairs))]
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
        scale = count / len(sequence)
        return {
            "seconds": seconds * scale,
            "calls": round(server.total_calls * scale),
            "writes": round(server.quantity_writes * scale),
            "measured": len(sequence),
        }
    finally:
        server.stop()


def run(quick: bool):
    from django.conf import settings

    from bench import Result, report
    from integrations.models import InventorySyncState

    stores_n, products_n, count = QUICK if quick else (STORES, PRODUCTS, CHANGES)
    pairs = stores_n * products_n
    debounce = settings.ODOO_INVENTORY_DEBOUNCE_SECONDS
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
    scaled = f" ({naive['measured']:,} measured, scaled)" if naive["measured"] < count else ""
    results = [
        Result(BENCH, "ODOO_INVENTORY_DEBOUNCE_SECONDS", debounce, "s"),
        Result(BENCH, f"one by one: XML-RPC calls ({tag}){scaled}", naive["calls"], "calls"),
        Result(BENCH, "one by one: quantity writes", naive["writes"], "writes"),
        Result(BENCH, f"one by one: first change -> Odoo matches Celeste{scaled}", naive["seconds"], "s"),
    ]
    for name, ours in (("burst", burst), ("stream", stream)):
        writes_target = f"<= {pairs}" if name == "burst" else f"<= {2 * pairs}"
        tail_target = f"<= {CONVERGENCE_TARGET_SECONDS}" if name == "burst" else ""
        results += [
            Result(BENCH, f"{name}: XML-RPC calls", ours["calls"], "calls"),
            Result(BENCH, f"{name}: quantity writes", ours["writes"], "writes", writes_target),
            Result(BENCH, f"{name}: most writes of one pair", ours["writes_per_pair_max"], "writes"),
            Result(BENCH, f"{name}: action_apply_inventory calls (batches)", ours["applies"], "calls"),
            Result(
                BENCH, f"{name}: making the changes (API-like, {CHANGE_THREADS} threads)", ours["changes_seconds"], "s"
            ),
            Result(BENCH, f"{name}: first change -> Odoo matches Celeste", ours["seconds"], "s"),
            Result(BENCH, f"{name}: last change -> Odoo matches Celeste", ours["tail_seconds"], "s", tail_target),
            Result(BENCH, f"{name}: ratio XML-RPC calls vs one by one", ours["calls"] / naive["calls"], "x"),
            Result(BENCH, f"{name}: ratio quantity writes vs one by one", ours["writes"] / naive["writes"], "x"),
            Result(BENCH, f"{name}: ratio time to match vs one by one", ours["seconds"] / naive["seconds"], "x"),
        ]
    results += [
        Result(BENCH, f"burst, last change -> {name}", seconds, "s") for name, seconds in burst["parts"].items()
    ]
    bound = pairs * (int(stream["changes_seconds"] // debounce) + 2)
    results.append(Result(BENCH, "stream: the debounce's bound, pairs x (stream / debounce + 2)", bound, "writes"))
    return report(results)


if __name__ == "__main__":
    from bench.__main__ import setup, summary

    quick = "--quick" in sys.argv[1:]
    print(f"Setting up (var/bench){' [quick]' if quick else ''} ...", flush=True)
    setup()
    started = time.monotonic()
    summary(run(quick=quick))
    print(f"Total time: {time.monotonic() - started:.0f} s")
