"""Stock changes reach Odoo as inventory adjustments: coalesced per pair, the
current quantity at send time, retried, and parked in the inbox when hopeless."""

import random
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import F

from catalog.models import StockLevel
from catalog.services import stock_level_set, store_update
from celeste.background.models import FailedTask, FailedTaskStatus, OutboxMessage
from celeste.background.services import failed_task_retry
from integrations.models import InventorySyncState, SyncStatus
from integrations.odoo import services
from integrations.odoo.errors import OdooPermanentError, OdooTransientError
from integrations.odoo.services.inventory import PUSH_GATHER_SECONDS
from integrations.odoo.tasks import odoo_inventory_changed, odoo_push_inventory

from ..conftest import wait_for
from ..factories import StoreFactory

PUSH_TASK = "integrations.odoo_push_inventory"
PAIR_TASK = "integrations.odoo_sync_inventory_pair"


def odoo_matches_celeste(odoo, store) -> bool:
    ours = {
        sku: float(qty) for sku, qty in StockLevel.objects.filter(store=store).values_list("product__sku", "quantity")
    }
    return odoo.state.on_hand(store.odoo_location_id) == ours


def change(level_pairs, rounds: int, seed: int = 1):
    """``rounds`` stock changes spread over the pairs (each its own transaction)."""
    rng = random.Random(seed)
    for i in range(rounds):
        # Every pair at least once, then at random.
        product, store = level_pairs[i] if i < len(level_pairs) else rng.choice(level_pairs)
        stock_level_set(product=product, store=store, quantity=rng.randint(0, 500))


def mark_all(pairs):
    # What the queued odoo_inventory_changed tasks do, one per change.
    for product, store in pairs:
        odoo_inventory_changed(product_id=product.id, store_id=store.id)


@pytest.fixture
def pairs(odoo_product, mapped_store):
    products = [odoo_product() for _ in range(10)]
    return [(product, mapped_store) for product in products]


@pytest.mark.django_db
def test_many_changes_coalesce_into_one_write_per_pair(odoo, odoo_settings, pairs):
    store = pairs[0][1]
    changed = []
    rng = random.Random(7)
    for _ in range(300):
        product, _ = rng.choice(pairs)
        stock_level_set(product=product, store=store, quantity=rng.randint(0, 99))
        changed.append((product, store))
    mark_all(changed)

    result = services.inventory_push()

    assert result.claimed == result.written == 10
    assert odoo.quantity_writes == 10
    assert odoo.calls[("stock.quant", "action_apply_inventory")] == 1
    assert odoo_matches_celeste(odoo, store)
    assert not InventorySyncState.objects.filter(dirty=True).exists()


@pytest.mark.django_db
def test_the_push_sends_the_quantity_at_send_time_not_at_change_time(odoo, odoo_settings, pairs):
    product, store = pairs[0]
    stock_level_set(product=product, store=store, quantity=5)
    odoo_inventory_changed(product_id=product.id, store_id=store.id)
    StockLevel.objects.filter(product=product, store=store).update(quantity=42)  # a change whose task has not run

    services.inventory_push()

    assert odoo.state.on_hand(store.odoo_location_id)[product.sku] == 42


@pytest.mark.django_db
def test_pushing_twice_writes_once(odoo, odoo_settings, pairs):
    odoo_settings.ODOO_INVENTORY_DEBOUNCE_SECONDS = 0
    change(pairs, 50)
    mark_all(pairs)
    odoo_push_inventory()
    writes = odoo.quantity_writes

    assert odoo_push_inventory()["claimed"] == 0
    services.inventory_mark_dirty(pairs=[(p.id, s.id) for p, s in pairs])  # e.g. a duplicate delivery of every change
    second = odoo_push_inventory()

    assert second["claimed"] == 10 and second["unchanged"] == 10 and second["written"] == 0
    assert odoo.quantity_writes == writes


