"""The write that marks a delivery sent, right after the SMTP server accepted the
message, survives a database restart: otherwise the retry sends the email twice
(found by tests/faults/test_postgres_restart.py)."""

import asyncio
import threading

import pytest

from celeste.devserver import embedded
from notifications import services
from notifications.models import Channel, Delivery, DeliveryStatus, Notification, NotificationEvent

from ..factories import UserFactory, place_order

pytestmark = pytest.mark.django_db(transaction=True)


def email_delivery() -> Delivery:
    order = place_order(user=UserFactory(email="ada@example.com"))
    notification = Notification.objects.create(
        user=order.user, order=order, event=NotificationEvent.ORDER_PAID, title="Paid", body="Thanks"
    )
    return Delivery.objects.create(notification=notification, channel=Channel.EMAIL)


def test_a_delivery_accepted_while_postgres_restarts_is_marked_sent_once_it_is_back(
    channels_env, smtp_server, embedded_root
):
    # Given an SMTP server that stops Postgres the moment it has accepted the message
    delivery = email_delivery()
    handle_data = smtp_server.controller.handler.handle_DATA
    restarted = threading.Event()

    def restart_later():
        embedded.start_postgres(embedded_root)
        restarted.set()

    async def accept_then_stop_postgres(server, session, envelope):
        answer = await handle_data(server, session, envelope)
        await asyncio.to_thread(embedded.stop_postgres, embedded_root)
        threading.Timer(1.5, restart_later).start()
        return answer

    smtp_server.controller.handler.handle_DATA = accept_then_stop_postgres

    # When the delivery is sent
    try:
        status = services.delivery_send(delivery_id=delivery.id)
    finally:
        assert restarted.wait(30)

    # Then it is marked sent once the database is back, and the email went out once
    assert status == DeliveryStatus.SENT
    assert Delivery.objects.get(id=delivery.id).status == DeliveryStatus.SENT
    assert smtp_server.recipients() == ["ada@example.com"]
