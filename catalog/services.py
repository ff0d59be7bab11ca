"""Catalog writes. Every write to products, stores and stock goes through here."""

import contextvars
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, ProtectedError, Q
from django.utils import timezone
from pgvector import HalfVector
from pgvector.psycopg.halfvec import HalfVectorBinaryDumper
from psycopg.types import TypeInfo

from celeste.background.queue import coalesce_reset, enqueue

from . import embeddings, images, tasks
from .errors import InsufficientStock, InUse
from .models import EmbeddingStatus, Product, ProductEmbedding, StockLevel, Store

logger = logging.getLogger(__name__)

PRODUCT_FIELDS = ("sku", "name", "description", "category", "price", "currency", "active")


def _referenced_by(exc: ProtectedError) -> str:
    return ", ".join(sorted({str(obj._meta.verbose_name_plural) for obj in exc.protected_objects}))


@transaction.atomic
def store_create(
    *, code: str, name: str, city: str = "", active: bool = True, odoo_location_id: int | None = None
) -> Store:
    return Store.objects.create(code=code, name=name, city=city, active=active, odoo_location_id=odoo_location_id)


@transaction.atomic
def store_update(*, store: Store, **fields) -> Store:
    for field, value in fields.items():
        setattr(store, field, value)
    store.save()
    return store


@transaction.atomic
def store_delete(*, store: Store) -> None:
    """Delete a store and its stock levels. A store that orders refer to keeps
    them valid: it is not deleted (InUse, 409, nothing changes); deactivate it."""
    try:
        store.delete()
    except ProtectedError as exc:
        raise InUse(
            f"Store {store.name!r} cannot be deleted: {_referenced_by(exc)} refer to it. "
            "Deactivate it instead (active: false)."
        ) from None


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
    image_urls: list[str] = (),
) -> Product:
    """Create a product; its embedding starts pending and is made in the background, and so
    are its images from ``image_urls`` (images.ImageRejected for a refused URL: nothing is created)."""
    product = Product(
        sku=sku,
        name=name,
        description=description,
        category=category,
        price=Decimal(str(price)),
        currency=currency,
        active=active,
    )
    product.save()
    ProductEmbedding.objects.create(product=product)
    for url in image_urls:
        images.product_image_add_url(product=product, url=url)
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
def product_delete(*, product: Product) -> None:
    """Delete a product with its stock levels and embedding. A product that
    orders refer to stays, so their lines keep their product: the delete is
    refused (InUse, 409, nothing changes). Deactivate it instead: it leaves
    search and can no longer be ordered."""
    try:
        product.delete()
    except ProtectedError as exc:
        raise InUse(
            f"Product {product.name!r} ({product.sku}) cannot be deleted: {_referenced_by(exc)} refer to it. "
            "Deactivate it instead (active: false)."
        ) from None


@transaction.atomic
def stock_level_set(*, product: Product, store: Store, quantity: int) -> StockLevel:
    if quantity < 0:
        raise ValueError("quantity must not be negative")
    level, _ = StockLevel.objects.update_or_create(product=product, store=store, defaults={"quantity": quantity})
    return level


@transaction.atomic
def stock_level_delete(*, stock_level: StockLevel) -> None:
    """The store no longer stocks the product (unlike quantity 0, which it stocks
    and has sold out). Orders keep their lines; a cancel recreates the row."""
    stock_level.delete()


def _stock_locked(*, store_id: int, product_ids) -> dict[int, StockLevel]:
    """The store's stock rows for these products, locked in product-id order so
    two transactions locking overlapping rows never deadlock."""
    rows = StockLevel.objects.select_for_update().filter(store_id=store_id, product_id__in=list(product_ids))
    return {level.product_id: level for level in rows.order_by("product_id")}


