"""Management commands and the sweeper."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from catalog.models import EmbeddingStatus, Product, ProductEmbedding, StockLevel, Store
from catalog.services import embedding_sweep, embeddings_embed_stale, stale_embeddings

from ..conftest import published, queued_messages
from ..factories import ProductFactory


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_backfill_dry_run_counts_and_changes_nothing():
    ProductFactory()
    Product.objects.create(sku="RAW-1", name="Made without the service", price="1.00")

    assert "Would embed 2 product(s)" in run("backfill_embeddings", "--dry-run")
    assert not ProductEmbedding.objects.filter(status=EmbeddingStatus.READY).exists()
    assert ProductEmbedding.objects.count() == 1


@pytest.mark.django_db
def test_backfill_embeds_stale_products_including_those_without_an_embedding_row():
    ProductFactory()
    Product.objects.create(sku="RAW-1", name="Made without the service", price="1.00")

    assert "Embedded 2 product(s)" in run("backfill_embeddings", "--batch-size", "1")
    assert not stale_embeddings().exists()
    assert ProductEmbedding.objects.filter(status=EmbeddingStatus.READY).count() == 2


@pytest.mark.django_db
def test_backfill_all_re_embeds_everything():
    ProductFactory()
    embeddings_embed_stale()
    before = ProductEmbedding.objects.get().embedded_at

    assert "Embedded 1 product(s)" in run("backfill_embeddings", "--all")
    assert ProductEmbedding.objects.get().embedded_at > before


@pytest.mark.django_db
def test_backfill_after_a_model_change_re_embeds(settings):
    ProductFactory()
    embeddings_embed_stale()

    settings.EMBEDDING_MODEL_NAME = "all-MiniLM-L6-v2-next"
    assert stale_embeddings().count() == 1
    assert "Embedded 1 product(s)" in run("backfill_embeddings")
    assert ProductEmbedding.objects.get().model_name == f"all-MiniLM-L6-v2-next@{settings.EMBEDDING_BACKEND}"


@pytest.mark.django_db
def test_backfill_after_a_backend_switch_re_embeds_every_vector(settings):
    settings.EMBEDDING_BACKEND = "torch"
    ProductFactory()
    ProductFactory()
    embeddings_embed_stale()

    settings.EMBEDDING_BACKEND = "onnx-int8"
    assert "Would embed 2 product(s)" in run("backfill_embeddings", "--dry-run")
    assert "Embedded 2 product(s)" in run("backfill_embeddings")
    assert set(ProductEmbedding.objects.values_list("model_name", flat=True)) == {"all-MiniLM-L6-v2@onnx-int8"}
    assert not stale_embeddings().exists()


@pytest.mark.django_db
def test_backfill_rejects_a_bad_batch_size():
    with pytest.raises(CommandError, match="batch-size"):
        run("backfill_embeddings", "--batch-size", "0")


@pytest.mark.django_db
def test_demo_catalog_loads_once():
    run("load_demo_catalog")
    run("load_demo_catalog")

    assert Store.objects.count() == 4
    assert Product.objects.count() == 267
    assert StockLevel.objects.count() > 500
    assert ProductEmbedding.objects.count() == 267


@pytest.mark.django_db(transaction=True)
def test_sweeper_re_enqueues_products_whose_message_was_lost(redis):
    for _ in range(70):
        ProductFactory()
    published()
    redis.flushall()  # the messages are lost

    assert embedding_sweep(stale_after_seconds=0) == 70
    assert queued_messages(redis) == 1  # one message: the task embeds until nothing is pending


@pytest.mark.django_db(transaction=True)
def test_sweeper_leaves_recently_changed_products_to_their_own_message(redis):
    ProductFactory()
    published()
    redis.flushall()

    assert embedding_sweep(stale_after_seconds=300) == 0
    assert queued_messages(redis) == 0


@pytest.mark.django_db(transaction=True)
def test_sweeper_task_runs_twice_harmlessly(redis):
    from catalog.tasks import sweep_stale_embeddings

    ProductFactory()
    while embeddings_embed_stale():
        pass
    published()
    redis.flushall()

    assert sweep_stale_embeddings.apply().get() == 0
    assert sweep_stale_embeddings.apply().get() == 0
    assert queued_messages(redis) == 0
