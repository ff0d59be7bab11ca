"""Popularity: interactions in, time-decayed scores and trending lists out.

- **Tracking** (request path, no database write): one Lua call per request sets a
  dedup key per (actor hash, product, kind) with SET NX EX and, only where it was
  set, XADDs the event to a Redis Stream. Both in one script, so a counted event is
  never deduplicated without being stored, nor stored twice. No MAXLEN cap: an
  approximate cap would drop entries no aggregation has counted yet; the stream is
  trimmed by MINID of what is committed and acknowledged.
- **Aggregation** (periodic task): reads the stream through a consumer group, adds
  the counts to ``PopularityBucket`` (product × store × 5-minute bucket × kind) and
  moves ``PopularityStreamPosition`` in the same Postgres transaction; entries are
  XACKed only after commit. See ``popularity_aggregate`` for why nothing is counted
  twice.
- **Scores**: exponential decay of the buckets, then the trending lists are written
  to Redis. Orders feed the same buckets directly (``popularity_order_sync``).
"""

import hashlib
import hmac
import json
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from celeste.api.errors import Unavailable
from celeste.background.redis import client

from .models import (
    InteractionKind,
    PopularityBucket,
    PopularityOrder,
    PopularityScore,
    PopularityStreamPosition,
    Product,
)

logger = logging.getLogger(__name__)

STREAM = "celeste:popularity:stream"
GROUP = "catalog.popularity"
SEEN_PREFIX = "celeste:popularity:seen:"
TRENDING_PREFIX = "celeste:popularity:trending:"
BUCKET_SECONDS = 300
TRENDING_SIZE = 100  # the most `limit` may ask for
AGGREGATE_BATCH = 5000
# What the tracking endpoints accept; orders are fed by the orders app.
TRACKED_KINDS = (InteractionKind.VIEW, InteractionKind.ADD_TO_CART, InteractionKind.SEARCH_CLICK)

# KEYS[1] = the stream; ARGV = ttl, then (dedup key, product, kind, store) per event.
# Atomic: a dedup key exists only for an event that is in the stream.
_TRACK_SCRIPT = """
local added = 0
for i = 2, #ARGV, 4 do
  if redis.call('SET', ARGV[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'p', ARGV[i + 1], 'k', ARGV[i + 2], 's', ARGV[i + 3])
    added = added + 1
  end
end
return added
"""


class TrackingUnavailable(Unavailable):
    """Redis did not store the event: the client must retry (503), never a silent drop."""


@dataclass(frozen=True)
class Event:
    product_id: int
    kind: str
    store_id: int | None = None


# --- tracking ---------------------------------------------------------------------


def actor_hash(*, user_id: int | None, ip: str, user_agent: str) -> str:
    """An opaque, keyed id for the actor: the stream and the dedup keys never hold a
    user id, an address or a user agent."""
    key = (settings.POPULARITY_HASH_KEY or f"popularity:{settings.SECRET_KEY}").encode()
    raw = f"u:{user_id}" if user_id is not None else f"a:{ip}\n{user_agent}"
    return hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()[:32]


def popularity_track(*, actor: str, events: list[Event]) -> int:
    """Store the events not seen from ``actor`` within the dedup window; returns how many
    were new. Raises TrackingUnavailable unless Redis confirmed the write."""
    argv: list = [settings.POPULARITY_DEDUP_WINDOW_SECONDS]
    for event in events:
        argv += [f"{SEEN_PREFIX}{actor}:{event.product_id}:{event.kind}", event.product_id, event.kind]
        argv.append(event.store_id or "")
    if len(argv) == 1:
        return 0
    try:
        return int(client().eval(_TRACK_SCRIPT, 1, STREAM, *argv))
    except redis.RedisError as exc:
        logger.warning("popularity.track_failed", extra={"error": repr(exc)})
        raise TrackingUnavailable("Interactions cannot be recorded right now; retry shortly.") from exc


# --- aggregation --------------------------------------------------------------------


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def bucket_of(moment: datetime) -> datetime:
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % BUCKET_SECONDS, tz=UTC)


def _group_ensure(r) -> None:
    try:
        r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _decode(entries) -> list[tuple[str, dict]]:
    out = []
    for entry_id, fields in entries or []:
        if fields is None:  # trimmed while pending
            continue
        out.append((entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}))
    return out


