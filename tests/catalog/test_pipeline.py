"""The embedding pipeline end to end, with real Celery workers crossing the queue."""

import pytest
from django.urls import reverse

from catalog.models import EmbeddingStatus, Product, ProductEmbedding
from catalog.services import product_create
from celeste import metrics
from celeste.background.models import FailedTask, FailedTaskStatus, OutboxMessage
from celeste.background.services import failed_task_retry
from celeste.devserver import embedded

from ..conftest import published, wait_for
from ..factories import UserFactory

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TEXTS = [
    ("Oat Milk", "Creamy dairy-free oat drink"),
    ("Cordless Drill", "18V drill with two batteries"),
    ("Espresso Beans", "Dark roasted whole coffee beans"),
    ("Dish Soap", "Lemon washing-up liquid"),
]


def product_payload(i: int) -> dict:
    name, description = TEXTS[i % len(TEXTS)]
    return {"sku": f"P-{i:05d}", "name": f"{name} #{i}", "description": description, "price": "1.99"}


def ready_count() -> int:
    return ProductEmbedding.objects.filter(status=EmbeddingStatus.READY).count()


def all_embedded(expected: int):
    return lambda: ready_count() == expected and not _stale_exists()


def _stale_exists() -> bool:
    from catalog.services import stale_embeddings

    return stale_embeddings().exists()


def test_200_products_created_through_the_api_are_all_embedded_in_few_model_calls(worker, staff_client):
    calls_before = metrics.sample_value("celeste_embedding_encode_calls_total")

    for i in range(200):
        response = staff_client.post("/api/v1/products/", product_payload(i), format="json")
        assert response.status_code == 201, response.content

    wait_for(all_embedded(200), timeout=180, message="200 products embedded")
    encode_calls = metrics.sample_value("celeste_embedding_encode_calls_total") - calls_before
    assert 1 <= encode_calls <= 60, encode_calls
    assert staff_client.get(f"/api/v1/products/{Product.objects.first().id}/").json()["embedding_status"] == "ready"


def test_products_created_while_redis_is_down_wait_in_the_outbox_and_are_embedded_when_it_is_back(
    worker, beat, staff_client, redis, embedded_root
):
    embedded.stop_redis(embedded_root)

    for i in range(20):
        response = staff_client.post("/api/v1/products/", product_payload(i), format="json")
        assert response.status_code == 201, response.content
    published()
    assert OutboxMessage.objects.count() == 20
    assert ready_count() == 0

    embedded.start_redis(embedded_root)

    wait_for(all_embedded(20), timeout=120, message="products embedded after Redis came back")
    wait_for(lambda: OutboxMessage.objects.count() == 0, timeout=30, message="every job finished")


def test_worker_killed_mid_batch_loses_nothing(start_worker):
    first = start_worker()
    for i in range(400):
        name, description = TEXTS[i % len(TEXTS)]
        product_create(sku=f"K-{i:05d}", name=f"{name} {i}", description=description, price="1.00")

    wait_for(lambda: 0 < ready_count(), timeout=120, message="the first batch")
    first.kill()
    assert ready_count() < 400, "the worker finished before it could be killed"

    start_worker()
    wait_for(all_embedded(400), timeout=180, message="every product embedded after restart")


def test_failed_embedding_lands_in_the_inbox_and_the_admin_retry_embeds_it(start_worker, client):
    broken = start_worker(EMBEDDING_MODEL="/nonexistent/model")
    product = product_create(sku="F-1", name="Oat Milk", description="Dairy-free", price="1.00")

    failed = wait_for(
        lambda: FailedTask.objects.filter(task_name="catalog.embed_products").first(),
        timeout=90,
        message="the failed task in the inbox",
    )
    assert failed.attempts == 2  # first run + TASK_MAX_RETRIES=1
    embedding = ProductEmbedding.objects.get(product=product)
    assert embedding.status == EmbeddingStatus.FAILED
    assert "nonexistent" in embedding.error
    broken.stop()

    start_worker()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    response = client.post(
        reverse("admin:background_failedtask_changelist"),
        {"action": "retry", "_selected_action": [failed.id]},
    )
    assert response.status_code == 302

    wait_for(all_embedded(1), timeout=90, message="the product embedded after Retry")
    failed.refresh_from_db()
    assert failed.status == FailedTaskStatus.RETRIED


def test_retrying_a_failed_embed_job_embeds_the_product_in_the_same_worker(start_worker, tmp_path, settings):
    """No new worker (whose start-up recovery would embed it anyway): only the retry can."""
    # Given an embed job that ran out of retries because the model was not where the worker looks
    model = tmp_path / "model"
    start_worker(EMBEDDING_MODEL=str(model))
    product = product_create(sku="R-1", name="Oat Milk", description="Dairy-free", price="1.00")
    failed = wait_for(
        lambda: FailedTask.objects.filter(task_name="catalog.embed_products").first(),
        timeout=90,
        message="the failed task in the inbox",
    )
    assert ProductEmbedding.objects.get(product=product).status == EmbeddingStatus.FAILED

    # When the model is put in place and staff retry the job
    model.symlink_to(settings.EMBEDDING_MODEL)
    failed_task_retry(failed_task_ids=[failed.id])

    # Then the same worker embeds the product
    wait_for(all_embedded(1), timeout=90, message="the product embedded after the retry")


def test_embed_task_running_twice_gives_the_same_result(worker, redis):
    from catalog.tasks import embed_products

    product = product_create(sku="I-1", name="Rye Bread", description="Dense and dark", price="2.00")
    wait_for(all_embedded(1), timeout=90, message="first embedding")
    first = ProductEmbedding.objects.get(product=product)

    result = embed_products.delay()
    assert result.get(timeout=30) == 0

    again = ProductEmbedding.objects.get(product=product)
    assert (again.status, again.content_hash, again.embedded_at) == (
        first.status,
        first.content_hash,
        first.embedded_at,
    )
    assert list(again.vector) == list(first.vector)