@transaction.atomic
def stock_reserve(*, store_id: int, quantities: dict[int, int]) -> None:
    """Take ``quantities`` ({product id: units}) from the store's stock, all or nothing.

    Rows are locked in product-id order and checked before any is changed: of two
    callers racing for the last unit exactly one gets it, the other gets
    InsufficientStock (for the lowest product id that is short) and nothing changes.
    Each row is saved, so its post_save receivers see the change.
    """
    levels = _stock_locked(store_id=store_id, product_ids=quantities)
    for product_id, wanted in sorted(quantities.items()):
        available = levels[product_id].quantity if product_id in levels else 0
        if available < wanted:
            raise InsufficientStock(
                product_id=product_id,
                store_id=store_id,
                available=available,
                wanted=wanted,
                stocked=product_id in levels,
            )
    for product_id, wanted in sorted(quantities.items()):
        level = levels[product_id]
        level.quantity -= wanted
        level.save(update_fields=["quantity", "updated_at"])


@transaction.atomic
def stock_release(*, store_id: int, quantities: dict[int, int]) -> None:
    """Give ``quantities`` ({product id: units}) back to the store's stock (a
    cancelled order). A stock row deleted since is created again with them."""
    levels = _stock_locked(store_id=store_id, product_ids=quantities)
    for product_id, units in quantities.items():
        level = levels.get(product_id)
        if level is None:
            StockLevel.objects.create(product_id=product_id, store_id=store_id, quantity=units)
        else:
            level.quantity += units
            level.save(update_fields=["quantity", "updated_at"])


# --- embeddings ---------------------------------------------------------------


def stale_embeddings():
    """Embeddings of active products whose vector is missing, out of date, or from another model."""
    return ProductEmbedding.objects.filter(product__active=True).filter(
        ~Q(content_hash=F("product__content_hash")) | ~Q(model_name=embeddings.model_identity())
    )


def embeddings_mark_stale_pending() -> int:
    """Reconcile: a stale embedding still marked ready (e.g. after a model change)
    becomes pending, so the embed task's indexed claim finds it."""
    return stale_embeddings().filter(status=EmbeddingStatus.READY).update(status=EmbeddingStatus.PENDING)


def pending_embeddings():
    # Served by the partial index on status <> 'ready': cheap at any catalog size.
    return ProductEmbedding.objects.exclude(status=EmbeddingStatus.READY).filter(product__active=True)


def embeddings_embed_stale(*, batch_size: int | None = None) -> int:
    """Claim up to ``batch_size`` pending embeddings and embed them in one model call.

    Rows are locked with SKIP LOCKED for the whole batch, so concurrent workers
    take different batches and a killed worker's rows simply become claimable
    again. Returns how many were embedded (0: nothing was pending).
    """
    batch_size = batch_size or settings.EMBEDDING_BATCH_SIZE
    claimed_ids = []
    try:
        with transaction.atomic():
            rows = list(
                pending_embeddings()
                .select_related("product")
                .select_for_update(skip_locked=True, of=("self",))
                .order_by("product_id")[:batch_size]
            )
            if not rows:
                return 0
            claimed_ids = [row.product_id for row in rows]
            vectors = embeddings.encode([row.product.embedding_text() for row in rows])
            _store_vectors(rows, vectors)
    except Exception as exc:
        if claimed_ids:
            ProductEmbedding.objects.filter(product_id__in=claimed_ids).update(
                status=EmbeddingStatus.FAILED, error=repr(exc)[:2000], attempts=F("attempts") + 1
            )
        raise
    logger.info("embedding.batch_done", extra={"count": len(claimed_ids)})
    return len(claimed_ids)


