"""Semantic search at 100k products (1M with --products): HNSW vs exact scan, recall@10, filters, index build.

Corpus: N synthetic random unit vectors (numpy, fixed seed, drawn in chunks)
with real Product rows (in 20 categories, each stocked in 2 of 4 stores, a
third sold out), every embedding ``ready`` with the product's content_hash and
the model identity, stored as halfvec, loaded with COPY; the HNSW index is
dropped during the load and rebuilt after with its migration definition
(halfvec_cosine_ops, m=16, ef_construction=64), timed, with the peak memory
of the server process that builds it and the index size.

The vectors are drawn from a Gaussian with the mean and covariance of real
all-MiniLM-L6-v2 embeddings of generated product texts (encoded in this run),
then normalised: random, but with the anisotropy of real embeddings (and
harder for an ANN index than real embeddings, which cluster). Queries are
perturbations of random corpus vectors (cosine ~0.9 to their source, like a
query that describes one product). Each goes through
``selectors.product_search`` (limit 10) with the index and with
``exact=True``, without filters and with two (a store + in stock, which keeps
1/3 of the products; a category, 5%); recall@10 is the overlap of the two
result sets. A filtered search widens the scan's ef_search by the fraction
the planner expects to pass, or reads the passing rows exactly when at most
SEARCH_EXACT_MAX_ROWS pass: each filter's line says which it did. At 100k
the same corpus is also indexed with ef_construction=128 (the build this one
replaced: what the slower build buys). Last, p50 of embedding one
natural-language query (``catalog.embeddings.encode([q])``, distinct
queries, nothing cached).
"""

import hashlib
import random
import re
import resource
import time
from pathlib import Path

import numpy as np
import psycopg
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from bench import Result, demo_products, p50, report, reset_catalog
from catalog import embeddings, services
from catalog.models import Store, embedding_text
from catalog.selectors import product_search, semantic_ef_search

SEED = 20260101
LIMIT = 10
INDEX_NAME = "embedding_vector_hnsw"
CHUNK = 100_000
CATEGORIES = 20  # synthetic-00 ... synthetic-19: a category filter keeps 5% of the corpus
STORES = 4  # product i is stocked in stores i % 4 and (i + 1) % 4, sold out when i % 3 == 0
BRANDS = [
    "Celeste",
    "Green Valley",
    "Nordic",
    "Sunny Farm",
    "Bio Plus",
    "Maison",
    "Alpine",
    "Urban Kitchen",
    "Happy Home",
    "Classic",
    "Value",
    "Premium",
]
VARIANTS = ["", "Organic ", "Family Pack ", "Light ", "Extra ", "Mini ", "Value ", "Deluxe ", "Fairtrade ", "Original "]
QUERIES = [
    "oat milk for my coffee",
    "something sweet for breakfast",
    "gluten free bread",
    "vegan cheese",
    "cheap pasta for a family dinner",
    "sparkling water without sugar",
    "dark chocolate with nuts",
    "ingredients for a curry",
    "baby food",
    "dog treats",
    "organic free range eggs",
    "cold brew coffee",
    "lactose free yogurt",
    "spicy snacks for a party",
    "healthy lunch for work",
    "tea that helps me sleep",
    "fresh fish for the grill",
    "washing up liquid",
    "something to clean the bathroom",
    "nappies size 4",
    "red wine to go with steak",
    "low sugar cereal",
    "high protein snack after the gym",
    "mint toothpaste",
    "flour for baking a cake",
    "frozen pizza",
    "ice cream for a hot day",
    "fruit juice for kids",
    "olive oil for salad",
    "a birthday cake",
    "sourdough",
    "crisps",
    "paracetamol",
    "rice for sushi",
    "tomato sauce",
    "fresh herbs",
    "avocado",
    "beer",
    "kitchen roll",
    "shampoo for dry hair",
]


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def product_texts(count: int) -> list[str]:
    """Distinct catalog-like texts: demo products under brands and variants, with
    descriptions recombined from products of the same category."""
    rnd = random.Random(SEED)
    products = demo_products()
    by_category = {}
    for product in products:
        by_category.setdefault(product["category"], []).append(product)
    texts = set()
    while len(texts) < count:
        product = rnd.choice(products)
        other = rnd.choice(by_category[product["category"]])
        sentences = [s for s in f"{product['description']} {other['description']}".split(". ") if s]
        description = ". ".join(rnd.sample(sentences, min(len(sentences), rnd.randint(1, 3))))
        name = f"{rnd.choice(BRANDS)} {rnd.choice(VARIANTS)}{product['name']}"
        texts.add(embedding_text(name=name, category=product["category"], description=description))
    return sorted(texts)


