"""Catalog reads that need care: search (semantic, keyword, hybrid), what a product's embedding status is."""

import json
import math
import time
import weakref
from dataclasses import dataclass
from itertools import groupby

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import (
    BooleanField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Prefetch,
    Q,
    Value,
    prefetch_related_objects,
)
from django.db.models.expressions import RawSQL
from pgvector import HalfVector
from pgvector.django import CosineDistance

from .embeddings import model_identity
from .models import SEARCH_CONFIG, EmbeddingStatus, Product, ProductEmbedding, ProductImage, StockLevel


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


def product_images_prefetch(lookup: str = "images", to_attr: str | None = None) -> Prefetch:
    """Products' images with their variants in two queries, whatever the number of
    products (``lookup``: the path to the images, e.g. ``product__images`` from order items;
    ``to_attr``: a list attribute to put them in instead of the ``images`` manager's cache)."""
    return Prefetch(lookup, queryset=ProductImage.objects.prefetch_related("variants"), to_attr=to_attr)


class SearchMode(models.TextChoices):
    HYBRID = "hybrid", "Hybrid"
    SEMANTIC = "semantic", "Semantic"
    KEYWORD = "keyword", "Keyword"


@dataclass(frozen=True)
class SearchHit:
    product: Product
    # semantic: cosine similarity (1.0 = same direction); keyword: text rank plus name
    # similarity; hybrid: the fused score, 1.0 = first in both arms.
    score: float


@dataclass(frozen=True)
class _Filters:
    store_id: int | None
    in_stock: bool | None
    category: str | None

    @property
    def active(self) -> bool:
        return self.store_id is not None or self.in_stock is not None or bool(self.category)

    def apply(self, queryset, prefix: str = ""):
        """Active products passing the filters; ``prefix`` reaches the product from the queryset's
        model. Both arms use it, so both fill ``limit`` from products that pass."""
        queryset = queryset.filter(**{f"{prefix}active": True})
        if self.category:
            queryset = queryset.filter(**{f"{prefix}category": self.category})
        # Both models' primary key is the product id.
        if self.store_id is not None:
            stock = StockLevel.objects.filter(product_id=OuterRef("pk"), store_id=self.store_id)
            queryset = queryset.filter(Exists(stock))
        if self.in_stock is not None:
            stocked = StockLevel.objects.filter(product_id=OuterRef("pk"), quantity__gt=0)
            if self.store_id is not None:
                stocked = stocked.filter(store_id=self.store_id)
            queryset = queryset.filter(Exists(stocked) if self.in_stock else ~Exists(stocked))
        return queryset


def product_search(
    *,
    query: str = "",
    vector=None,
    mode: str = SearchMode.HYBRID,
    limit: int = 20,
    store_id: int | None = None,
    in_stock: bool | None = None,
    category: str | None = None,
    exact: bool = False,
    sort: str = "relevance",
) -> list[SearchHit]:
    """Active products matching ``query`` (its text; ``vector`` is its embedding), best first.

    ``semantic``: nearest embedded products to ``vector`` (HNSW with pgvector's iterative scan,
    so filters that reject many neighbours still yield ``limit``; ``exact=True`` reads every
    product passing the filters instead, the reference the benchmark measures recall against).
    ``keyword``: the weighted tsvector, trigram similarity of the name (misspellings) and SKU
    prefixes; a product whose SKU is ``query`` comes first. ``hybrid``: both arms fused by reciprocal rank, the exact
    SKU first. ``sort="popularity"`` breaks ties: hits whose scores agree to SEARCH_TIE_DECIMALS
    decimals and are neighbours in the order come most popular first (the stored score).
    """
    filters = _Filters(store_id=store_id, in_stock=in_stock, category=category)
    if mode == SearchMode.SEMANTIC:
        hits = _semantic(vector, limit=limit, filters=filters, exact=exact)
    elif mode == SearchMode.KEYWORD:
        hits = [SearchHit(hit.product, hit.score) for hit in _keyword(query, limit=limit, filters=filters)]
    else:
        hits = _hybrid(query, vector, limit=limit, filters=filters, exact=exact)
    if sort == "popularity":
        # Only neighbours in the relevance order trade places: the exact SKU and keyword mode's
        # strong matches keep their place ahead of hits that merely score higher.
        runs = groupby(hits, key=lambda hit: round(hit.score, settings.SEARCH_TIE_DECIMALS))
        hits = [hit for _, run in runs for hit in sorted(run, key=lambda hit: -hit.product.popularity)]
    prefetch_related_objects([hit.product for hit in hits], product_images_prefetch())
    return hits


