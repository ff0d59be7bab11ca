"""Stock changes in a stream and in a burst, through a real worker and the fake
Odoo: at most one quantity write per pair per ODOO_INVENTORY_DEBOUNCE_SECONDS
while changes keep coming, a burst settled in a few task runs, and the final
quantities always exact."""

import os
import random
import signal
import time
from collections import defaultdict

import pytest
from django.db import transaction

from catalog.services import stock_level_set, store_update
from integrations.models import InventorySyncState
from integrations.odoo.tasks import odoo_inventory_changed

from ..conftest import published, wait_for
from ..factories import StoreFactory
from .test_inventory_sync import odoo_matches_celeste


@pytest.fixture
def grid(odoo, odoo_product):
    """(product, store) pairs over 2 mapped stores."""
    stores = [StoreFactory() for _ in range(2)]
    for store in stores:
        store_update(store=store, odoo_location_id=odoo.state.add_location(store.code))
    products = [odoo_product() for _ in range(10)]
    return stores, [(p, s) for s in stores for p in products]


def settled(odoo, stores) -> bool:
    return (
        all(odoo_matches_celeste(odoo, s) for s in stores)
        and not InventorySyncState.objects.filter(dirty=True).exists()
    )


def write_gaps(odoo) -> list[float]:
    """Seconds between consecutive quantity writes of the same quant (= pair)."""
    times = defaultdict(list)
    for at, quant_id in odoo.quantity_write_log:
        times[quant_id].append(at)
    return [b - a for moments in times.values() for a, b in zip(moments, moments[1:], strict=False)]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_stream_of_changes_writes_each_pair_at_most_once_per_debounce(odoo, odoo_worker, grid):
    """Changes to 4 pairs keep coming for 8 s, at a pace the worker keeps up with:
    every pair's writes are at least the debounce apart (without it, about one
    write per change), so they cost at most 4 x (8 s / 3 s + 2) writes; the last
    quantities win."""
    debounce = 3.0
    stores, pairs = grid
    pairs = pairs[:2] + pairs[-2:]  # two products in each store
    odoo_worker(ODOO_INVENTORY_DEBOUNCE_SECONDS=str(debounce))
    rng = random.Random(5)

    started, changes = time.monotonic(), 0
    while time.monotonic() - started < 8 or changes < len(pairs):
        product, store = pairs[changes] if changes < len(pairs) else rng.choice(pairs)
        stock_level_set(product=product, store=store, quantity=rng.randint(0, 500))
        changes += 1
        time.sleep(0.15)
    stream_seconds = time.monotonic() - started
    ended = time.monotonic()

    wait_for(lambda: settled(odoo, stores), timeout=60, interval=0.2, message="Odoo to match Celeste")
    tail = time.monotonic() - ended

    gaps = write_gaps(odoo)
    assert gaps, "no pair was written twice: the stream did not outlast the debounce"
    assert min(gaps) >= debounce - 0.01, sorted(gaps)[:5]
    assert odoo.quantity_writes <= len(pairs) * (int(stream_seconds // debounce) + 2)
    assert odoo.quantity_writes < changes / 2
    assert tail < debounce + 20  # the trailing writes went when their turn came


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_after_a_burst_odoo_matches_within_seconds_in_one_change_task_run(odoo, odoo_worker, grid):
    """800 changes over 20 pairs land while the worker is stopped (busy, or
    down). One change job is sent; the others wait in the ledger and its run
    marks every pair once (before: one run per change, then one per pair, and
    tens of seconds on two loaded cores for a larger burst), and Odoo matches
    Celeste within 10 s of the worker taking them, under the production debounce."""
    stores, pairs = grid
    worker = odoo_worker(ODOO_INVENTORY_DEBOUNCE_SECONDS="60")
    rng = random.Random(9)
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        for chunk in range(8):
            with transaction.atomic():  # 100 changes per transaction, so the burst is quick to make
                for i in range(100):
                    n = chunk * 100 + i
                    product, store = pairs[n] if n < len(pairs) else rng.choice(pairs)
                    stock_level_set(product=product, store=store, quantity=rng.randint(0, 500))
        published()
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)
    resumed = time.monotonic()

    wait_for(lambda: settled(odoo, stores), timeout=30, interval=0.1, message="Odoo to match Celeste")

    assert time.monotonic() - resumed < 10
    # ``version`` counts the marks of a pair: one each.
    assert sorted(InventorySyncState.objects.values_list("version", flat=True)) == [1] * len(pairs)
    assert odoo.quantity_writes == len(pairs)
    assert worker.log().count(f"Task {odoo_inventory_changed.name}[") == 2  # one run: received, succeeded


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_change_while_its_push_is_in_flight_is_written_when_its_turn_comes(odoo, odoo_worker, grid):
    """The quantity changes while Odoo is answering the push that carries the old
    one: the pair stays dirty and the new quantity is written one debounce later."""
    debounce = 1.5
    stores, pairs = grid
    product, store = pairs[0]
    odoo.injection.latency = 0.3  # every call: the push is in flight for a while
    odoo_worker(ODOO_INVENTORY_DEBOUNCE_SECONDS=str(debounce))

    stock_level_set(product=product, store=store, quantity=5)
    wait_for(lambda: odoo.in_flight, timeout=30, interval=0.02, message="the push talking to Odoo")
    stock_level_set(product=product, store=store, quantity=9)

    wait_for(
        lambda: (
            odoo.state.on_hand(store.odoo_location_id).get(product.sku) == 9
            and not InventorySyncState.objects.filter(dirty=True).exists()
        ),
        timeout=60,
        message="the second quantity in Odoo",
    )
    assert odoo.quantity_writes == 2
    assert write_gaps(odoo)[0] >= debounce - 0.01
