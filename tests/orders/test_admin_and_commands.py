from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from orders.models import Order, OrderStatus, Payment

from ..factories import UserFactory, place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize("name", ["orders_order", "orders_address", "orders_payment"])
def test_changelists_load(admin_client, name):
    place_order()

    assert admin_client.get(reverse(f"admin:{name}_changelist")).status_code == 200


def test_order_page_shows_items_inline(admin_client):
    order = place_order()

    page = admin_client.get(reverse("admin:orders_order_change", args=[order.id])).content.decode()

    assert order.items.first().product_name in page


def test_transition_actions_call_the_services_and_report_refusals(admin_client):
    pending, delivered = place_order(), place_order()
    Order.objects.filter(id=delivered.id).update(status=OrderStatus.DELIVERED)

    response = admin_client.post(
        reverse("admin:orders_order_changelist"),
        {"action": "transition_mark_paid", "_selected_action": [pending.id, delivered.id]},
        follow=True,
    )

    assert Order.objects.get(id=pending.id).status == OrderStatus.PAID
    assert Order.objects.get(id=delivered.id).status == OrderStatus.DELIVERED
    assert "is delivered; it cannot become paid" in response.content.decode()


def test_send_test_payment_event_signs_and_delivers(live_server, settings):
    order = place_order(lines=((Decimal("2.00"), 1),))
    out = StringIO()

    call_command(
        "send_test_payment_event", order.number, "--url", f"{live_server.url}/api/v1/payments/webhook", stdout=out
    )

    assert "HTTP 200" in out.getvalue()
    assert Order.objects.get(id=order.id).status == OrderStatus.PAID
    assert Payment.objects.get().provider == "celeste-test"


def test_send_test_payment_event_reports_a_refusal_by_signature(live_server):
    order = place_order()

    with pytest.raises(CommandError, match="401"):
        call_command(
            "send_test_payment_event",
            order.number,
            "--secret",
            "wrong",
            "--url",
            f"{live_server.url}/api/v1/payments/webhook",
            stdout=StringIO(),
        )
    assert not Payment.objects.exists()


def test_send_test_payment_event_unknown_order():
    with pytest.raises(CommandError, match="No order"):
        call_command("send_test_payment_event", "CEL-0", stdout=StringIO())


def test_orders_cannot_be_deleted_from_the_admin(admin_client):
    order = place_order()

    assert admin_client.get(reverse("admin:orders_order_delete", args=[order.id])).status_code == 403
    assert Order.objects.filter(id=order.id).exists()
