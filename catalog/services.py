"""Catalog writes. Every write to products, stores and stock goes through here."""

import logging
import math
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from celeste.background.queue import enqueue

from . import embeddings
from .models import EmbeddingStatus, Product, ProductEmbedding, StockLevel, Store

logger = logging.getLogger(__name__)

EMBED_TASK = "catalog.embed_products"
PRODUCT_FIELDS = ("sku", "name", "description", "category", "price", "currency", "active")


@transaction.atomic
def store_create(*, code: str, name: str, city: str = "", active: bool = True) -> Store:
    return Store.objects.create(code=code, name=name, city=city, active=active)


@transaction.atomic
def store_update(*, store: Store, **fields) -> Store:
    for field, value in fields.items():
        setattr(store, field, value)
    store.save()
    return store


@transaction.atomic
def product_create(
    *,
    sku: str,
    name: str,
    price: Decimal,
    description: str = "",
    category: str = "",
    currency: str = settings.DEFAULT_CURRENCY,
    active: bool = True,
) -> Product:
    """Create a product; its embedding starts pending and is made in the background."""
    product = Product(
        sku=sku, name=name, description=description, category=category, price=price, currency=currency, active=active
    )
    product.save()
    ProductEmbedding.objects.create(product=product)
    return product


@transaction.atomic
def product_update(*, product: Product, **fields) -> Product:
    """Change product fields. A change to the embedded text makes the embedding
    stale (the post_save receiver enqueues it); price or stock changes do not."""
    unknown = set(fields) - set(PRODUCT_FIELDS)
    if unknown:
        raise ValueError(f"Unknown product fields: {sorted(unknown)}")
    for field, value in fields.items():
        setattr(product, field, value)
    product.save()
    return product


@transaction.atomic
def stock_level_set(*, product: Product, store: Store, quantity: int) -> StockLevel:
    if quantity < 0:
        raise ValueError("quantity must not be negative")
    level, _ = StockLevel.objects.update_or_create(product=product, store=store, defaults={"quantity": quantity})
    return level


# --- embeddings ---------------------------------------------------------------


def stale_embeddings():
    """Embeddings of active products whose vector is missing, out of date, or from another model."""
    return ProductEmbedding.objects.filter(product__active=True).filter(
        ~Q(content_hash=F("product__content_hash")) | ~Q(model_name=settings.EMBEDDING_MODEL_NAME)
    )


def embeddings_embed_stale(*, batch_size: int | None = None) -> int:
    """Claim up to ``batch_size`` stale embeddings and embed them in one model call.

    Rows are locked with SKIP LOCKED for the whole batch, so concurrent workers
    take different batches and a killed worker's rows simply become claimable
    again. Returns how many were embedded (0: nothing was stale).
    """
    batch_size = batch_size or settings.EMBEDDING_BATCH_SIZE
    claimed_ids = []
    try:
        with transaction.atomic():
            rows = list(
                stale_embeddings()
                .select_related("product")
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("product__updated_at")[:batch_size]
            )
            if not rows:
                return 0
            claimed_ids = [row.product_id for row in rows]
            vectors = embeddings.encode([row.product.embedding_text() for row in rows])
            now = timezone.now()
            for row, vector in zip(rows, vectors):
                row.vector = vector
                row.model_name = settings.EMBEDDING_MODEL_NAME
                # The hash read with the claim: if the text changed since, the row stays stale.
                row.content_hash = row.product.content_hash
                row.status = EmbeddingStatus.READY
                row.error = ""
                row.embedded_at = now
                row.attempts = F("attempts") + 1
                row.save(
                    update_fields=["vector", "model_name", "content_hash", "status", "error", "embedded_at", "attempts"]
                )
    except Exception as exc:
        if claimed_ids:
            ProductEmbedding.objects.filter(product_id__in=claimed_ids).update(
                status=EmbeddingStatus.FAILED, error=repr(exc)[:2000], attempts=F("attempts") + 1
            )
        raise
    logger.info("embedding.batch_done", extra={"count": len(claimed_ids)})
    return len(claimed_ids)


def _enqueue_embed_batches(count: int) -> int:
    batches = math.ceil(count / settings.EMBEDDING_BATCH_SIZE)
    for _ in range(batches):
        enqueue(EMBED_TASK)
    return batches


@transaction.atomic
def embeddings_reset(*, product_ids: list[int]) -> int:
    """Force a re-embed of these products (admin action)."""
    count = ProductEmbedding.objects.filter(product_id__in=product_ids).update(
        content_hash="", status=EmbeddingStatus.PENDING, error=""
    )
    _enqueue_embed_batches(count)
    return count


def embeddings_create_missing() -> int:
    """Give every product an embedding row (products made outside product_create)."""
    missing = Product.objects.filter(embedding__isnull=True).values_list("id", flat=True)
    rows = [ProductEmbedding(product_id=pid) for pid in missing]
    ProductEmbedding.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@transaction.atomic
def embedding_sweep(*, stale_after_seconds: int) -> int:
    """Enqueue embed batches for products stale for longer than the threshold:
    the last line of defence if a message was ever lost. Returns batches enqueued."""
    embeddings_create_missing()
    cutoff = timezone.now() - timezone.timedelta(seconds=stale_after_seconds)
    count = stale_embeddings().filter(product__updated_at__lte=cutoff).count()
    batches = _enqueue_embed_batches(count)
    if batches:
        logger.info("embedding.sweep_enqueued", extra={"stale": count, "batches": batches})
    return batches


def embeddings_recover() -> int:
    """Run when a worker starts: whatever is stale now gets enqueued, so work a
    killed worker held is picked up without waiting for the sweeper."""
    return embedding_sweep(stale_after_seconds=0)
