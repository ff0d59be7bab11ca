"""drain_queues against real workers: the workers stop taking messages, the
command waits out what they run and hold, what waits in Redis stays there, and
--resume makes them consume again. The fake Odoo's latency gives a task that
runs for a known time."""

import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from catalog.services import stock_level_set
from celeste.background.queue import enqueue
from celeste.background.tasks import ping
from integrations.models import OdooOrderLink, SyncStatus
from integrations.odoo.tasks import odoo_inventory_changed
from orders import services as order_services
from orders.services import order_place

from ..conftest import published, queued_messages, wait_for
from ..factories import AddressFactory, UserFactory


@pytest.fixture
def slow_sync(odoo, odoo_worker, mapped_store, odoo_product, set_switch):
    """A worker busy with an order sync that takes several seconds (every Odoo call waits 2 s)."""
    set_switch(odoo_inventory_changed.name, "off")
    odoo.injection.latency = 2
    product = odoo_product(price=Decimal("3.00"))
    stock_level_set(product=product, store=mapped_store, quantity=10)
    user = UserFactory()
    order = order_place(user=user, store=mapped_store, address=AddressFactory(user=user), items=[(product, 1)])
    worker = odoo_worker(lean=False)
    order_services.order_mark_paid(order_id=order.id)
    wait_for(lambda: odoo.in_flight, timeout=60, message="the sync talking to Odoo")
    return worker


def drain(*args) -> str:
    out = StringIO()
    call_command("drain_queues", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_drain_waits_for_the_running_task_and_leaves_the_queue_for_the_next_workers(slow_sync, redis):
    output = drain("--timeout", "60")

    # the running sync finished before the command returned; nothing was taken since
    assert OdooOrderLink.objects.get().status == SyncStatus.SYNCED
    assert "Drained" in output
    waiting = queued_messages(redis, "fast")  # the payment's other jobs, if the drain came first
    for _ in range(5):
        enqueue(ping)
    published()
    time.sleep(2)
    assert queued_messages(redis, "fast") == waiting + 5  # stays in Redis: nobody consumes

    assert "again" in drain("--resume")
    wait_for(lambda: redis.llen("fast") == 0, timeout=30, message="the queue consumed again")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_drain_gives_up_after_its_timeout_and_names_what_is_left(slow_sync):
    with pytest.raises(CommandError) as failed:
        drain("--timeout", "0.5")

    assert failed.value.returncode == 2
    assert "integrations.odoo_sync_order" in str(failed.value)
    drain("--resume")


@pytest.mark.django_db
def test_an_unknown_queue_is_refused(redis):
    with pytest.raises(CommandError, match="Unknown queue"):
        drain("--queue", "nope")
