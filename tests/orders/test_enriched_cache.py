"""Enriched orders pre-cached after payment, invalidated on every change."""

import json
from decimal import Decimal

import pytest

from celeste import metrics
from celeste.devserver import embedded
from orders import services
from orders.cache import enriched_order_get, enriched_order_set
from orders.enriched import enriched_order_build, enriched_order_refresh
from orders.models import OrderItem
from orders.payments import SIGNATURE_HEADER, signature_header
from orders.selectors import orders_with_relations
from orders.tasks import cache_enriched_order

from ..conftest import published, wait_for
from ..factories import UserFactory, place_order

ALL = {"include": "products,stores,addresses"}


def cache_lookups(result: str) -> float:
    return metrics.sample_value("celeste_order_cache_requests_total", {"result": result})


def detail(client, order):
    response = client.get(f"/api/v1/orders/{order.id}/", ALL)
    assert response.status_code == 200, response.content
    return response.json()


def cached(order):
    return enriched_order_get(order.id)


@pytest.fixture
def owner():
    return UserFactory()


@pytest.fixture
def owner_client(api_client, owner):
    api_client.force_authenticate(owner)
    return api_client


@pytest.fixture
def paid_order(owner, redis):
    order = place_order(user=owner, lines=((Decimal("3.00"), 1), (Decimal("1.50"), 2)))
    services.order_mark_paid(order_id=order.id)
    assert enriched_order_refresh(order_id=order.id)
    return order


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_payment_fills_the_cache_through_a_real_worker(worker, owner, owner_client, settings):
    settings.PAYMENT_WEBHOOK_SECRETS = ["whsec_cache_test"]
    order = place_order(user=owner)
    body = json.dumps(
        {
            "id": "evt_cache",
            "type": "payment.succeeded",
            "data": {"order_number": order.number, "amount": str(order.total), "currency": "EUR"},
        }
    ).encode()

    response = owner_client.post(
        "/api/v1/payments/webhook",
        data=body,
        content_type="application/json",
        headers={SIGNATURE_HEADER: signature_header(body=body, secrets=["whsec_cache_test"])},
    )
    assert response.status_code == 200

    entry = wait_for(lambda: cached(order), timeout=60, message="the enriched order in Redis")
    hits = cache_lookups("hit")
    served = detail(owner_client, order)
    assert cache_lookups("hit") == hits + 1
    assert served == json.loads(entry[1])
    assert served["status"] == "paid"
    assert served == enriched_order_build(orders_with_relations().get(id=order.id))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_cache_job_that_failed_with_redis_down_fills_the_cache_when_retried(
    start_worker, owner, embedded_root, set_switch
):
    from celeste.background.models import FailedTask
    from celeste.background.services import failed_task_retry

    # Given a cache job that ran out of retries while Redis was down
    set_switch("catalog.embed_products", "off")  # no model load in the worker: not what this is about
    order = place_order(user=owner)
    published()
    embedded.stop_redis(embedded_root)
    cache_enriched_order.apply(kwargs={"order_id": order.id})
    embedded.start_redis(embedded_root)
    job = FailedTask.objects.get(task_name="orders.cache_enriched_order")
    assert cached(order) is None

    # When staff retry it with Redis back
    start_worker()
    failed_task_retry(failed_task_ids=[job.id])

    # Then the order is cached, exactly as the API renders it
    entry = wait_for(lambda: cached(order), timeout=30, message="the enriched order in Redis")
    assert json.loads(entry[1]) == enriched_order_build(orders_with_relations().get(id=order.id))


@pytest.mark.django_db
def test_cached_and_cold_answers_are_identical(paid_order, owner_client, redis):
    hot = detail(owner_client, paid_order)
    redis.flushall()
    misses = cache_lookups("miss")

    cold = detail(owner_client, paid_order)

    assert hot == cold
    assert cache_lookups("miss") == misses + 1


@pytest.mark.django_db
def test_a_hit_is_counted(paid_order, owner_client):
    hits = cache_lookups("hit")

    detail(owner_client, paid_order)

    assert cache_lookups("hit") == hits + 1


