"""A product's text changing while its batch is embedded must not leave a ready vector of the old
text. Found by the load bench (2026-11-30): with product updates streaming in, five demo products
changed during their batch and kept a ready embedding of their previous text, invisible to the
embed task (it claims pending rows), until the sweeper marked them stale more than 5 minutes later."""

import threading

import pytest
from django.db import connection, transaction

from catalog import services
from catalog.models import EmbeddingStatus, Product, ProductEmbedding

from ..factories import ProductFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_text_change_in_flight_while_its_batch_is_stored_leaves_the_embedding_pending_for_the_new_text(set_switch):
    set_switch("catalog.embed_products", "off")  # no job runs by itself: the test drives the batches
    product = ProductFactory(name="Oat milk", description="Creamy oat drink")
    changed, release = threading.Event(), threading.Event()

    def edit():  # a staff edit whose transaction is still open while the batch is stored
        try:
            with transaction.atomic():
                services.product_update(product=Product.objects.get(id=product.id), name="Cordless drill")
                changed.set()
                release.wait(30)
        finally:
            connection.close()

    editor = threading.Thread(target=edit)
    editor.start()
    try:
        assert changed.wait(30)
        assert services.embeddings_embed_stale() == 1  # the committed (old) text, claimed and encoded
    finally:
        release.set()
        editor.join(30)

    row = ProductEmbedding.objects.get(product=product)
    assert row.status == EmbeddingStatus.PENDING  # its text changed meanwhile: not ready
    assert product.id in services.pending_embeddings().values_list("product_id", flat=True)

    assert services.embeddings_embed_pending(lanes=1) == 1
    row.refresh_from_db()
    product.refresh_from_db()
    assert (row.status, row.content_hash) == (EmbeddingStatus.READY, product.content_hash)


def test_a_batch_whose_texts_did_not_change_is_ready(set_switch):
    set_switch("catalog.embed_products", "off")
    products = [ProductFactory() for _ in range(3)]

    assert services.embeddings_embed_stale() == 3

    for product in products:
        row = ProductEmbedding.objects.get(product=product)
        assert (row.status, row.content_hash) == (EmbeddingStatus.READY, product.content_hash)