@pytest.mark.django_db
def test_within_the_debounce_a_second_push_waits_for_the_pairs_turn(odoo, odoo_settings, pairs, redis):
    """The queued push, run twice with changes between: the second leaves the pairs
    pushed a moment ago dirty and queues a push for when their turn comes."""
    odoo_settings.ODOO_INVENTORY_DEBOUNCE_SECONDS = 30
    change(pairs, 10)
    mark_all(pairs)
    assert odoo_push_inventory()["written"] == 10
    change(pairs, 10, seed=2)
    mark_all(pairs)

    assert odoo_push_inventory()["claimed"] == 0
    assert odoo.quantity_writes == 10
    assert InventorySyncState.objects.filter(dirty=True).count() == 10
    deferred = OutboxMessage.objects.filter(task_name=PUSH_TASK, eta__isnull=False).order_by("-eta").first()
    synced_at = InventorySyncState.objects.order_by("synced_at").first().synced_at
    assert deferred.eta >= synced_at + timedelta(seconds=30)  # the first pair's turn
    assert deferred.eta <= synced_at + timedelta(seconds=30 + 2 * PUSH_GATHER_SECONDS)
    assert redis.exists(f"celeste:1:{services.PUSH_DEFERRED_KEY}")

    # Its turn comes: the push sends the quantities of then.
    InventorySyncState.objects.update(synced_at=F("synced_at") - timedelta(seconds=30))
    assert odoo_push_inventory()["written"] == 10
    assert odoo_matches_celeste(odoo, pairs[0][1])


@pytest.mark.django_db
def test_batches_hold_at_most_the_batch_size(odoo, odoo_settings, pairs):
    odoo_settings.ODOO_INVENTORY_BATCH_SIZE = 4
    change(pairs, 40)
    mark_all(pairs)

    sizes = []
    while (result := services.inventory_push()).claimed:
        sizes.append(result.claimed)

    assert sizes == [4, 4, 2]
    assert odoo_matches_celeste(odoo, pairs[0][1])


@pytest.mark.django_db
def test_a_store_without_odoo_location_is_skipped(odoo, odoo_settings, odoo_product):
    store, product = StoreFactory(), odoo_product()
    stock_level_set(product=product, store=store, quantity=3)
    odoo_inventory_changed(product_id=product.id, store_id=store.id)

    result = services.inventory_push()

    assert result.skipped == 1 and odoo.quantity_writes == 0
    state = InventorySyncState.objects.get(product=product, store=store)
    assert state.status == SyncStatus.SKIPPED and "no Odoo location" in state.error and not state.dirty


@pytest.mark.django_db
def test_a_product_missing_in_odoo_fails_alone_and_retry_sends_the_current_quantity(
    odoo, odoo_settings, pairs, odoo_product
):
    from ..factories import ProductFactory

    store = pairs[0][1]
    stranger = ProductFactory()  # not in Odoo
    stock_level_set(product=stranger, store=store, quantity=7)
    change(pairs, 30)
    mark_all([*pairs, (stranger, store)])

    result = services.inventory_push()

    assert result.written == 10 and result.failed == 1
    state = InventorySyncState.objects.get(product=stranger, store=store)
    assert state.status == SyncStatus.FAILED and stranger.sku in state.error and not state.dirty
    job = FailedTask.objects.get(task_name=PAIR_TASK)
    assert job.permanent and job.kwargs == {"product_id": stranger.id, "store_id": store.id}

    # Staff create the product in Odoo; meanwhile the stock moved on. Retry sends today's quantity.
    odoo.state.add_product(stranger.sku)
    StockLevel.objects.filter(product=stranger, store=store).update(quantity=11)
    services.inventory_pair_sync(**job.kwargs)

    assert odoo.state.on_hand(store.odoo_location_id)[stranger.sku] == 11
    state.refresh_from_db()
    assert state.status == SyncStatus.SYNCED and state.synced_quantity == 11


@pytest.mark.django_db
def test_access_denied_stops_the_push_and_raises(odoo, odoo_settings, pairs):
    change(pairs, 20)
    mark_all(pairs)
    odoo.deny_access()

    with pytest.raises(OdooPermanentError):
        services.inventory_push()

    assert InventorySyncState.objects.filter(dirty=True).count() == 10
    assert odoo.quantity_writes == 0


@pytest.mark.django_db
def test_a_transient_error_before_any_progress_is_raised_for_a_retry(odoo, odoo_settings, pairs):
    change(pairs, 20)
    mark_all(pairs)
    odoo.fail_next(1, "503", model="stock.quant", method="action_apply_inventory")

    with pytest.raises(OdooTransientError):
        services.inventory_push()  # the task retries with backoff

    assert InventorySyncState.objects.filter(dirty=True).count() == 10  # written, not applied: not synced
    assert services.inventory_push().written == 10
    assert odoo_matches_celeste(odoo, pairs[0][1])


