"""Catalog reads that need care: semantic search, what a product's embedding status is."""

from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from pgvector.django import CosineDistance

from .embeddings import model_identity
from .models import EmbeddingStatus, Product, ProductEmbedding, StockLevel


def embedding_status(product: Product) -> str:
    """Pending while the vector is missing or stale (text or model changed), even if
    the row still says ready; failed until a retry makes it anew. Needs
    ``select_related("embedding")`` on lists."""
    embedding = getattr(product, "embedding", None)
    if embedding is None:
        return EmbeddingStatus.PENDING
    stale = embedding.content_hash != product.content_hash or embedding.model_name != model_identity()
    if stale and embedding.status != EmbeddingStatus.FAILED:
        return EmbeddingStatus.PENDING
    return embedding.status


@dataclass(frozen=True)
class SearchHit:
    product: Product
    score: float  # cosine similarity, 1.0 = same direction


def product_search(
    *,
    vector,
    limit: int = 20,
    store_id: int | None = None,
    in_stock: bool | None = None,
    category: str | None = None,
    exact: bool = False,
    sort: str = "relevance",
) -> list[SearchHit]:
    """Nearest active, embedded products to ``vector``.

    Uses the HNSW index with pgvector's iterative scan, so filters that reject
    many neighbours still yield ``limit`` results. ``exact=True`` forces a
    sequential scan (the reference the benchmark measures recall against).
    ``sort="popularity"`` breaks ties: hits whose scores agree to
    SEARCH_TIE_DECIMALS decimals come most popular first (the stored score).
    """
    # Only vectors of the model and backend that embeds the query: after a switch, products
    # not yet re-embedded are left out rather than ranked against a foreign vector.
    embeddings = ProductEmbedding.objects.filter(
        product__active=True, vector__isnull=False, model_name=model_identity()
    )
    if category:
        embeddings = embeddings.filter(product__category=category)
    if store_id is not None:
        stock = StockLevel.objects.filter(product_id=OuterRef("product_id"), store_id=store_id)
        embeddings = embeddings.filter(Exists(stock))
    if in_stock is not None:
        stocked = StockLevel.objects.filter(product_id=OuterRef("product_id"), quantity__gt=0)
        if store_id is not None:
            stocked = stocked.filter(store_id=store_id)
        embeddings = embeddings.filter(Exists(stocked) if in_stock else ~Exists(stocked))
    nearest = (
        embeddings.select_related("product")
        .defer("vector")  # the hit's own 384 floats are not needed, only its distance
        .annotate(distance=CosineDistance("vector", list(vector)))
        .order_by("distance")[:limit]
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(settings.SEARCH_EF_SEARCH, limit)])
        cursor.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        rows = list(nearest)
    hits = [SearchHit(product=row.product, score=1.0 - float(row.distance)) for row in rows]
    if sort == "popularity":
        hits.sort(key=lambda hit: (-round(hit.score, settings.SEARCH_TIE_DECIMALS), -hit.product.popularity))
    return hits