@pytest.mark.django_db
def test_the_cache_task_is_idempotent(paid_order):
    first = cached(paid_order)

    cache_enriched_order.apply(kwargs={"order_id": paid_order.id}).get()
    cache_enriched_order.apply(kwargs={"order_id": paid_order.id}).get()

    assert cached(paid_order) == first


@pytest.mark.django_db
def test_another_customers_cached_order_is_still_a_404(paid_order, api_client):
    api_client.force_authenticate(UserFactory())

    assert api_client.get(f"/api/v1/orders/{paid_order.id}/", ALL).status_code == 404


@pytest.mark.django_db
def test_a_status_change_invalidates(paid_order, owner_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.order_confirm(order_id=paid_order.id)

    assert cached(paid_order) is None
    assert detail(owner_client, paid_order)["status"] == "confirmed"


@pytest.mark.django_db
def test_an_order_change_invalidates(paid_order, owner_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.order_record_payment_error(order=paid_order, error="chargeback")

    assert cached(paid_order) is None
    assert detail(owner_client, paid_order)["payment_error"] == "chargeback"


@pytest.mark.django_db
def test_an_item_change_invalidates(paid_order, owner_client, django_capture_on_commit_callbacks):
    item = OrderItem.objects.filter(order=paid_order).first()
    with django_capture_on_commit_callbacks(execute=True):
        item.product_name = "Corrected name"
        item.save()

    assert cached(paid_order) is None
    assert "Corrected name" in [i["product_name"] for i in detail(owner_client, paid_order)["items"]]


@pytest.mark.django_db
def test_an_address_change_invalidates(paid_order, owner_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.address_update(address=paid_order.address, city="Hamburg")

    assert cached(paid_order) is None
    assert detail(owner_client, paid_order)["address"]["city"] == "Hamburg"


@pytest.mark.django_db
def test_a_copy_that_missed_its_invalidation_is_never_served(paid_order, owner_client):
    entry = cached(paid_order)
    services.order_confirm(order_id=paid_order.id)  # no on-commit: the invalidation never ran
    enriched_order_set(paid_order.id, version=entry[0], order=json.loads(entry[1]))

    assert detail(owner_client, paid_order)["status"] == "confirmed"
    assert cached(paid_order) is None


@pytest.mark.django_db
def test_a_product_change_is_not_served_stale(paid_order, owner_client):
    product = OrderItem.objects.filter(order=paid_order).first().product
    product.description = "New description"
    product.save()

    served = detail(owner_client, paid_order)

    assert "New description" in [i["product"]["description"] for i in served["items"]]


@pytest.mark.django_db
def test_with_redis_down_the_detail_still_answers_from_the_database(paid_order, owner_client, embedded_root):
    embedded.stop_redis(embedded_root)

    assert detail(owner_client, paid_order)["status"] == "paid"


@pytest.mark.django_db
def test_a_stale_copy_counts_as_a_miss(paid_order, owner_client):
    entry = cached(paid_order)
    services.order_confirm(order_id=paid_order.id)
    enriched_order_set(paid_order.id, version=entry[0], order=json.loads(entry[1]))
    hits, misses = cache_lookups("hit"), cache_lookups("miss")

    detail(owner_client, paid_order)

    assert cache_lookups("hit") == hits
    assert cache_lookups("miss") == misses + 1


@pytest.mark.django_db
def test_a_hit_is_the_exact_bytes_the_api_renders_cold(paid_order, owner_client, redis):
    hot = owner_client.get(f"/api/v1/orders/{paid_order.id}/", ALL, HTTP_ACCEPT="application/json")
    redis.flushall()
    cold = owner_client.get(f"/api/v1/orders/{paid_order.id}/", ALL, HTTP_ACCEPT="application/json")

    assert hot.content == cold.content
    assert hot["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_the_browsable_api_still_renders_a_hit(paid_order, owner_client):
    response = owner_client.get(f"/api/v1/orders/{paid_order.id}/", {**ALL, "format": "api"})

    assert response.status_code == 200
    assert paid_order.number in response.content.decode()
