"""Paid orders become one confirmed sale.order in Odoo, whatever fails or repeats."""

from decimal import Decimal

import pytest

from catalog.services import stock_level_set
from celeste.background.models import FailedTask
from integrations.models import OdooOrderLink, SyncStatus
from integrations.odoo.errors import OdooPermanentError, OdooTransientError
from integrations.odoo.tasks import odoo_sync_order
from orders import services as order_services
from orders.services import order_place

from ..conftest import wait_for
from ..factories import AddressFactory, UserFactory, reach


@pytest.fixture
def place(mapped_store, odoo_product):
    """Place an order of products that exist in Odoo."""

    def make(user=None, lines=((Decimal("3.00"), 2), (Decimal("1.25"), 1))):
        user = user or UserFactory()
        items = []
        for price, quantity in lines:
            product = odoo_product(price=price)
            stock_level_set(product=product, store=mapped_store, quantity=10)
            items.append((product, quantity))
        order = order_place(user=user, store=mapped_store, address=AddressFactory(user=user), items=items)
        return reach(order, "paid")  # only paid orders go to Odoo

    return make


def sale_orders(odoo):
    return list(odoo.state.records["sale.order"].values())


@pytest.mark.django_db
def test_sync_creates_a_confirmed_sale_order_with_lines_and_partner(odoo, odoo_settings, place):
    order = place()

    assert odoo_sync_order(order_id=order.id) == SyncStatus.SYNCED

    (sale_order,) = sale_orders(odoo)
    assert sale_order["client_order_ref"] == order.number
    assert sale_order["state"] == "sale"
    partner = odoo.state.records["res.partner"][sale_order["partner_id"]]
    assert partner["email"] == order.user.email
    lines = [odoo.state.records["sale.order.line"][i] for i in sale_order["order_line"]]
    skus = {odoo.state.records["product.product"][line["product_id"]]["default_code"]: line for line in lines}
    for item in order.items.all():
        assert skus[item.sku]["product_uom_qty"] == item.quantity
        assert skus[item.sku]["price_unit"] == float(item.unit_price)
    link = OdooOrderLink.objects.get(order=order)
    assert (link.status, link.odoo_id, link.attempts, link.error) == (SyncStatus.SYNCED, sale_order["id"], 1, "")


@pytest.mark.django_db
def test_an_unpaid_order_never_reaches_odoo_whatever_the_message_says(odoo, odoo_settings, mapped_store, odoo_product):
    user = UserFactory()
    product = odoo_product(price=Decimal("3.00"))
    stock_level_set(product=product, store=mapped_store, quantity=10)
    pending = order_place(user=user, store=mapped_store, address=AddressFactory(user=user), items=[(product, 1)])

    assert odoo_sync_order(order_id=pending.id) == "not_paid"

    assert sale_orders(odoo) == []
    assert not OdooOrderLink.objects.filter(order=pending).exists()


@pytest.mark.django_db
def test_running_the_task_twice_creates_one_sale_order(odoo, odoo_settings, place):
    order = place()

    odoo_sync_order(order_id=order.id)
    OdooOrderLink.objects.filter(order=order).update(status=SyncStatus.PENDING)  # as if the first run's commit was lost
    odoo_sync_order(order_id=order.id)

    assert len(sale_orders(odoo)) == 1
    assert odoo.calls[("sale.order", "create")] == 1
    assert odoo.calls[("sale.order", "action_confirm")] == 1


@pytest.mark.django_db
def test_a_lost_create_response_is_found_by_client_order_ref(odoo, odoo_settings, place):
    order = place()
    odoo.fail_next(1, "503", model="sale.order", method="create", after=True)

    with pytest.raises(OdooTransientError):
        odoo_sync_order(order_id=order.id)
    link = OdooOrderLink.objects.get(order=order)
    assert link.status == SyncStatus.FAILED and "503" in link.error

    odoo_sync_order(order_id=order.id)

    (sale_order,) = sale_orders(odoo)
    assert sale_order["state"] == "sale"
    link.refresh_from_db()
    assert (link.status, link.odoo_id, link.attempts, link.error) == (SyncStatus.SYNCED, sale_order["id"], 2, "")


@pytest.mark.django_db
def test_the_partner_is_found_by_email_for_the_next_order(odoo, odoo_settings, place):
    user = UserFactory()
    odoo_sync_order(order_id=place(user=user).id)
    odoo_sync_order(order_id=place(user=user).id)

    assert len(sale_orders(odoo)) == 2
    assert len(odoo.state.records["res.partner"]) == 1


