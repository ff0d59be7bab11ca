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


def test_the_order_page_has_a_button_per_allowed_transition_and_no_save(admin_client):
    order = place_order()

    page = admin_client.get(reverse("admin:orders_order_change", args=[order.id])).content.decode()

    assert 'id="order-mark_paid"' in page and 'id="order-cancel"' in page
    assert 'id="order-ship"' not in page and 'id="order-deliver"' not in page
    assert 'name="_save"' not in page


def test_a_transition_button_runs_the_service_and_a_refused_one_says_why(admin_client):
    order = place_order()
    ship = reverse("admin:orders_order_transition", args=[order.id, "ship"])

    assert admin_client.get(ship).status_code == 405
    refused = admin_client.post(ship, follow=True).content.decode()
    assert "is pending; it cannot become shipped" in refused
    admin_client.post(reverse("admin:orders_order_transition", args=[order.id, "mark_paid"]))
    admin_client.post(reverse("admin:orders_order_transition", args=[order.id, "confirm"]))
    page = admin_client.post(ship, follow=True).content.decode()

    assert Order.objects.get(id=order.id).status == OrderStatus.SHIPPED
    assert 'id="order-deliver"' in page and 'id="order-cancel"' not in page
    assert (
        "Unknown transition"
        in admin_client.post(
            reverse("admin:orders_order_transition", args=[order.id, "explode"]), follow=True
        ).content.decode()
    )


def test_cancelling_asks_first_listing_the_orders(admin_client):
    first, second = place_order(), place_order()
    cancel = {"action": "transition_cancel", "_selected_action": [first.id, second.id]}

    page = admin_client.post(reverse("admin:orders_order_changelist"), cancel).content.decode()
    assert first.number in page and second.number in page and "Yes, cancel 2 order(s)" in page
    assert not Order.objects.filter(status=OrderStatus.CANCELLED).exists()

    admin_client.post(reverse("admin:orders_order_changelist"), {**cancel, "confirmed": "yes"})
    assert Order.objects.filter(status=OrderStatus.CANCELLED).count() == 2

    third = place_order()
    button = reverse("admin:orders_order_transition", args=[third.id, "cancel"])
    assert "Yes, cancel 1 order(s)" in admin_client.post(button).content.decode()
    admin_client.post(button, {"confirmed": "yes"})
    assert Order.objects.get(id=third.id).status == OrderStatus.CANCELLED


def test_the_order_page_shows_its_notifications_with_their_deliveries(admin_client):
    from notifications.models import Delivery, Notification

    order = place_order()
    notification = Notification.objects.create(user=order.user, order=order, event="order_paid", title="Paid!")
    Delivery.objects.create(notification=notification, channel="email", status="failed", last_error="SMTP 550")

    page = admin_client.get(reverse("admin:orders_order_change", args=[order.id])).content.decode()

    assert "Paid!" in page and "email: failed (SMTP 550)" in page


def test_send_test_payment_event_targets_celeste_port(monkeypatch):
    from orders.management.commands.send_test_payment_event import Command

    monkeypatch.setenv("CELESTE_PORT", "8123")
    parser = Command().create_parser("manage.py", "send_test_payment_event")

    assert parser.parse_args(["CEL-1"]).url == "http://127.0.0.1:8123/api/v1/payments/webhook"