@pytest.mark.django_db
def test_a_transient_error_mid_batch_keeps_the_progress_and_queues_the_rest(odoo, odoo_settings, pairs, redis):
    change(pairs, 20)
    mark_all(pairs)
    # The 5th quantity write fails: the 4 before it are applied and stay done.
    odoo.fail_next(1, "concurrency", model="stock.quant", method="create", skip=4)

    first = services.inventory_push()

    assert first.written == 4 and "could not serialize" in first.error
    assert InventorySyncState.objects.filter(dirty=True).count() == 6
    assert redis.exists(f"celeste:1:{services.PUSH_SCHEDULED_KEY}")  # the rest is queued, not waiting for a retry
    assert services.inventory_push().written == 6
    assert odoo_matches_celeste(odoo, pairs[0][1])


@pytest.mark.django_db(transaction=True)
def test_the_queued_change_job_marks_the_pairs_gathered_into_it_and_runs_twice_safely(odoo, odoo_settings, pairs):
    """A burst of changes: one change job is sent, the others wait in the ledger for
    it. Its run marks every pair in one go (a pair whose product was deleted meanwhile
    is dropped), once: run again, it finds nothing left to take."""
    from ..conftest import published

    change(pairs, 40)
    published()
    holder = OutboxMessage.objects.get(task_name=odoo_inventory_changed.name, published_count=1)
    assert OutboxMessage.objects.filter(task_name=odoo_inventory_changed.name).count() == 40
    gone, _ = next((p, s) for p, s in pairs if p.id != holder.kwargs["product_id"])
    gone.delete()

    assert odoo_inventory_changed(**holder.kwargs) is True  # a push is queued

    states = InventorySyncState.objects.filter(dirty=True)
    assert sorted(states.values_list("product_id", flat=True)) == sorted(p.id for p, _ in pairs if p != gone)
    assert set(states.values_list("version", flat=True)) == {1}  # each pair marked once
    assert list(OutboxMessage.objects.filter(task_name=odoo_inventory_changed.name)) == [holder]  # the rest: taken

    odoo_inventory_changed(**holder.kwargs)  # a second run: its own pair again, nothing else
    assert InventorySyncState.objects.get(**holder.kwargs).version == 2
    assert sorted(states.values_list("version", flat=True)) == [1] * 8 + [2]


# --- through real workers ---------------------------------------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_backlog_of_changes_makes_one_write_per_pair_through_the_queue(odoo, odoo_worker, pairs):
    """300 changes queued while no worker runs (an outage, or a slow worker):
    when it starts, the 300 change tasks mark 10 pairs and one push writes 10."""
    change(pairs, 300)
    odoo_worker()

    wait_for(
        lambda: odoo_matches_celeste(odoo, pairs[0][1]) and not InventorySyncState.objects.filter(dirty=True).exists(),
        timeout=90,
        message="Odoo to match Celeste",
    )

    assert odoo.quantity_writes == 10
    assert odoo.calls[("stock.quant", "action_apply_inventory")] == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_with_half_the_calls_failing_odoo_eventually_matches_celeste(odoo, odoo_worker, odoo_product):
    stores = [StoreFactory() for _ in range(2)]
    for store in stores:
        store_update(store=store, odoo_location_id=odoo.state.add_location(store.code))
    products = [odoo_product() for _ in range(10)]
    pairs = [(p, s) for p in products for s in stores]
    odoo.fail_rate(0.5)
    odoo_worker(ODOO_CALL_RETRIES="2")  # the production default: quick in-call retries of idempotent calls

    change(pairs, 400, seed=3)

    wait_for(
        lambda: all(odoo_matches_celeste(odoo, s) for s in stores),
        timeout=150,
        interval=0.5,
        message="Odoo to match Celeste with 50% of calls failing",
    )
    assert odoo.failures_injected > 20
    assert odoo.quantity_writes < 400
    assert not FailedTask.objects.filter(task_name__startswith="integrations.", status=FailedTaskStatus.OPEN).exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_permanent_fault_goes_to_the_inbox_and_retry_sends_the_current_quantity(odoo, odoo_worker, pairs):
    product, store = pairs[0]
    odoo.deny_access()
    odoo_worker()

    stock_level_set(product=product, store=store, quantity=5)
    job = wait_for(
        lambda: FailedTask.objects.filter(task_name=PUSH_TASK).first(), timeout=60, message="the push in the inbox"
    )
    assert job.permanent and job.attempts == 1
    assert odoo.calls[("common", "authenticate")] == 1  # no retries

    odoo.deny_access(False)
    StockLevel.objects.filter(product=product, store=store).update(quantity=9)  # moved on while parked
    failed_task_retry(failed_task_ids=[job.id])

    wait_for(
        lambda: odoo.state.on_hand(store.odoo_location_id).get(product.sku) == 9,
        timeout=60,
        message="the current quantity in Odoo",
    )
    assert odoo.quantity_writes == 1  # the stale 5 was never sent


