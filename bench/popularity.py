"""Popularity: tracking a view, trending, aggregating the stream (issue 12's targets).

- **Tracking a view p50.** Over HTTP to one gunicorn process, anonymous, a new client
  (user agent) per request so every view is counted: ``POST /products/{id}/view`` as
  shipped (one indexed read, one Lua call to Redis) vs the same view serving the
  synchronous design (``UPDATE … SET views = views + 1`` on a counter table, a bucket
  row, and the product's score recomputed, in one transaction; bench/tracking_sync.py).
  The request path around it (routing, auth, serializer, product read) is identical.
  It runs last, over the trending benchmark's history (its interactions as 5-minute
  buckets), so the synchronous recompute reads what a shop with that traffic holds.
- **Trending p50.** ``GET /products/trending`` (APIClient, served from the Redis cache)
  vs computing the same top 20 from raw interactions in SQL (weights × decay, grouped
  by product, joined with the products; the query alone, without any HTTP overhead)
  at 1M interactions (100k with ``--quick``) over 2,000 products; raw SQL scans all of
  them on every request, so it gets 10 samples (the cache 100).
- **Aggregation.** 1M stream entries (100k with ``--quick``) counted into Postgres by the aggregation's batch
  loop (claim/read, count, commit, XACK + XDEL) vs merely reading them with
  XREADGROUP in batches of the same size.
"""

import random
import time

from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from bench import Result, flush_redis, p50, report, reset_catalog, tracking_sync
from bench.server import Server
from catalog import popularity
from catalog.models import Product

PRODUCTS = 2000


def _products(count: int) -> list[int]:
    Product.objects.bulk_create(
        Product(sku=f"POP-{i:06d}", name=f"Product {i}", category=f"cat-{i % 20}", price=1, content_hash="x")
        for i in range(count)
    )
    return list(Product.objects.values_list("id", flat=True))


