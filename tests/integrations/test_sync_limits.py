"""A task type's concurrency limit holds across real worker processes: Odoo order
syncs never run more than ODOO_MAX_CONCURRENT_SYNCS at once, and each still runs once."""

from decimal import Decimal

import pytest

from catalog.services import stock_level_set
from celeste.background import limits
from integrations.models import OdooOrderLink, SyncStatus
from integrations.odoo.tasks import odoo_inventory_changed, odoo_sync_order
from orders import services as order_services
from orders.services import order_place

from ..conftest import wait_for
from ..factories import AddressFactory, UserFactory


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_odoo_order_syncs_never_exceed_their_limit_and_each_runs_once(
    odoo, odoo_worker, mapped_store, odoo_product, set_switch
):
    # Given six paid orders and a slow Odoo, four worker processes, at most two syncs at once
    set_switch(odoo_inventory_changed.name, "off")  # only order syncs talk to Odoo here
    odoo.injection.latency = 0.3
    product = odoo_product(price=Decimal("3.00"))
    stock_level_set(product=product, store=mapped_store, quantity=100)
    orders = []
    for _ in range(6):
        user = UserFactory()
        address = AddressFactory(user=user)
        orders.append(order_place(user=user, store=mapped_store, address=address, items=[(product, 1)]))
    odoo_worker(ODOO_MAX_CONCURRENT_SYNCS="2", TASK_SLOT_WAIT_SECONDS="0.3", concurrency=4)

    for order in orders:
        order_services.order_mark_paid(order_id=order.id)

    # Then every order is in Odoo once, and Odoo never answered more than two at a time
    wait_for(
        lambda: OdooOrderLink.objects.filter(status=SyncStatus.SYNCED).count() == 6,
        timeout=120,
        message="six orders synced",
    )
    assert len(odoo.state.records["sale.order"]) == 6
    assert odoo.peak_in_flight == 2  # the limit held, and it was reached
    # every slot given back (just after each run's last write)
    wait_for(lambda: limits.slots_held(odoo_sync_order.name) == 0, timeout=10, message="the slots given back")
