"""An embed job's lanes: threads that each claim and embed their own batches."""

import logging

import pytest
from django.db import transaction

from catalog import tasks
from catalog.models import EmbeddingStatus, ProductEmbedding
from catalog.services import LaneGroup, embeddings_embed_pending
from celeste.background import ledger

from ..factories import ProductFactory


@pytest.mark.django_db(transaction=True)
def test_lanes_share_a_backlog_and_embed_each_product_once(settings, caplog):
    settings.EMBEDDING_LANES, settings.EMBEDDING_BATCH_SIZE, settings.EMBEDDING_BATCH_WAIT_SECONDS = 2, 8, 0
    ProductFactory.create_batch(80)

    with caplog.at_level(logging.INFO, logger="catalog.services"):
        assert embeddings_embed_pending() == 80

    rows = ProductEmbedding.objects.all()
    assert {(row.status, row.attempts) for row in rows} == {(EmbeddingStatus.READY, 1)}  # none embedded twice
    lanes = {r.threadName for r in caplog.records if r.getMessage() == "embedding.batch_done"}
    assert len(lanes) == 2 and all(name.startswith("embed-lane") for name in lanes)


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_one_lane_embeds_what_it_has_not_committed(settings):
    """Lanes on other connections would not see these rows and embed nothing."""
    settings.EMBEDDING_LANES, settings.EMBEDDING_BATCH_WAIT_SECONDS = 2, 0
    with transaction.atomic():
        ProductFactory.create_batch(3)
        assert embeddings_embed_pending() == 3
    assert set(ProductEmbedding.objects.values_list("status", flat=True)) == {EmbeddingStatus.READY}


def test_lanes_stop_together_when_none_finds_anything():
    """A lane that found nothing keeps polling while another still embeds, and once none found
    anything all stop: a lane stopping on its own, or going on alone, left the rest of a
    growing burst to one lane (80 instead of 150 products/s)."""
    group = LaneGroup(2)
    assert not group.found(0, True)
    assert not group.found(1, False)  # lane 0 is still embedding: lane 1 polls on
    assert not group.found(1, True)  # the burst grew: lane 1 embeds again
    assert not group.found(0, False)
    assert group.found(1, False)  # neither found anything: both stop
    assert group.found(0, True) and group.stopped  # for good: later saves get a job of their own


@pytest.mark.django_db(transaction=True)
def test_run_inline_the_embed_job_takes_one_lane_on_the_callers_connection(settings, caplog, monkeypatch):
    """The sync switch runs the job in the web request (as ``run_inline`` does, by calling
    it): lanes' connections would cost the request more than they save."""
    monkeypatch.setattr(ledger, "_worker_id", "")  # a web process, not a worker
    settings.EMBEDDING_LANES, settings.EMBEDDING_BATCH_WAIT_SECONDS = 2, 0
    ProductFactory.create_batch(3)

    with caplog.at_level(logging.INFO, logger="catalog.services"):
        assert tasks.embed_products() == 3

    assert [r.threadName for r in caplog.records if r.getMessage() == "embedding.batch_done"] == ["MainThread"]
