"""Every request has an id: the client's X-Request-ID if it is a plain token, else a
new one; the response returns it and the jobs the request enqueues store it."""

import re

import pytest

from celeste.background.models import OutboxMessage
from celeste.logs import request_id
from notifications.tasks import dispatch_order_event

from ..factories import place_order

pytestmark = pytest.mark.django_db


def mark_paid(client, order, **headers):
    return client.post(f"/api/v1/orders/{order.id}/mark-paid/", headers=headers)


def test_the_client_request_id_is_echoed_and_stored_on_the_jobs_it_enqueues(staff_client):
    order = place_order()

    response = mark_paid(staff_client, order, **{"X-Request-ID": "test-123"})

    assert response.status_code == 200
    assert response["X-Request-ID"] == "test-123"
    assert OutboxMessage.objects.get(task_name=dispatch_order_event.name).request_id == "test-123"
    assert request_id.get() == ""  # nothing of the request outlives it


@pytest.mark.parametrize("sent", ["x" * 65, "a b", "id;drop", "ünïcode", ""])
def test_an_invalid_request_id_is_replaced_by_a_generated_one(staff_client, sent):
    order = place_order()

    response = mark_paid(staff_client, order, **{"X-Request-ID": sent})

    generated = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert OutboxMessage.objects.get(task_name=dispatch_order_event.name).request_id == generated


def test_a_request_without_the_header_gets_an_id_of_its_own(api_client):
    first, second = api_client.get("/api/v1/products/"), api_client.get("/api/v1/products/")

    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_work_enqueued_outside_a_request_has_no_request_id():
    place_order()

    assert set(OutboxMessage.objects.values_list("request_id", flat=True)) == {""}