@pytest.mark.django_db
def test_a_product_missing_in_odoo_is_a_permanent_failure(odoo, odoo_settings, place):
    order = place()
    item = order.items.first()
    odoo.state.records["product.product"].pop(odoo.state.product_id(item.sku))

    with pytest.raises(OdooPermanentError, match=item.sku):
        odoo_sync_order(order_id=order.id)

    link = OdooOrderLink.objects.get(order=order)
    assert link.status == SyncStatus.FAILED and item.sku in link.error
    assert sale_orders(odoo) == []


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_paying_syncs_once_through_a_worker_even_when_the_first_attempts_fail(odoo, odoo_worker, place):
    """The server fails the first attempts (one create whose response is lost, then
    two 503s): the task retries with backoff and Odoo ends with exactly one sale order."""
    order = place()
    odoo.fail_next(1, "503", model="sale.order", method="create", after=True)
    odoo.fail_next(2, "503", model="sale.order", method="search_read")
    odoo_worker()

    order_services.order_mark_paid(order_id=order.id)

    link = wait_for(
        lambda: OdooOrderLink.objects.filter(order=order, status=SyncStatus.SYNCED).first(),
        timeout=60,
        message="the order synced",
    )
    (sale_order,) = sale_orders(odoo)
    assert sale_order["state"] == "sale" and link.odoo_id == sale_order["id"]
    assert link.attempts == 4  # create lost, 503, 503, found
    assert odoo.calls[("sale.order", "create")] == 1
    assert not FailedTask.objects.filter(task_name__startswith="integrations.").exists()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_access_denied_goes_to_the_inbox_without_retries(odoo, odoo_worker, place):
    order = place()
    odoo.deny_access()
    odoo_worker()

    order_services.order_mark_paid(order_id=order.id)

    failed = wait_for(
        lambda: FailedTask.objects.filter(task_name="integrations.odoo_sync_order").first(),
        timeout=60,
        message="the order job in the inbox",
    )
    assert failed.permanent and failed.attempts == 1
    assert failed.kwargs == {"order_id": order.id}
    assert "refused the credentials" in failed.error
    # The stock set up for the order queued an inventory push: it is refused the same way.
    push = wait_for(
        lambda: FailedTask.objects.filter(task_name="integrations.odoo_push_inventory").first(),
        timeout=30,
        message="the push job in the inbox",
    )
    assert push.permanent and push.attempts == 1
    assert odoo.calls[("common", "authenticate")] == 2  # one per job: no retries
    link = OdooOrderLink.objects.get(order=order)
    assert link.status == SyncStatus.FAILED and link.attempts == 1


@pytest.mark.django_db
def test_the_order_admin_page_shows_the_sync_status_and_error(odoo, odoo_settings, place, client):
    from ..factories import UserFactory as Users

    order = place()
    odoo.deny_access()
    with pytest.raises(OdooPermanentError):
        odoo_sync_order(order_id=order.id)
    client.force_login(Users(is_staff=True, is_superuser=True))

    page = client.get(f"/admin/orders/order/{order.id}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "Odoo sync" in html and "Failed" in html and "refused the credentials" in html


@pytest.mark.django_db
def test_admin_lists_sync_records_and_the_store_location(odoo, odoo_settings, place, client, mapped_store):
    from ..factories import UserFactory as Users

    odoo_sync_order(order_id=place().id)
    client.force_login(Users(is_staff=True, is_superuser=True))

    links = client.get("/admin/integrations/odooorderlink/")
    states = client.get("/admin/integrations/inventorysyncstate/")
    stores = client.get("/admin/catalog/store/")
    store_form = client.get(f"/admin/catalog/store/{mapped_store.id}/change/")

    assert links.status_code == states.status_code == stores.status_code == store_form.status_code == 200
    assert "Synced" in links.content.decode()
    assert "odoo_location_id" in store_form.content.decode()
    assert str(mapped_store.odoo_location_id) in stores.content.decode()


@pytest.mark.django_db
def test_with_odoo_off_paying_records_the_link_skipped_without_a_job(settings, odoo, odoo_settings, place):
    """A job would only write "skipped": the payment's transaction does, and the admin's
    "sync again" sends the order once Odoo is configured."""
    from celeste.background.models import OutboxMessage
    from integrations.odoo.client import OFF_MESSAGE

    odoo_url = settings.ODOO_URL
    settings.ODOO_URL = ""
    order = place()
    Order = type(order)
    Order.objects.filter(id=order.id).update(status="pending")
    order_services.order_mark_paid(order_id=order.id)

    link = OdooOrderLink.objects.get(order=order)
    assert (link.status, link.error) == (SyncStatus.SKIPPED, OFF_MESSAGE)
    assert not OutboxMessage.objects.filter(task_name=odoo_sync_order.name).exists()

    settings.ODOO_URL = odoo_url
    from integrations.odoo import services as odoo_services

    assert odoo_services.order_sync_requeue(order_ids=[order.id]) == 1
    job = OutboxMessage.objects.get(task_name=odoo_sync_order.name)
    assert odoo_sync_order(**job.kwargs) == SyncStatus.SYNCED
    assert [o["client_order_ref"] for o in sale_orders(odoo)] == [order.number]


@pytest.mark.django_db
def test_with_odoo_on_paying_queues_the_sync(odoo, odoo_settings, place):
    from celeste.background.models import OutboxMessage

    order = place()
    type(order).objects.filter(id=order.id).update(status="pending")
    order_services.order_mark_paid(order_id=order.id)

    assert OutboxMessage.objects.filter(task_name=odoo_sync_order.name, kwargs={"order_id": order.id}).exists()
    assert not OdooOrderLink.objects.filter(order=order).exists()