def _store_vectors(rows: list[ProductEmbedding], vectors: np.ndarray) -> None:
    """One UPDATE for the whole batch (64 single-row saves cost a third of the encode), with
    the vectors sent in binary: formatting 64 x 384 floats as text and parsing them again
    cost about a third of an int8 encode. Django's cursor binds client-side (text only), so
    this uses psycopg's own cursor on the same connection, in the same transaction.

    A vector is ready only if its product's text is still the one encoded. A text change
    marks the embedding pending only where it is not pending already (Product.save), so one
    made during the batch left no mark, and a ready vector of the old text would hide it from
    every later claim until the sweeper. Here the product rows are read as they are now, and
    one locked by a write still in flight (SKIP LOCKED: never a wait) counts as changed: the
    row stays pending and the next claim, this job's own next batch, embeds the new text."""
    raw = connection.connection
    _register_halfvec_dumper(raw)
    product_ids = [row.product_id for row in rows]
    with psycopg.Cursor(raw) as cursor:  # not raw.cursor(): Django makes that a ClientCursor
        cursor.execute(
            """
            WITH settled AS (
                SELECT id, content_hash FROM catalog_product WHERE id = ANY(%s::bigint[]) FOR SHARE SKIP LOCKED
            )
            UPDATE catalog_productembedding AS e
               SET vector = v.vector, content_hash = v.hash, model_name = %s,
                   status = CASE WHEN settled.content_hash = v.hash THEN %s ELSE %s END,
                   error = '', embedded_at = clock_timestamp(), updated_at = clock_timestamp(),
                   attempts = e.attempts + 1
              FROM unnest(%s::bigint[], %b::halfvec[], %s::text[]) AS v(product_id, vector, hash)
              LEFT JOIN settled ON settled.id = v.product_id
             WHERE e.product_id = v.product_id
            """,
            [
                product_ids,
                embeddings.model_identity(),
                EmbeddingStatus.READY,
                EmbeddingStatus.PENDING,
                product_ids,
                [HalfVector(vector) for vector in vectors],
                # The hash read with the claim: the text that was encoded.
                [row.product.content_hash for row in rows],
            ],
        )


def _register_halfvec_dumper(raw) -> None:
    """Teach this psycopg connection to send HalfVector in binary (once per connection). Only
    the dumper: Django reads vectors as text, as before."""
    if raw.adapters.types.get("halfvec") is not None:
        return
    info = TypeInfo.fetch(raw, "halfvec")
    info.register(raw)  # the type and its array type, so a list dumps as halfvec[]
    raw.adapters.register_dumper(HalfVector, type("HalfVectorDumper", (HalfVectorBinaryDumper,), {"oid": info.oid}))


def embeddings_embed_pending(*, budget_seconds: float = 60, lanes: int = 0) -> int:
    """Embed batch after batch until nothing is pending or the time budget is
    spent; then leave a follow-up message for the rest. Returns how many.

    In ``lanes`` lanes at once (0: ``embeddings.lanes()``): threads with a connection each,
    every one claiming its own batches (SKIP LOCKED), so one lane encodes while Postgres
    stores another's batch (its HNSW inserts were a fifth of a burst's time with one lane).
    Inside a transaction there is one lane, on this connection: the others could not
    see the rows it has not committed."""
    deadline = time.monotonic() + budget_seconds
    count = 1 if connection.in_atomic_block else lanes or embeddings.lanes()
    group = LaneGroup(count)
    if count == 1:
        results = [_embed_lane(0, group, deadline)]
    else:
        with ThreadPoolExecutor(count, thread_name_prefix="embed-lane") as pool:
            # Each lane runs in a copy of this context: its log lines keep the job's request id.
            futures = [
                pool.submit(contextvars.copy_context().run, _embed_lane_thread, lane, group, deadline)
                for lane in range(count)
            ]
        results = [future.result() for future in futures]  # all lanes have stopped: raise the first failure
    if any(out_of_time for _, out_of_time in results):
        enqueue(tasks.embed_products)
    return sum(embedded for embedded, _ in results)


class LaneGroup:
    """The lanes of one embed job stop together, once none of them finds anything to claim.
    A lane that stopped on its own while another still embedded, or that went on after the
    others stopped, left the rest of a growing burst to one lane (measured: 80 instead of
    150 products/s); the saves after the stop get a job of their own."""

    def __init__(self, size: int):
        self.size, self.idle, self.stopped, self.lock = size, set(), False, threading.Lock()

    def found(self, lane: int, anything: bool) -> bool:
        """Record whether ``lane`` found anything to claim; True once no lane did: all stop."""
        with self.lock:
            (self.idle.discard if anything else self.idle.add)(lane)
            self.stopped = self.stopped or len(self.idle) == self.size
            return self.stopped


