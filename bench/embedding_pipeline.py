"""Embedding pipeline throughput (burst of creates -> all embedded) vs raw model.encode batches.

Pipeline: a real Celery worker (queues slow,fast, concurrency 1, model already
warm) while this process creates N products in a loop through
``product_create``, each in its own transaction as the API would (so each
enqueues). Timed from the first create until every embedding is ``ready`` with
the product's current content_hash. Raw: ``catalog.embeddings.encode`` on the
same N texts in batches of 64, in this process, before and after the pipeline
(the better of the two counts). The bench
process and the worker share the machine's 2 cores, as web and worker would
on one box, so the creates compete with the encoding for CPU.

Diagnostics without a target: how long the worker takes to get through every
message of the burst (one per save; most find nothing left to embed), and a
drain-only run (the worker is paused with SIGSTOP while N more products are
created, then resumed and timed), which shows the pipeline's own overhead
without the creates competing for the cores.
"""

import functools
import os
import signal
import time

import redis
from django.conf import settings
from django.db.models import F

from bench import (
    BASE_DIR,
    Result,
    cached_switches,
    flush_redis,
    product_payloads,
    report,
    reset_catalog,
    set_switch,
    wait_until,
)
from catalog import embeddings, services, tasks
from catalog.models import EmbeddingStatus, ProductEmbedding, embedding_text
from celeste import metrics
from celeste.devserver.processes import celery_worker

RAW_BATCH = 64


def embedded_count(ids: list[int]) -> int:
    # A range, not 1,000 literal ids: polling must stay cheap, it shares the cores with the worker.
    return ProductEmbedding.objects.filter(
        product_id__gte=min(ids),
        product_id__lte=max(ids),
        status=EmbeddingStatus.READY,
        content_hash=F("product__content_hash"),
        model_name=embeddings.model_identity(),
    ).count()


def all_embedded(ids: list[int]):
    return lambda: embedded_count(ids) == len(ids)


@functools.cache
def broker() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def queue_empty() -> bool:
    """No message waiting in the slow queue (kombu: one list per priority) nor being worked on."""
    client = broker()
    waiting = sum(client.llen(key) for key in client.scan_iter("slow*") if client.type(key) == b"list")
    return waiting + client.hlen("unacked") == 0


def create(payloads: list[dict]) -> list[int]:
    ids = [services.product_create(**payload).id for payload in payloads]
    assert ids == list(range(ids[0], ids[0] + len(ids))), "ids of one burst must be contiguous (see embedded_count)"
    return ids


def raw_encode_rate(texts: list[str]) -> float:
    """Texts/s of ``encode`` in batches of RAW_BATCH in this process (model loaded first)."""
    embeddings.encode(texts[:RAW_BATCH])
    start = time.perf_counter()
    for i in range(0, len(texts), RAW_BATCH):
        embeddings.encode(texts[i : i + RAW_BATCH])
    return len(texts) / (time.perf_counter() - start)


def run(quick: bool) -> list[Result]:
    count = 200 if quick else 1000
    reset_catalog()
    set_switch(tasks.embed_products.name, "background")
    warm, burst, held = (
        product_payloads(8, prefix="WARM"),
        product_payloads(count, prefix="BURST"),
        product_payloads(count, prefix="HELD"),
    )
    # Raw throughput on the burst's texts, before and after the pipeline: the
    # better of the two is the reference (other load on the machine only lowers it).
    texts = [embedding_text(name=p["name"], category=p["category"], description=p["description"]) for p in burst]
    raw_before = raw_encode_rate(texts)

    with (
        cached_switches(),
        celery_worker(
            queues="slow,fast", concurrency=1, env={"LOG_LEVEL": "INFO"}, log_dir=BASE_DIR / "var" / "bench" / "logs"
        ) as worker,
    ):
        wait_until(all_embedded(create(warm)), 120, worker, "warm-up")  # the worker child has loaded the model
        calls_before = metrics.sample_value("celeste_embedding_encode_calls_total")
        start = time.monotonic()
        ids = create(burst)
        created = time.monotonic()
        done = wait_until(all_embedded(ids), 300, worker, "burst")
        encode_calls = metrics.sample_value("celeste_embedding_encode_calls_total") - calls_before
        drained = wait_until(queue_empty, 300, worker, "leftover messages")

        os.killpg(worker.proc.pid, signal.SIGSTOP)  # hold the worker while the backlog builds up
        try:
            held_start = time.monotonic()
            held_ids = create(held)
            held_created = time.monotonic() - held_start
        finally:
            os.killpg(worker.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        held_done = wait_until(all_embedded(held_ids), 300, worker, "drain-only")
        flush_redis()  # drop the leftover no-op messages so the worker stops cleanly
    pipeline_rate = count / (done - start)
    drain_rate = count / (held_done - resumed)

    raw_rate = max(raw_before, raw_encode_rate(texts))
    reset_catalog()

    b = "embedding_pipeline"
    return report(
        [
            Result(b, f"burst: {count} product_create calls took", created - start, "s"),
            Result(b, f"burst: {count} creates -> all embedded", done - start, "s"),
            Result(b, "pipeline throughput", pipeline_rate, "products/s"),
            Result(b, f"raw encode throughput (batches of {RAW_BATCH}, this process, best of 2)", raw_rate, "texts/s"),
            Result(b, "pipeline / raw throughput", pipeline_rate / raw_rate, "x", ">= 0.7"),
            Result(b, "encode calls during the burst", encode_calls, "calls"),
            Result(b, f"burst: all {count} enqueued tasks finished (no-ops too)", drained - start, "s"),
            Result(b, f"drain-only: {count} creates with the worker paused took", held_created, "s"),
            Result(b, "drain-only: throughput from resume to all embedded", drain_rate, "products/s"),
            Result(b, "drain-only / raw throughput (no target)", drain_rate / raw_rate, "x"),
        ]
    )