# --- commands ----------------------------------------------------------------------


@pytest.mark.django_db
def test_reconcile_reports_a_planted_drift_and_fix_repairs_it(odoo, odoo_settings, pairs, capsys):
    store = pairs[0][1]
    change(pairs, 30)
    mark_all(pairs)
    services.inventory_push()
    drifted = pairs[3][0]
    level = StockLevel.objects.get(product=drifted, store=store)
    odoo.state.set_on_hand(
        location_id=store.odoo_location_id, product_id=odoo.state.product_id(drifted.sku), quantity=level.quantity + 3
    )
    writes = odoo.quantity_writes

    call_command("odoo_reconcile")
    out = capsys.readouterr().out
    assert drifted.sku in out and f"celeste={level.quantity}" in out and f"odoo={level.quantity + 3}" in out
    assert "1 difference(s)" in out
    assert odoo.quantity_writes == writes  # reporting changes nothing

    call_command("odoo_reconcile", "--fix")
    assert odoo.quantity_writes == writes + 1
    call_command("odoo_reconcile")
    assert "0 difference(s)" in capsys.readouterr().out
    assert odoo_matches_celeste(odoo, store)


@pytest.mark.django_db
def test_resync_dry_run_changes_nothing_and_resync_pushes_everything(odoo, odoo_settings, pairs, capsys):
    store = pairs[0][1]
    change(pairs, 30)

    call_command("odoo_resync_inventory", "--dry-run", "--store", store.code)
    assert "10 pair(s) would be pushed" in capsys.readouterr().out
    assert odoo.quantity_writes == 0 and not InventorySyncState.objects.exists()

    call_command("odoo_resync_inventory", "--store", store.code)
    assert "10 written" in capsys.readouterr().out
    assert odoo_matches_celeste(odoo, store)


# --- integration off -----------------------------------------------------------------


@pytest.mark.django_db
def test_without_odoo_url_every_task_records_skipped(settings, pairs):
    from integrations.models import OdooOrderLink
    from integrations.odoo.tasks import odoo_sync_inventory_pair, odoo_sync_order
    from orders.models import OrderStatus

    from ..factories import place_order, reach

    settings.ODOO_URL = ""
    product, store = pairs[0]
    stock_level_set(product=product, store=store, quantity=4)
    order = reach(place_order(), "paid")
    order.status = OrderStatus.PAID
    order.save()

    assert odoo_inventory_changed(product_id=product.id, store_id=store.id) is False
    assert odoo_push_inventory()["skipped"] >= 1
    assert odoo_sync_inventory_pair(product_id=product.id, store_id=store.id)["skipped"] == 1
    assert odoo_sync_order(order_id=order.id) == SyncStatus.SKIPPED

    assert OdooOrderLink.objects.get(order=order).status == SyncStatus.SKIPPED
    assert InventorySyncState.objects.get(product=product, store=store).status == SyncStatus.SKIPPED
    assert not FailedTask.objects.exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_without_odoo_url_a_worker_records_skipped_and_nothing_fails(start_worker, pairs):
    from integrations.models import OdooOrderLink
    from orders import services as order_services

    from ..factories import place_order

    start_worker(ODOO_URL="")
    order = place_order()
    order_services.order_mark_paid(order_id=order.id)

    wait_for(
        lambda: OdooOrderLink.objects.filter(order=order, status=SyncStatus.SKIPPED).exists(),
        timeout=60,
        message="the order link skipped",
    )
    wait_for(
        lambda: InventorySyncState.objects.filter(status=SyncStatus.SKIPPED).count() >= 1,
        timeout=30,
        message="the stock pairs skipped",
    )
    assert not FailedTask.objects.filter(task_name__startswith="integrations.").exists()
