"""Backpressure: past a queue's maximum depth enqueue() applies the task's
overflow policy — refuse (the API answers 503 with Retry-After and nothing of the
request is stored), run inline (sync) or drop with a count. No worker consumes
here, so the queue stays as full as the test makes it."""

import pytest
from django.db import transaction

from catalog.models import Product
from catalog.tasks import embed_products
from celeste import metrics
from celeste.background.backpressure import Overflow, over_limit
from celeste.background.errors import QueueFull
from celeste.background.models import OutboxMessage, QueueLimit
from celeste.background.queue import enqueue
from celeste.background.tasks import ping
from orders.cache import enriched_order_get
from orders.models import Order, OrderStatus
from orders.tasks import cache_enriched_order

from ..conftest import published
from ..factories import place_order


def overflowed(task, policy) -> float:
    return metrics.sample_value("celeste_task_overflow_total", {"name": task.name, "policy": policy})


def fill_fast_queue(redis):
    """Two more messages in the fast queue, and then it may hold no more."""
    published()
    waiting = redis.llen("fast")
    QueueLimit.objects.create(queue="fast", max_depth=waiting + 2)
    enqueue(ping)
    enqueue(ping)
    published()
    assert redis.llen("fast") == waiting + 2


def test_below_the_limit_nothing_changes(db, redis):
    QueueLimit.objects.create(queue="fast", max_depth=5)

    assert over_limit("fast") is None
    assert enqueue(ping) is not None


@pytest.mark.django_db(transaction=True)
def test_a_task_that_refuses_overflow_raises_and_its_transaction_stores_nothing(redis):
    fill_fast_queue(redis)
    before = OutboxMessage.objects.count()

    with pytest.raises(QueueFull, match="'fast' queue is full"):
        with transaction.atomic():
            enqueue(ping)

    assert OutboxMessage.objects.count() == before
    assert ping.overflow == Overflow.REFUSE


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_503_with_retry_after_and_keeps_the_order_as_it_was(redis, staff_client, settings):
    settings.QUEUE_FULL_RETRY_AFTER_SECONDS = 7
    order = place_order()
    Order.objects.filter(id=order.id).update(status=OrderStatus.PAID)
    fill_fast_queue(redis)
    jobs = OutboxMessage.objects.count()

    response = staff_client.post(f"/api/v1/orders/{order.id}/confirm/")

    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    assert "queue is full" in response.json()["detail"]
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID  # the transition rolled back with the refused job
    assert OutboxMessage.objects.count() == jobs


@pytest.mark.django_db(transaction=True)
def test_a_task_that_runs_inline_on_overflow_does_its_work_after_commit(redis):
    order = place_order()
    fill_fast_queue(redis)
    before = overflowed(cache_enriched_order, "sync")

    with transaction.atomic():
        assert enqueue(cache_enriched_order, order_id=order.id) is None

    assert enriched_order_get(order.id) is not None  # filled in this process
    assert not OutboxMessage.objects.filter(task_name=cache_enriched_order.name).exists()
    assert overflowed(cache_enriched_order, "sync") == before + 1


def test_a_task_a_sweeper_redoes_is_dropped_with_a_count(db, redis, staff_client):
    QueueLimit.objects.create(queue="slow", max_depth=0)
    before = overflowed(embed_products, "drop")

    response = staff_client.post(
        "/api/v1/products/", {"sku": "BP-1", "name": "Oat drink", "price": "2.00"}, format="json"
    )

    assert response.status_code == 201
    assert Product.objects.filter(sku="BP-1").exists()  # the write is kept; the embedding waits for the sweeper
    assert not OutboxMessage.objects.filter(task_name=embed_products.name).exists()
    assert overflowed(embed_products, "drop") == before + 1


def test_the_settings_limit_applies_without_an_admin_override(transactional_db, redis, settings):
    settings.QUEUE_MAX_DEPTHS = {"fast": 1}
    enqueue(ping)
    published()

    with pytest.raises(QueueFull):
        enqueue(ping)