def _semantic(vector, *, limit: int, filters: _Filters, exact: bool = False) -> list[SearchHit]:
    """Nearest embedded products by cosine distance, through the HNSW index, or by reading every
    product that passes the filters (``exact``, or when few pass: see :func:`_ef_search`)."""
    embeddings = _embeddings(filters)
    nearest = (
        embeddings.select_related("product")
        .defer("vector")  # the hit's own 384 floats are not needed, only its distance
        .annotate(distance=CosineDistance("vector", HalfVector(list(vector))))
    )
    ef = None if exact else _ef_search(embeddings, limit=limit, filtered=filters.active)
    if ef is None:
        # "distance + 0" is no index's order: the planner reads the rows passing the filters (by
        # any other index) and sorts them all by distance.
        rows = list(nearest.order_by(F("distance") + 0)[:limit])
    else:
        _set_index_scan(ef)
        # Relaxed order: a filtered scan that goes on past its first ef_search candidates may find
        # nearer ones than it already returned; strict order drops those (in a graph of many dead
        # tuples, perhaps the only live match). Sorted here instead.
        rows = sorted(nearest.order_by("distance")[:limit], key=lambda row: row.distance)
    return [SearchHit(product=row.product, score=1.0 - float(row.distance)) for row in rows]


# Per database connection, the ef_search it was last left with (outside a transaction).
_index_scan_set: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _set_index_scan(ef: int) -> None:
    """Session settings for the HNSW scans, not SET LOCAL: no BEGIN and COMMIT round trips around
    each search, and none at all while a connection is already set so (only these index scans
    read them). Set inside a transaction, a rollback may undo them: not remembered then."""
    connection.ensure_connection()
    raw = connection.connection
    if _index_scan_set.get(raw) == ef:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', 'relaxed_order', false)",
            [str(ef)],
        )
    if connection.in_atomic_block:
        _index_scan_set.pop(raw, None)
    else:
        _index_scan_set[raw] = ef


def _embeddings(filters: _Filters):
    # Only vectors of the model and backend that embeds the query: after a switch, products
    # not yet re-embedded are left out rather than ranked against a foreign vector.
    return filters.apply(
        ProductEmbedding.objects.filter(vector__isnull=False, model_name=model_identity()), prefix="product__"
    )


# pgvector's upper bound for hnsw.ef_search.
MAX_EF_SEARCH = 1000
# SEARCH_EF_SEARCH=0 (the default) sizes ef_search with the index, as measured with
# `python -m bench search`: 200 keeps recall@10 >= 0.95 at 100k products (0.96), and is what a
# search of a small catalog can afford (300 made it 0.112x the exact scan, target 0.1); at 1M it
# takes 300 (recall 0.954-0.966 in two runs, against 0.938-0.948 at 200).
EF_SEARCH_SMALL, EF_SEARCH_LARGE, LARGE_INDEX_ROWS = 200, 300, 500_000
# How long a process keeps the index's size (a planner statistic) before reading it again.
INDEX_SIZE_TTL_SECONDS = 60
_index_size_read: tuple[float, int] = (0.0, 0)  # (when it expires, the ef_search it gave)


def ef_search_for_size(indexed_rows: float) -> int:
    """The base ef_search for an index of about ``indexed_rows`` vectors (-1: never analysed)."""
    return EF_SEARCH_LARGE if indexed_rows >= LARGE_INDEX_ROWS else EF_SEARCH_SMALL


