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
            "images-TOTAL_FORMS": "0",
            "images-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302, response.content[:2000]
    assert ProductEmbedding.objects.filter(product__sku="ADM-1", status=EmbeddingStatus.PENDING).exists()


def test_discard_action_lists_the_jobs_first_then_discards(admin_client):
    job = FailedTask.objects.create(task_name="catalog.embed_products", error="boom")
    discard = {"action": "discard", "_selected_action": [job.id]}
    changelist = reverse("admin:background_failedtask_changelist")

    page = admin_client.post(changelist, discard).content.decode()
    job.refresh_from_db()
    assert job.status == FailedTaskStatus.OPEN
    assert f"#{job.id} catalog.embed_products()" in page and "Yes, discard 1 job(s)" in page

    admin_client.post(changelist, {**discard, "confirmed": "yes"})
    job.refresh_from_db()
    assert job.status == FailedTaskStatus.DISCARDED


def test_a_switch_is_changed_on_its_page_with_who_and_why_recorded(admin_client):
    from celeste.background.models import TaskSwitch

    switch = TaskSwitch.objects.get(task_name="catalog.embed_products")
    url = reverse("admin:background_taskswitch_change", args=[switch.id])
    form = {"task_name": switch.task_name, "mode": "off", "note": "model upgrade", "breaker_error_rate": 0.5}
    form |= {"breaker_min_runs": 20, "breaker_window_seconds": 300, "breaker_fallback": "sync"}
    form |= {"breaker_cooldown_seconds": 300, "breaker_trial_runs": 3, "changes-TOTAL_FORMS": 0}
    form |= {"changes-INITIAL_FORMS": 0}

    page = admin_client.get(url).content.decode()
    response = admin_client.post(url, form)

    assert "Embed whatever is pending when it runs" in page  # the task's docstring
    assert "Redone: products saved while off" in page
    assert response.status_code == 302, response.content[:3000]
    switch.refresh_from_db()
    change = switch.changes.get()
    assert (switch.mode, change.from_mode, change.to_mode) == ("off", "background", "off")
    assert change.reason == "model upgrade"
    assert "model upgrade" in admin_client.get(url).content.decode()
