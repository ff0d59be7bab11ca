"""Retry from the failed-task inbox redoes the Odoo work: a real failure of the
fake Odoo runs the retries out, Odoo is fixed, and the retried job really writes.
(The inventory push has its own: test_inventory_sync's permanent-fault test.)"""

from decimal import Decimal

import pytest

from catalog.models import StockLevel
from catalog.services import stock_level_set
from celeste.background.models import FailedTask
from celeste.background.services import failed_task_retry
from integrations.models import InventorySyncState, OdooOrderLink, SyncStatus
from integrations.odoo.tasks import odoo_sync_inventory_pair, odoo_sync_order
from orders import services as order_services
from orders.services import order_place

from ..conftest import wait_for
from ..factories import AddressFactory, ProductFactory, UserFactory, reach


@pytest.fixture
def order(mapped_store, odoo_product):
    """A placed order of a product that exists in Odoo."""
    user = UserFactory()
    product = odoo_product(price=Decimal("3.00"))
    stock_level_set(product=product, store=mapped_store, quantity=10)
    order = order_place(user=user, store=mapped_store, address=AddressFactory(user=user), items=[(product, 2)])
    return reach(order, "paid")


def inbox_job(task_name: str) -> FailedTask:
    return wait_for(
        lambda: FailedTask.objects.filter(task_name=task_name).first(), timeout=60, message=f"{task_name} in the inbox"
    )


@pytest.mark.django_db
def test_a_retry_shows_the_failed_order_link_pending_until_it_runs(odoo, odoo_settings, order, redis):
    odoo.deny_access()
    odoo_sync_order.apply(kwargs={"order_id": order.id})
    job = FailedTask.objects.get(task_name=odoo_sync_order.name)
    assert OdooOrderLink.objects.get(order=order).status == SyncStatus.FAILED

    failed_task_retry(failed_task_ids=[job.id])

    link = OdooOrderLink.objects.get(order=order)
    assert link.status == SyncStatus.PENDING
    assert "refused the credentials" in link.error  # kept until the next attempt replaces it


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_failed_order_sync_creates_one_confirmed_sale_order(odoo, odoo_worker, order):
    # Given a paid order whose sync ran out of retries against an Odoo answering 503
    odoo.fail_next(100, "503", model="sale.order")
    odoo_worker(ODOO_SYNC_MAX_ATTEMPTS="2")
    order_services.order_mark_paid(order_id=order.id)
    job = inbox_job(odoo_sync_order.name)
    assert OdooOrderLink.objects.get(order=order).status == SyncStatus.FAILED
    assert odoo.state.records["sale.order"] == {}

    # When Odoo is healthy again and staff retry the job
    odoo.reset_faults()
    failed_task_retry(failed_task_ids=[job.id])

    # Then the order is in Odoo, once, confirmed
    link = wait_for(
        lambda: OdooOrderLink.objects.filter(order=order, status=SyncStatus.SYNCED).first(),
        timeout=30,
        message="the order synced",
    )
    (sale_order,) = odoo.state.records["sale.order"].values()
    assert (sale_order["client_order_ref"], sale_order["state"], link.odoo_id) == (
        order.number,
        "sale",
        sale_order["id"],
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_retrying_a_parked_pair_sends_its_current_quantity(odoo, odoo_worker, mapped_store):
    # Given a pair parked in the inbox because its product is missing in Odoo
    product = ProductFactory()
    odoo_worker()
    stock_level_set(product=product, store=mapped_store, quantity=7)
    job = inbox_job(odoo_sync_inventory_pair.name)
    state = InventorySyncState.objects.get(product=product, store=mapped_store)
    assert (state.status, state.dirty) == (SyncStatus.FAILED, False)

    # When staff create the product in Odoo (the stock moved on meanwhile) and retry the job
    odoo.state.add_product(product.sku)
    StockLevel.objects.filter(product=product, store=mapped_store).update(quantity=11)
    failed_task_retry(failed_task_ids=[job.id])

    # Then Odoo gets today's quantity
    wait_for(
        lambda: odoo.state.on_hand(mapped_store.odoo_location_id).get(product.sku) == 11,
        timeout=30,
        message="the current quantity in Odoo",
    )
    state.refresh_from_db()
    assert (state.status, state.synced_quantity) == (SyncStatus.SYNCED, 11)