def _counts_add(counts: Counter) -> None:
    """Add counts {(product, store, bucket, kind): n} to the buckets (one statement)."""
    if not counts:
        return
    keys = list(counts)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO catalog_popularitybucket (product_id, store_id, bucket, kind, count)
            SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::text[], %s::int[])
            ON CONFLICT (product_id, store_id, bucket, kind)
            DO UPDATE SET count = catalog_popularitybucket.count + EXCLUDED.count
            """,
            [
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [k[3] for k in keys],
                [counts[k] for k in keys],
            ],
        )


def _ack(r, entry_ids: list[str], committed: str) -> None:
    """After commit: acknowledge the batch, then delete exactly those entries (all of
    them counted or skipped). XDEL by id rather than XTRIM MINID: it can only ever touch
    entries of this batch (and Redis 6.2's MINID trim over-deletes across large id gaps)."""
    pipe = r.pipeline(transaction=False)
    pipe.xack(STREAM, GROUP, *entry_ids)
    pipe.xdel(STREAM, *entry_ids)
    pipe.execute()


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# Counts {(product, store or None, bucket number, kind): n} of one batch, added to the
# buckets in one statement. Liveness is checked in the same statement: an inactive (or
# since deleted) product is not counted, a deleted store's events count without it.
# Grouped again after that, as a deleted store may merge two keys into one bucket row.
_AGGREGATE_SQL = f"""
    WITH entry AS (
        SELECT * FROM unnest(%(products)s::bigint[], %(stores)s::bigint[], %(buckets)s::bigint[],
                             %(kinds)s::text[], %(counts)s::int[]) AS e(product_id, store_id, bucket, kind, n)
    ),
    counted AS (
        SELECT e.product_id, s.id AS store_id, to_timestamp(e.bucket * {BUCKET_SECONDS}) AS bucket, e.kind,
               sum(e.n)::int AS n
        FROM entry e
        JOIN catalog_product p ON p.id = e.product_id AND p.active
        LEFT JOIN catalog_store s ON s.id = e.store_id
        WHERE e.kind = ANY(%(tracked)s::text[])
        GROUP BY 1, 2, 3, 4
    ),
    added AS (
        INSERT INTO catalog_popularitybucket (product_id, store_id, bucket, kind, count)
        SELECT * FROM counted
        ON CONFLICT (product_id, store_id, bucket, kind)
        DO UPDATE SET count = catalog_popularitybucket.count + EXCLUDED.count
    )
    SELECT COALESCE(sum(n), 0) FROM counted
"""


def _entries_count(entries: list[tuple[str, dict]]) -> int:
    """Add the entries to the buckets; returns how many were counted."""
    keys: Counter = Counter(
        (f["p"], f.get("s"), int(entry_id.partition("-")[0]) // (BUCKET_SECONDS * 1000), f.get("k"))
        for entry_id, f in entries
    )
    if not keys:
        return 0
    # Python does the per-entry work once per distinct key; Postgres gets one row per key.
    products, stores, buckets, kinds = zip(*keys, strict=True)
    with connection.cursor() as cursor:
        cursor.execute(
            _AGGREGATE_SQL,
            {
                "products": [int(p) for p in products],
                "stores": [int(s) if s else None for s in stores],
                "buckets": list(buckets),
                "kinds": list(kinds),
                "counts": list(keys.values()),
                "tracked": [str(kind) for kind in TRACKED_KINDS],
            },
        )
        return cursor.fetchone()[0]


def popularity_aggregate_batch(r, *, consumer: str, batch: int = AGGREGATE_BATCH) -> tuple[int, int, int]:
    """One batch: (entries read, entries counted, entries skipped). 0 read: nothing left.

    Exactly once: the position row is locked for the whole batch, so one batch runs at a
    time. With it held, every pending entry belongs to a run that died or committed but
    did not acknowledge (a live run holds the lock until it commits), so it is claimed
    at once (XAUTOCLAIM, idle 0) before any new entry is read, and stream order holds.
    An entry at or below the committed position was counted: it is acknowledged, not
    counted again. The new position commits with the counts."""
    with transaction.atomic():
        position, _ = PopularityStreamPosition.objects.select_for_update().get_or_create(group=GROUP)
        claimed = r.xautoclaim(STREAM, GROUP, consumer, min_idle_time=0, start_id="0-0", count=batch)
        entries = _decode(claimed[1])
        if not entries:
            read = r.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=batch)
            entries = _decode(read[0][1]) if read else []
        if not entries:
            return 0, 0, 0
        entries.sort(key=lambda e: _id_tuple(e[0]))
        committed = _id_tuple(position.last_id)
        fresh = [(entry_id, f) for entry_id, f in entries if _id_tuple(entry_id) > committed]
        counted = _entries_count(fresh)
        if fresh:
            position.last_id = fresh[-1][0]
            position.save(update_fields=["last_id", "updated_at"])
        last = position.last_id
    _ack(r, [entry_id for entry_id, _ in entries], last)
    return len(entries), counted, len(entries) - len(fresh)


def popularity_aggregate(*, batch: int = AGGREGATE_BATCH) -> dict:
    """Count everything in the stream, then recompute the scores and trending lists."""
    r = client()
    _group_ensure(r)
    consumer = consumer_name()
    totals = {"read": 0, "counted": 0, "skipped": 0}
    while True:
        read, counted, skipped = popularity_aggregate_batch(r, consumer=consumer, batch=batch)
        if not read:
            break
        totals["read"] += read
        totals["counted"] += counted
        totals["skipped"] += skipped
    # Consumers of earlier runs (other pids) hold nothing any more: forget them.
    for info in r.xinfo_consumers(STREAM, GROUP):
        if info["pending"] == 0 and info["name"].decode() != consumer:
            r.xgroup_delconsumer(STREAM, GROUP, info["name"])
    r.xgroup_delconsumer(STREAM, GROUP, consumer)
    totals["scores"] = popularity_scores_recompute()
    trending_refresh()
    logger.info("popularity.aggregated", extra=totals)
    return totals


# --- orders ---------------------------------------------------------------------------


@transaction.atomic
def popularity_order_sync(
    *, order_id: int, store_id: int | None, placed_at: datetime, product_ids: list[int], cancelled: bool
) -> str:
    """Make the ``order`` counts reflect the order's state now: counted once while it is
    not cancelled, taken back once when it is. Keyed by the order id, so running it any
    number of times, in any order, gives the same counts."""
    record, created = PopularityOrder.objects.select_for_update().get_or_create(
        order_id=order_id,
        defaults={"store_id": store_id, "bucket": bucket_of(placed_at), "product_ids": sorted(set(product_ids))},
    )
    want = not cancelled
    if created and not want:
        return "never_counted"
    if not created and record.counted == want:
        return "unchanged"
    if not created and want:
        return "cancelled"  # a cancelled order stays cancelled: never counted again
    sign = 1 if want else -1
    live = set(Product.objects.filter(id__in=record.product_ids).values_list("id", flat=True))
    counts = Counter(
        {
            (pid, record.store_id, record.bucket, InteractionKind.ORDER.value): sign
            for pid in record.product_ids
            if pid in live
        }
    )
    _counts_add(counts)
    record.counted = want
    record.save(update_fields=["counted", "updated_at"])
    return "counted" if want else "uncounted"


# --- scores ---------------------------------------------------------------------------


def popularity_scores_recompute(
    *, since: datetime | None = None, product_ids: tuple[int, int] | None = None, dry_run: bool = False
) -> int:
    """Recompute the decayed scores from the buckets (all products, or an id range
    ``[lo, hi)``); returns how many score rows there are. Decay is applied relative to
    now: a run changes every score by the same factor plus new counts, so rankings
    only change with new counts."""
    now = timezone.now()
    since = since or now - timedelta(days=settings.POPULARITY_RETENTION_DAYS)
    half_life = settings.POPULARITY_HALF_LIFE_HOURS * 3600
    weights = settings.POPULARITY_WEIGHTS
    lo, hi = product_ids or (0, 2**62)
    params = {
        "now": now,
        "since": since,
        "half": half_life,
        "kinds": list(weights),
        "weights": list(weights.values()),
        "lo": lo,
        "hi": hi,
    }
    scored = """
        WITH w AS (SELECT * FROM unnest(%(kinds)s::text[], %(weights)s::float8[]) AS w(kind, weight)),
        b AS (
            SELECT b.product_id, b.store_id,
                   b.count * w.weight * power(0.5, extract(epoch FROM (%(now)s - b.bucket)) / %(half)s) AS s
            FROM catalog_popularitybucket b JOIN w ON w.kind = b.kind
            WHERE b.bucket >= %(since)s AND b.product_id >= %(lo)s AND b.product_id < %(hi)s
        )
        SELECT product_id, store_id, SUM(s) FROM b WHERE store_id IS NOT NULL GROUP BY product_id, store_id
        UNION ALL
        SELECT product_id, NULL, SUM(s) FROM b GROUP BY product_id
    """
    with transaction.atomic(), connection.cursor() as cursor:
        if dry_run:
            cursor.execute(f"SELECT count(*) FROM ({scored}) x", params)
            return cursor.fetchone()[0]
        cursor.execute("DELETE FROM catalog_popularityscore WHERE product_id >= %(lo)s AND product_id < %(hi)s", params)
        cursor.execute(
            f"INSERT INTO catalog_popularityscore (product_id, store_id, score, updated_at) "
            f"SELECT x.*, %(now)s FROM ({scored}) x",
            params,
        )
        rows = cursor.rowcount
        # Only rows whose value changed are written (the index on popularity stays quiet).
        cursor.execute(
            """
            UPDATE catalog_product p SET popularity = COALESCE(s.score, 0)
            FROM catalog_product p2 LEFT JOIN catalog_popularityscore s ON s.product_id = p2.id AND s.store_id IS NULL
            WHERE p.id = p2.id AND p.id >= %(lo)s AND p.id < %(hi)s
              AND p.popularity IS DISTINCT FROM COALESCE(s.score, 0)
            """,
            params,
        )
    return rows


# --- trending ---------------------------------------------------------------------------


def _trending_key(store_id: int | None, category: str | None) -> str:
    parts = [f"store={store_id or ''}", f"category={hashlib.sha256((category or '').encode()).hexdigest()[:16]}"]
    return TRENDING_PREFIX + ":".join(parts)


def trending_build(*, store_id: int | None, category: str | None) -> list[dict]:
    """The trending list from the stored scores (never from raw events)."""
    scores = PopularityScore.objects.filter(product__active=True, score__gt=0)
    scores = scores.filter(store_id=store_id) if store_id else scores.filter(store__isnull=True)
    if category:
        scores = scores.filter(product__category=category)
    rows = scores.order_by("-score", "product_id").values(
        "score",
        "product_id",
        "product__sku",
        "product__name",
        "product__category",
        "product__price",
        "product__currency",
    )[:TRENDING_SIZE]
    return [
        {
            "id": row["product_id"],
            "sku": row["product__sku"],
            "name": row["product__name"],
            "category": row["product__category"],
            "price": str(row["product__price"]),
            "currency": row["product__currency"],
            "score": row["score"],
        }
        for row in rows
    ]


def _trending_store(pipe, store_id, category, items) -> None:
    pipe.set(_trending_key(store_id, category), json.dumps(items), ex=settings.POPULARITY_TRENDING_TTL_SECONDS)


def trending_refresh() -> int:
    """Rewrite the global, per-store and per-category lists; returns how many."""
    scopes: list[tuple[int | None, str | None]] = [(None, None)]
    scopes += [
        (s, None)
        for s in PopularityScore.objects.filter(store__isnull=False).values_list("store_id", flat=True).distinct()
    ]
    scopes += [
        (None, c)
        for c in PopularityScore.objects.filter(store__isnull=True)
        .exclude(product__category="")
        .values_list("product__category", flat=True)
        .distinct()
    ]
    try:
        pipe = client().pipeline(transaction=False)
        for store_id, category in scopes:
            _trending_store(pipe, store_id, category, trending_build(store_id=store_id, category=category))
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("popularity.trending_not_cached", extra={"error": repr(exc)})
    return len(scopes)


def trending(*, store_id: int | None = None, category: str | None = None, limit: int = 20) -> list[dict]:
    """Served from the cache the aggregation writes; a cold key is built from the scores
    and cached until the next run (a combination of store and category, say)."""
    key = _trending_key(store_id, category)
    try:
        cached = client().get(key)
    except redis.RedisError:
        cached = None
    if cached is not None:
        return json.loads(cached)[:limit]
    items = trending_build(store_id=store_id, category=category)
    try:
        client().set(key, json.dumps(items), ex=settings.POPULARITY_AGGREGATE_INTERVAL_SECONDS)
    except redis.RedisError:
        pass
    return items[:limit]


# --- retention ------------------------------------------------------------------------------


def popularity_sweep(*, now: datetime | None = None) -> dict:
    """Drop raw interactions (stream entries) and buckets older than the retention."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.POPULARITY_RETENTION_DAYS)
    trimmed = 0
    try:
        r = client()
        # Entries are deleted by id, 1,000 at a time (see _ack on why not XTRIM MINID).
        # Pending ones of a dead consumer too: privacy outranks counting a month-old view.
        while ids := [entry_id for entry_id, _ in r.xrange(STREAM, "-", f"({int(cutoff.timestamp() * 1000)}-0", 1000)]:
            trimmed += r.xdel(STREAM, *ids)
    except redis.RedisError as exc:
        logger.warning("popularity.sweep_stream_failed", extra={"error": repr(exc)})
    deleted, _ = PopularityBucket.objects.filter(bucket__lt=cutoff).delete()
    result = {"stream_trimmed": trimmed, "buckets_deleted": deleted}
    logger.info("popularity.swept", extra=result)
    return result


def recent_activity(product_id: int, *, hours: int = 24) -> dict[str, int]:
    """Counted interactions per kind over the last ``hours`` (for the admin)."""
    since = timezone.now() - timedelta(hours=hours)
    rows = PopularityBucket.objects.filter(product_id=product_id, bucket__gte=since).values_list("kind", "count")
    totals: Counter = Counter()
    for kind, count in rows:
        totals[kind] += count
    return dict(totals)