def ef_search_configured() -> int:
    """SEARCH_EF_SEARCH if set, else the ef_search for the index's current size (read now)."""
    return settings.SEARCH_EF_SEARCH or ef_search_for_size(indexed_rows_estimate())


def ef_search_base() -> int:
    """``ef_search_configured``, with the index's size read at most every INDEX_SIZE_TTL_SECONDS:
    not a round trip per search."""
    global _index_size_read
    if settings.SEARCH_EF_SEARCH:
        return settings.SEARCH_EF_SEARCH
    expires, ef = _index_size_read
    if time.monotonic() >= expires:
        ef = ef_search_configured()
        _index_size_read = (time.monotonic() + INDEX_SIZE_TTL_SECONDS, ef)
    return ef


def indexed_rows_estimate() -> float:
    """The planner's row count of the embedding table (pg_class.reltuples; -1 before the first
    ANALYZE): a catalog read, no scan."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [ProductEmbedding._meta.db_table])
        return cursor.fetchone()[0]


def _ef_search(embeddings, *, limit: int, filtered: bool) -> int | None:
    """The HNSW scan's ef_search (the candidates its graph search keeps) for ``embeddings``; None
    when the planner expects at most SEARCH_EXACT_MAX_ROWS to pass the filters: reading those is
    exact, and cheaper than a deep index scan.

    The base ef_search (``ef_search_base``), divided by the fraction of the index that passes the
    filters: a filter that keeps 5% leaves the scan 5% of its candidates, so it searches 20x wider
    (up to pgvector's 1000) rather than relying on the iterative scan's later, coarser rounds."""
    ef = max(ef_search_base(), limit)
    if not filtered:
        return ef
    plan = json.loads(embeddings.values("pk").explain(format="json"))  # statistics only, no scan
    passing = float(plan[0]["Plan"]["Plan Rows"])
    if passing <= settings.SEARCH_EXACT_MAX_ROWS:
        return None
    indexed = max(indexed_rows_estimate(), passing)
    return min(MAX_EF_SEARCH, max(ef, math.ceil(ef * indexed / passing)))


def semantic_ef_search(*, limit: int = 20, store_id=None, in_stock=None, category=None) -> int | None:
    """How the semantic arm searches with these filters: its ef_search, None for an exact scan."""
    filters = _Filters(store_id=store_id, in_stock=in_stock, category=category)
    return _ef_search(_embeddings(filters), limit=limit, filtered=filters.active)


# Any word of the query, stemmed and as typed (websearch syntax: quotes make a phrase, -word
# excludes). websearch_to_tsquery ANDs the words; a shopper's query rarely has them all.
_ANY_WORD = (
    f"(replace(websearch_to_tsquery('{SEARCH_CONFIG}', %s)::text, ' & ', ' | ')::tsquery"
    " || replace(websearch_to_tsquery('simple', %s)::text, ' & ', ' | ')::tsquery)"
)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class _KeywordHit:
    product: Product
    score: float
    exact_sku: bool
    # Every word matched (somewhere in the text), a similar name, or a SKU it begins: evidence
    # that the shopper typed this product's own words. Partial matches are not: "something to
    # spread on toast" shares a word with many descriptions.
    strong: bool


def _keyword(query: str, *, limit: int, filters: _Filters) -> list[_KeywordHit]:
    """Products matching a word of ``query``, a name similar to it or (one token) a SKU it
    begins: the exact SKU first, then strong matches, each by score."""
    table = Product._meta.db_table
    words = [query, query]
    text_match = RawSQL(f'"{table}"."search_vector" @@ {_ANY_WORD}', words, output_field=BooleanField())
    similar_name = RawSQL(f'%s <%% "{table}"."name"', [query], output_field=BooleanField())
    all_words = (
        f'("{table}"."search_vector" @@ websearch_to_tsquery(\'{SEARCH_CONFIG}\', %s)'
        f' OR "{table}"."search_vector" @@ websearch_to_tsquery(\'simple\', %s) OR %s <%% "{table}"."name"'
    )
    strong_params = [query, query, query]
    code = _like_escape(query)
    matched = Q(text_match) | Q(similar_name)
    exact_sku = Value(False)
    prefix = Value(0.0)
    if code and not any(char.isspace() for char in code):
        matched |= Q(RawSQL(f'"{table}"."sku" ILIKE %s', [code + "%"], output_field=BooleanField()))
        exact_sku = RawSQL(f'"{table}"."sku" ILIKE %s', [code], output_field=BooleanField())
        prefix = RawSQL(f'CASE WHEN "{table}"."sku" ILIKE %s THEN 1.0 ELSE 0.0 END', [code + "%"])
        all_words += f' OR "{table}"."sku" ILIKE %s'
        strong_params.append(code + "%")
    strong = RawSQL(all_words + ")", strong_params, output_field=BooleanField())
    score = (
        RawSQL(f'ts_rank("{table}"."search_vector", {_ANY_WORD})', words)
        + RawSQL(f'word_similarity(%s, "{table}"."name")', [query])
        + prefix
    )
    products = (
        filters.apply(Product.objects.filter(matched))
        .annotate(keyword_score=ExpressionWrapper(score, output_field=FloatField()), exact_sku=exact_sku, strong=strong)
        .defer("search_vector")
        .order_by("-exact_sku", "-strong", "-keyword_score", "id")[:limit]
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL pg_trgm.word_similarity_threshold = %s", [settings.SEARCH_NAME_SIMILARITY_THRESHOLD])
        rows = list(products)
    return [_KeywordHit(row, float(row.keyword_score), bool(row.exact_sku), bool(row.strong)) for row in rows]


def _hybrid(query: str, vector, *, limit: int, filters: _Filters, exact: bool) -> list[SearchHit]:
    """Weighted reciprocal rank fusion: a candidate scores weight / (k + rank) per arm it is in;
    ranks, not scores, so the arms' incomparable scales need no calibration. Only the keyword
    arm's strong matches take part: its partial matches would push incidental word matches
    above products nearest in meaning. The exact SKU goes first whatever its fused score."""
    depth = max(limit, settings.SEARCH_CANDIDATES)
    k = settings.SEARCH_RRF_K
    weight = settings.SEARCH_KEYWORD_WEIGHT
    semantic = _semantic(vector, limit=depth, filters=filters, exact=exact)
    keyword = [hit for hit in _keyword(query, limit=depth, filters=filters) if hit.strong]
    fused: dict[int, float] = {}
    products: dict[int, Product] = {}
    arms = (
        (1.0, [(hit.product, hit.score) for hit in semantic]),
        (weight, [(hit.product, (hit.exact_sku, hit.strong, hit.score)) for hit in keyword]),
    )
    for arm_weight, arm in arms:
        for rank, product in _ranked(arm):
            fused[product.id] = fused.get(product.id, 0.0) + arm_weight / (k + rank)
            products[product.id] = product
    best = (1.0 + weight) / (k + 1)  # first in both arms
    exact_ids = {hit.product.id for hit in keyword if hit.exact_sku}
    order = sorted(fused, key=lambda pid: (pid not in exact_ids, -fused[pid], pid))
    return [SearchHit(product=products[pid], score=fused[pid] / best) for pid in order[:limit]]


def _ranked(hits: list[tuple[Product, object]]):
    """(rank, product) in order, equal scores sharing a rank (1, 2, 2, 4): products an arm cannot
    tell apart stay tied after the fusion, for ``sort=popularity`` to break."""
    rank, previous = 0, None
    for position, (product, score) in enumerate(hits, start=1):
        key = tuple(round(part, 6) for part in score) if isinstance(score, tuple) else round(score, 6)
        if key != previous:
            rank, previous = position, key
        yield rank, product