def tracking(ids: list[int], count: int) -> list[Result]:
    """Both routes on one gunicorn process, alternating in blocks so both see the same load."""
    with connection.cursor() as cursor:
        cursor.execute(tracking_sync.COUNTER_TABLE_SQL)
    server = Server("tracking", {"DJANGO_SETTINGS_MODULE": "bench.tracking_settings", "LOG_LEVEL": "WARNING"})
    paths = {"stream": "/api/v1/products/{}/view", "sync": "/bench/products/{}/view"}
    timings: dict[str, list[float]] = {"stream": [], "sync": []}
    n = 0
    try:
        for block in range(11):  # the first block warms up
            for mode, template in paths.items():
                for _ in range(count // 10):
                    n += 1  # a new client (user agent) per request: every view is counted, none deduplicated
                    elapsed = server.post(
                        template.format(random.choice(ids)), {}, expect=202, headers={"User-Agent": f"bench-{n}"}
                    )
                    if block:
                        timings[mode].append(elapsed)
    finally:
        server.stop()
    stream, sync = p50(timings["stream"]) * 1000, p50(timings["sync"]) * 1000
    return [
        Result("popularity", "track view p50 over HTTP, stream (ms)", stream, "ms"),
        Result("popularity", "track view p50 over HTTP, sync UPDATE + recompute (ms)", sync, "ms"),
        Result("popularity", "track view p50, stream / sync", stream / sync, "ratio", "<= 0.5"),
    ]


RAW_SQL = """
    WITH w AS (SELECT * FROM unnest(%(kinds)s::text[], %(weights)s::float8[]) AS w(kind, weight))
    SELECT p.id, p.sku, p.name, p.category, p.price, p.currency, s.score FROM (
        SELECT i.product_id, SUM(w.weight * power(0.5, extract(epoch FROM (now() - i.created_at)) / %(half)s)) AS score
        FROM bench_interactions i JOIN w ON w.kind = i.kind
        WHERE i.created_at >= now() - interval '30 days'
        GROUP BY i.product_id
    ) s JOIN catalog_product p ON p.id = s.product_id AND p.active
    ORDER BY s.score DESC LIMIT 20
"""


def trending(ids: list[int], interactions: int, samples: int, raw_samples: int) -> list[Result]:
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_interactions")
        cursor.execute(
            "CREATE TABLE bench_interactions (product_id bigint NOT NULL, kind text NOT NULL,"
            " created_at timestamptz NOT NULL)"
        )
        # Skewed popularity (a few products get most interactions), spread over 7 days.
        cursor.execute(
            """
            INSERT INTO bench_interactions
            SELECT %(lo)s + floor(power(random(), 3) * %(n)s)::bigint,
                   (ARRAY['view','view','view','view','search_click','add_to_cart'])[1 + floor(random() * 6)::int],
                   now() - random() * interval '7 days'
            FROM generate_series(1, %(count)s)
            """,
            {"lo": min(ids), "n": len(ids), "count": interactions},
        )
        cursor.execute("ANALYZE bench_interactions")
        # What the aggregation would have written for those interactions.
        cursor.execute(
            """
            INSERT INTO catalog_popularitybucket (product_id, store_id, bucket, kind, count)
            SELECT product_id, NULL::bigint,
                   to_timestamp(floor(extract(epoch FROM created_at) / 300) * 300), kind, count(*)
            FROM bench_interactions GROUP BY 1, 2, 3, 4
            """
        )
    popularity.popularity_scores_recompute()
    popularity.trending_refresh()
    client = APIClient()
    weights = settings.POPULARITY_WEIGHTS
    params = {
        "kinds": list(weights),
        "weights": list(weights.values()),
        "half": settings.POPULARITY_HALF_LIFE_HOURS * 3600,
    }
    cached, raw = [], []
    for i in range(samples + 3):  # the first 3 warm up
        start = time.perf_counter()
        response = client.get("/api/v1/products/trending?limit=20")
        elapsed = time.perf_counter() - start
        assert response.status_code == 200 and response.json()["count"] == 20
        if i >= 3:
            cached.append(elapsed)
    for i in range(raw_samples + 1):
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(RAW_SQL, params)
            rows = cursor.fetchall()
        elapsed = time.perf_counter() - start
        assert len(rows) == 20
        if i >= 1:
            raw.append(elapsed)
    top_cached = [item["id"] for item in response.json()["results"][:5]]
    top_raw = [row[0] for row in rows[:5]]
    label = f"{interactions // 1000}k"
    return [
        Result("popularity", f"trending p50 from cache (ms), {label} interactions", p50(cached) * 1000, "ms"),
        Result("popularity", f"trending p50 from raw SQL (ms), {label} interactions", p50(raw) * 1000, "ms"),
        Result("popularity", "trending p50, cache / raw SQL", p50(cached) / p50(raw), "ratio", "<= 0.05"),
        Result("popularity", "trending top 5 agree with raw SQL (1 = yes)", float(top_cached == top_raw)),
    ]


def aggregation(ids: list[int], entries: int) -> list[Result]:
    r = popularity.client()
    r.delete(popularity.STREAM)
    pipe = r.pipeline(transaction=False)
    for i in range(entries):
        pipe.xadd(popularity.STREAM, {"p": random.choice(ids), "k": "view", "s": ""})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.xgroup_create(popularity.STREAM, "bench-read", id="0")
    start = time.perf_counter()
    read = 0
    while batch := r.xreadgroup("bench-read", "reader", {popularity.STREAM: ">"}, count=popularity.AGGREGATE_BATCH):
        read += len(popularity._decode(batch[0][1]))
    read_seconds = time.perf_counter() - start
    assert read == entries
    popularity._group_ensure(r)
    start = time.perf_counter()
    counted = 0
    while True:
        got, n, _ = popularity.popularity_aggregate_batch(r, consumer="bench")
        if not got:
            break
        counted += n
    aggregate_seconds = time.perf_counter() - start
    assert counted == entries, counted
    return [
        Result("popularity", f"read {entries:,} entries with XREADGROUP (s)", read_seconds, "s"),
        Result("popularity", f"aggregate {entries:,} entries into Postgres (s)", aggregate_seconds, "s"),
        Result("popularity", "aggregate / read", aggregate_seconds / read_seconds, "ratio", "<= 3"),
    ]


def run(quick: bool) -> list[Result]:
    reset_catalog()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE catalog_popularitybucket, catalog_popularityscore, catalog_popularitystreamposition")
    flush_redis()
    ids = _products(PRODUCTS)
    results = report(aggregation(ids, 100_000 if quick else 1_000_000))
    flush_redis()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE catalog_popularitybucket, catalog_popularityscore")
    interactions = 100_000 if quick else 1_000_000
    results += report(trending(ids, interactions, 30 if quick else 100, 5 if quick else 10))
    # Tracking last: the synchronous design's recompute then reads the same history.
    results += report(tracking(ids, 300 if quick else 1000))
    return results
