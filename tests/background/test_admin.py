"""The admin: every model page loads; actions call services."""

import pytest
from django.urls import reverse

from catalog.models import EmbeddingStatus, ProductEmbedding
from catalog.services import embeddings_embed_stale
from celeste.background.models import FailedTask, FailedTaskStatus

from ..factories import ProductFactory, StockLevelFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "name",
    [
        "catalog_product",
        "catalog_store",
        "catalog_stocklevel",
        "background_taskswitch",
        "background_outboxmessage",
        "background_failedtask",
        "django_celery_beat_periodictask",
        "django_celery_results_taskresult",
    ],
)
def test_changelists_load(admin_client, name):
    StockLevelFactory()
    FailedTask.objects.create(task_name="catalog.embed_products", error="boom")

    assert admin_client.get(reverse(f"admin:{name}_changelist")).status_code == 200


def test_periodic_tasks_for_relay_and_sweeper_exist(admin_client):
    from django_celery_beat.models import PeriodicTask

    tasks = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {"background.relay_outbox", "catalog.sweep_stale_embeddings"} <= tasks


def test_re_embed_action_marks_products_pending(admin_client):
    product = ProductFactory()
    embeddings_embed_stale()

    admin_client.post(
        reverse("admin:catalog_product_changelist"), {"action": "re_embed", "_selected_action": [product.id]}
    )

    assert ProductEmbedding.objects.get(product=product).status == EmbeddingStatus.PENDING


def test_adding_a_product_in_the_admin_goes_through_the_service(admin_client):
    response = admin_client.post(
        reverse("admin:catalog_product_add"),
        {
            "sku": "ADM-1",
            "name": "Admin Oat Milk",
            "description": "",
            "category": "plant-based",
            "price": "1.50",
            "currency": "EUR",
            "active": "on",
            "stock_levels-TOTAL_FORMS": "0",
            "stock_levels-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content[:2000]
    assert ProductEmbedding.objects.filter(product__sku="ADM-1", status=EmbeddingStatus.PENDING).exists()


def test_discard_action(admin_client):
    job = FailedTask.objects.create(task_name="catalog.embed_products", error="boom")

    admin_client.post(
        reverse("admin:background_failedtask_changelist"), {"action": "discard", "_selected_action": [job.id]}
    )

    job.refresh_from_db()
    assert job.status == FailedTaskStatus.DISCARDED


def test_task_switch_mode_is_editable_from_the_list(admin_client):
    from celeste.background.models import TaskSwitch

    switch = TaskSwitch.objects.get(task_name="catalog.embed_products")
    response = admin_client.post(
        reverse("admin:background_taskswitch_changelist"),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": switch.id,
            "form-0-mode": "off",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    switch.refresh_from_db()
    assert switch.mode == "off"