def _embed_lane(lane: int, group: LaneGroup, deadline: float) -> tuple[int, bool]:
    """Batches until the lanes stop (False) or the deadline passed (True); returns how many
    this lane embedded. A lane that finds nothing polls for what the others have not taken."""
    total = 0
    try:
        while not group.stopped:
            if time.monotonic() > deadline:
                return total, True
            _await_batch(settings.EMBEDDING_BATCH_SIZE, settings.EMBEDDING_BATCH_WAIT_SECONDS)
            embedded = embeddings_embed_stale()
            total += embedded
            if not group.found(lane, embedded > 0) and not embedded:
                time.sleep(BATCH_POLL_SECONDS)
        return total, False
    finally:
        group.found(lane, False)  # gone: the others must not wait for it


def _embed_lane_thread(lane: int, group: LaneGroup, deadline: float) -> tuple[int, bool]:
    try:
        return _embed_lane(lane, group, deadline)
    finally:
        connection.close()  # the lane's own connection (Django's are per thread)


BATCH_POLL_SECONDS = 0.1


def _await_batch(batch_size: int, max_wait: float) -> None:
    """Let a burst fill a batch before claiming it. A burst of saves arrives over seconds,
    and an encoder faster than the saves would otherwise embed it one or two products per
    model call, paying the per-call cost (claim, model call, UPDATE) for each (measured:
    142 calls for 200 products created through the API, 1.4 per call). Waits while the
    backlog still grows, at most ``max_wait`` seconds: a lone save waits one poll."""
    deadline = time.monotonic() + max_wait
    pending_count = _pending_counter(batch_size)
    seen = pending_count()
    while 0 < seen < batch_size and time.monotonic() < deadline:
        time.sleep(BATCH_POLL_SECONDS)
        now = pending_count()
        if now == seen:
            return  # nothing arrived since the last look: the burst is over
        seen = now


def _pending_counter(limit: int):
    """A function counting at most ``limit`` pending embeddings (through the partial index:
    cheap however long the backlog). Its SQL is compiled once per wait: the wait polls it ten
    times a second, and compiling the ORM query each time was most of an embed job's CPU
    while products are saved in a steady stream (measured in the load bench)."""
    sql, params = pending_embeddings().values("pk")[:limit].query.sql_with_params()
    sql = f"SELECT count(*) FROM ({sql}) AS pending"

    def pending_count() -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()[0]

    return pending_count


@transaction.atomic
def embeddings_reset(*, product_ids: list[int]) -> int:
    """Force a re-embed of these products (admin action)."""
    count = ProductEmbedding.objects.filter(product_id__in=product_ids).update(
        content_hash="", status=EmbeddingStatus.PENDING, error=""
    )
    if count:
        enqueue(tasks.embed_products)
    return count


def embeddings_create_missing() -> int:
    """Give every product an embedding row (products made outside product_create)."""
    missing = Product.objects.filter(embedding__isnull=True).values_list("id", flat=True)
    rows = [ProductEmbedding(product_id=pid) for pid in missing]
    ProductEmbedding.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


@transaction.atomic
def embedding_sweep(*, stale_after_seconds: int) -> int:
    """The last line of defence if a message was ever lost: reconcile stale rows
    and enqueue the embed task if any product has waited longer than the
    threshold. Returns how many such products it found."""
    embeddings_create_missing()
    embeddings_mark_stale_pending()
    cutoff = timezone.now() - timezone.timedelta(seconds=stale_after_seconds)
    count = pending_embeddings().filter(product__updated_at__lte=cutoff).count()
    if count:
        enqueue(tasks.embed_products)  # one message: the task works until nothing is pending
        logger.info("embedding.sweep_enqueued", extra={"stale": count})
    return count


def embeddings_recover() -> int:
    """Run when a worker starts: whatever is pending now gets enqueued, so work a
    killed worker held is picked up without waiting for the sweeper."""
    coalesce_reset(tasks.embed_products.name)
    return embedding_sweep(stale_after_seconds=0)