def realistic_corpus(size: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors with the mean and covariance of real model embeddings of ``samples`` texts.
    Drawn in chunks: 1M x 384 float64 draws at once would take 3 GB."""
    texts = product_texts(samples)
    real = np.array([v for i in range(0, len(texts), 64) for v in embeddings.encode(texts[i : i + 64])])
    mean, cov = real.mean(axis=0), np.cov(real.T)
    chunks = [min(CHUNK, size - start) for start in range(0, size, CHUNK)]
    return np.concatenate([unit(rng.multivariate_normal(mean, cov, size=n, method="eigh")) for n in chunks])


def near_queries(corpus: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Source vector + noise of half its norm: cosine ~0.9 to the source."""
    sources = corpus[rng.choice(len(corpus), count, replace=False)]
    return unit(sources + 0.5 * unit(rng.standard_normal(sources.shape)))


def backend_peak_rss_mb(conn) -> float:
    """Peak resident memory (VmHWM) of this connection's server process, in MiB (local server)."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def connect():
    params = connection.settings_dict
    conn = psycopg.connect(
        dbname=params["NAME"], host=params["HOST"], user=params["USER"], port=params["PORT"] or None, autocommit=True
    )
    register_vector(conn)
    return conn


def build_index(index_sql: str) -> dict:
    """(Re)build the HNSW index as ``index_sql`` says, on a fresh connection; its build time,
    the building process's peak memory and the index size."""
    with connect() as conn:
        conn.execute(f"DROP INDEX IF EXISTS {INDEX_NAME}")
        conn.execute("SET maintenance_work_mem = '4GB'")  # the graph of 1M halfvecs fits: no slow spill
        conn.execute("SET max_parallel_maintenance_workers = 1")  # leader + 1 worker = the 2 cores
        start = time.perf_counter()
        conn.execute(index_sql)
        seconds = time.perf_counter() - start
        size = conn.execute("SELECT pg_relation_size(%s)", [INDEX_NAME]).fetchone()[0]
        return {"seconds": seconds, "peak_mb": backend_peak_rss_mb(conn), "size_mb": size / 2**20}


def load_corpus(vectors: np.ndarray) -> dict:
    """Empty the catalog, COPY products (in CATEGORIES categories, stocked in STORES stores) and
    ready embeddings, rebuild the HNSW index with its migration's definition (see build_index)."""
    reset_catalog()
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [INDEX_NAME])
        (index_sql,) = cursor.fetchone()
    stores = [
        (Store.objects.filter(code=f"syn-{i}").first() or services.store_create(code=f"syn-{i}", name=f"Store {i}")).id
        for i in range(STORES)
    ]
    with connect() as conn:
        conn.execute(f"DROP INDEX {INDEX_NAME}")
        with conn.transaction(), conn.cursor() as cur:
            columns = (
                "sku, name, description, category, price, currency, active, content_hash, popularity,"
                " created_at, updated_at"
            )
            with cur.copy(f"COPY catalog_product ({columns}) FROM STDIN") as copy:
                for i in range(len(vectors)):
                    name, category = f"Synthetic product {i}", f"synthetic-{i % CATEGORIES:02d}"
                    text = embedding_text(name=name, category=category, description="")
                    digest = hashlib.sha256(text.encode()).hexdigest()
                    copy.write_row((f"SYN-{i:07d}", name, "", category, "1.00", "EUR", True, digest, 0, now, now))
            cur.execute("SELECT id, content_hash FROM catalog_product ORDER BY sku")
            products = cur.fetchall()
            with cur.copy(
                "COPY catalog_stocklevel (product_id, store_id, quantity, created_at, updated_at) FROM STDIN"
            ) as copy:
                for i, (product_id, _) in enumerate(products):
                    for store in (stores[i % STORES], stores[(i + 1) % STORES]):
                        copy.write_row((product_id, store, i % 3, now, now))
            columns = (
                "product_id, vector, model_name, content_hash, status, attempts, error,"
                " embedded_at, created_at, updated_at"
            )
            types = [
                "int8",
                "halfvec",
                "text",
                "text",
                "text",
                "int4",
                "text",
                "timestamptz",
                "timestamptz",
                "timestamptz",
            ]
            identity = embeddings.model_identity()
            with cur.copy(f"COPY catalog_productembedding ({columns}) FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for (product_id, digest), vector in zip(products, vectors, strict=True):
                    copy.write_row((product_id, HalfVector(vector), identity, digest, "ready", 1, "", now, now, now))
    build = build_index(index_sql) | {"sql": index_sql}
    with connect() as conn:
        for table in ("catalog_product", "catalog_stocklevel", "catalog_productembedding"):
            conn.execute(f"VACUUM ANALYZE {table}")
    return build | {"store": stores[0]}


def search_ids(vector: np.ndarray, exact: bool, filters: dict) -> tuple[set[int], float]:
    start = time.perf_counter()
    hits = product_search(vector=vector.tolist(), mode="semantic", limit=LIMIT, exact=exact, **filters)
    return {hit.product.id for hit in hits}, time.perf_counter() - start


def measure(queries: np.ndarray, ef_values: list[int], warmup: np.ndarray, filters: dict | None = None) -> dict:
    """Exact p50/p95; per ef_search value, HNSW p50/p95 and mean recall@10, with ``filters``
    (product_search keywords). The first ef value (the configured one) is timed alternating
    with the exact scans. Other queries run first, so the index is read into shared buffers
    as on a server that has been answering searches for a while."""
    filters = filters or {}
    for query in warmup:
        search_ids(query, False, filters)
    for query in warmup[:3]:
        search_ids(query, True, filters)
    truth, exact_times, results = [], [], {}
    for ef in ef_values:
        with override_settings(SEARCH_EF_SEARCH=ef):
            times, recalls = [], []
            for i, query in enumerate(queries):
                approx, seconds = search_ids(query, False, filters)
                if ef == ef_values[0]:
                    ids, exact_seconds = search_ids(query, True, filters)
                    truth.append(ids)
                    exact_times.append(exact_seconds)
                times.append(seconds)
                recalls.append(len(approx & truth[i]) / len(truth[i]))
        results[ef] = {"hnsw": p50(times) * 1000, "p95": p95(times) * 1000, "recall": float(np.mean(recalls))}
    return {"exact": p50(exact_times) * 1000, "exact_p95": p95(exact_times) * 1000, **results}


def p95(samples: list[float]) -> float:
    return float(np.percentile(samples, 95))


def noop_embed_task_ms() -> float:
    """p50 of the embed task's claim when nothing is stale: the cost of each
    redundant catalog.embed_products message (one is enqueued per product save)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        assert services.embeddings_embed_stale() == 0
        times.append(time.perf_counter() - start)
    return p50(times) * 1000


def run(quick: bool, products: int | None = None) -> list[Result]:
    size, query_count, warmup, samples = (10_000, 20, 50, 1000) if quick else (100_000, 50, 300, 3000)
    size = products or size
    large = size > 100_000  # one build only: no what-if build
    rng = np.random.default_rng(SEED)
    n, ef = (f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1000}k"), settings.SEARCH_EF_SEARCH
    sweep = [ef, *(value for value in (100, 150, 200, 300, 400) if value != ef)]

    start = time.perf_counter()
    corpus = realistic_corpus(size, samples, rng)
    build = load_corpus(corpus)
    load_seconds = time.perf_counter() - start
    queries, warm = near_queries(corpus, query_count, rng), near_queries(corpus, warmup, rng)
    real = measure(queries, sweep, warm)
    filters = {
        "store, in stock (1/3)": {"store_id": build["store"], "in_stock": True},
        "category (5%)": {"category": "synthetic-03"},
    }
    filtered = {name: measure(queries, [ef], warm[:50], params) for name, params in filters.items()}
    scans = {name: semantic_ef_search(limit=LIMIT, **params) for name, params in filters.items()}
    noop_ms = noop_embed_task_ms()
    params = re.search(r"WITH \((.*)\)", build["sql"]).group(1).replace("'", "")

    b = "search"
    results = [
        Result(b, f"corpus ({samples} real embeddings -> {n} vectors) + COPY + index", load_seconds, "s"),
        Result(b, f"  of which HNSW index build (halfvec, {params})", build["seconds"], "s"),
        Result(b, "  index build: peak memory of the building server process", build["peak_mb"], "MiB"),
        Result(b, "  index size", build["size_mb"], "MiB"),
        Result(b, "this bench process: peak memory (corpus generation, COPY)", peak_rss_mb(), "MiB"),
        Result(b, f"exact scan search p50 ({query_count} queries)", real["exact"], "ms"),
        Result(b, f"HNSW search p50, ef_search={ef} (SEARCH_EF_SEARCH)", real[ef]["hnsw"], "ms"),
        Result(b, f"HNSW search p95, ef_search={ef}", real[ef]["p95"], "ms"),
        # The speed target is set for 100k: at 10k (--quick) an exact scan is still cheap.
        Result(
            b,
            f"search p50 at {n}, HNSW / exact, ef_search={ef}" + (" (target: 100k)" if quick else ""),
            real[ef]["hnsw"] / real["exact"],
            "x",
            "" if quick else "<= 0.1",
        ),
        Result(b, f"recall@{LIMIT} HNSW vs exact, ef_search={ef}", real[ef]["recall"], "", ">= 0.95"),
    ]
    for name, figures in filtered.items():
        scan = "exact: few pass" if scans[name] is None else f"HNSW, ef_search={scans[name]}"
        results += [
            Result(b, f"filter {name}: search p50 ({scan})", figures[ef]["hnsw"], "ms"),
            Result(b, f"filter {name}: search p95", figures[ef]["p95"], "ms"),
            Result(b, f"filter {name}: exact scan p50", figures["exact"], "ms"),
            Result(b, f"filter {name}: recall@{LIMIT} vs exact with the filter", figures[ef]["recall"], "", ">= 0.95"),
        ]
    for value in sweep[1:]:
        results += [
            Result(b, f"  what-if ef_search={value}: HNSW / exact", real[value]["hnsw"] / real["exact"], "x"),
            Result(b, f"  what-if ef_search={value}: recall@{LIMIT}", real[value]["recall"], ""),
        ]
    results.append(Result(b, f"embed task with nothing stale at {n} products (claim query)", noop_ms, "ms"))
    if not large:
        # Build parameters by measurement: the same corpus with the build this one replaced.
        slower = re.sub(r"ef_construction='\d+'", "ef_construction='128'", build["sql"])
        what_if = build_index(slower)
        with connect() as conn:
            conn.execute("ANALYZE catalog_productembedding")
        other = measure(queries, list(dict.fromkeys([ef, 100])), warm[:50])
        results += [
            Result(b, "  what-if ef_construction=128: index build", what_if["seconds"], "s"),
            Result(b, f"  what-if ef_construction=128: recall@{LIMIT}, ef_search={ef}", other[ef]["recall"], ""),
            Result(b, f"  what-if ef_construction=128: HNSW p50, ef_search={ef}", other[ef]["hnsw"], "ms"),
            Result(b, f"  what-if ef_construction=128: recall@{LIMIT}, ef_search=100", other[100]["recall"], ""),
        ]
    reset_catalog()

    encode_times = []
    for query in QUERIES[: 20 if quick else len(QUERIES)]:
        start = time.perf_counter()
        embeddings.encode([query])
        encode_times.append(time.perf_counter() - start)
    results.append(
        Result(
            b,
            f"query embedding p50, encode([q]), {settings.EMBEDDING_BACKEND} ({len(encode_times)} distinct queries)",
            p50(encode_times) * 1000,
            "ms",
        )
    )
    return report(results)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
