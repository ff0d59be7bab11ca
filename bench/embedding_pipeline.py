"""Embedding backends and pipeline: query p50, batch throughput and quality per backend; burst -> all embedded.

Encoders, in this process, for each backend (torch, onnx, onnx-int8): p50 of
embedding one query (distinct queries), raw throughput of
``catalog.embeddings.encode`` in batches of 64 on the burst's texts, and the
vectors of 1,000 generated catalog texts, compared with torch's (mean cosine).

Raw throughput is the better of two layouts: one loop whose model calls use every
core, and one loop per lane of the embed job (by default one per core of one thread
each; torch runs one lane). The pipeline is held to the best the model does on this
machine.

Pipeline, once with EMBEDDING_BACKEND=torch (today's: one lane whose model calls
use every core) and once with the default backend (its lanes and threads as
configured, by default a lane per core): a real Celery worker (queues slow,fast,
concurrency 1, model already warm) while this process creates N products in a
loop through ``product_create``, each in its own transaction as the API would (so each
enqueues). Timed from the first create until every embedding is ``ready`` with
the product's current content_hash and the backend's model identity. The
reference for the default backend is its raw throughput (before and after the
pipelines, the better of the two counts). The bench process and the worker
share the machine's 2 cores, as web and worker would on one box, so the
creates compete with the encoding for CPU.

Diagnostics without a target: the CPU time each product costs the creating
process, the worker and Postgres, against the CPU time of encoding it raw (their
ratio bounds pipeline / raw when every core is busy all the time); how long the
worker takes to get through every message of the burst, and a drain-only run
(the worker is paused with SIGSTOP while N more products are created, then
resumed and timed), which shows the pipeline's own overhead without the creates
competing for the cores.
"""

import functools
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import redis
from django.conf import settings
from django.db.models import F
from django.test import override_settings

from bench import (
    BASE_DIR,
    Result,
    cached_switches,
    flush_redis,
    p50,
    product_payloads,
    report,
    reset_catalog,
    set_switch,
    wait_until,
)
from bench.search import QUERIES, product_texts
from catalog import embeddings, services, tasks
from catalog.models import EmbeddingStatus, ProductEmbedding, embedding_text
from celeste import metrics
from celeste.devserver import embedded
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


def raw_encode_rate(texts: list[str]) -> dict:
    """Texts/s and CPU seconds per text of ``encode`` in batches of RAW_BATCH in this process
    (model loaded first), in the better of two layouts: one loop whose model calls use every
    core, or, for a backend that runs lanes, one loop per lane with its share of the cores."""
    return max((_raw_rate(texts, loops) for loops in {1, embeddings.lanes()}), key=lambda raw: raw["rate"])


def _raw_rate(texts: list[str], loops: int) -> dict:
    batches = [texts[i : i + RAW_BATCH] for i in range(0, len(texts), RAW_BATCH)]
    with override_settings(EMBEDDING_LANES=loops, EMBEDDING_THREADS=0), ThreadPoolExecutor(loops) as pool:
        embeddings.encode(batches[0])
        start, cpu = time.perf_counter(), time.process_time()
        list(pool.map(embeddings.encode, batches))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rate": len(texts) / seconds, "cpu": cpu / len(texts), "loops": loops}


def postgres_processes() -> list[psutil.Process]:
    """The embedded cluster's postmaster and its backends (the bench runs on the embedded servers)."""
    postmaster = psutil.Process(embedded.postmaster_pid())
    return [postmaster, *postmaster.children()]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a backend that closed its connection: its time is lost
            continue
        total += times.user + times.system
    return total


def query_p50_ms(queries: list[str]) -> float:
    """p50 of embedding one query (distinct queries: nothing cached), model loaded first."""
    embeddings.encode(["load the model"])
    times = []
    for query in queries:
        begin = time.perf_counter()
        embeddings.encode([query])
        times.append(time.perf_counter() - begin)
    return p50(times) * 1000


def encoders(texts: list[str], quality_texts: list[str]) -> dict:
    """Per backend, in this process: query p50, raw batch throughput, and the vectors of
    ``quality_texts`` (batches of RAW_BATCH) to compare with torch's."""
    figures = {}
    for backend in embeddings.BACKENDS:
        with override_settings(EMBEDDING_BACKEND=backend):
            vectors = np.array(
                [
                    v
                    for i in range(0, len(quality_texts), RAW_BATCH)
                    for v in embeddings.encode(quality_texts[i : i + RAW_BATCH])
                ]
            )
            figures[backend] = {
                "query_ms": query_p50_ms(QUERIES),
                "raw": raw_encode_rate(texts),
                "vectors": vectors,
            }
    return figures


def pipeline(backend: str, payloads: dict[str, list[dict]], *, drain_only: bool) -> dict:
    """A burst of creates on a real worker running ``backend`` until all are embedded
    (and, with ``drain_only``, the same with the worker paused while the backlog builds up)."""
    figures = {}
    with (
        override_settings(EMBEDDING_BACKEND=backend),
        cached_switches(),
        celery_worker(
            queues="slow,fast",
            concurrency=1,
            env={"LOG_LEVEL": "INFO", "EMBEDDING_BACKEND": backend},
            log_dir=BASE_DIR / "var" / "bench" / "logs",
        ) as worker,
    ):
        wait_until(all_embedded(create(payloads["warm"])), 120, worker, "warm-up")  # the worker has loaded the model
        calls_before = metrics.sample_value("celeste_embedding_encode_calls_total")
        worker_tree = psutil.Process(worker.proc.pid)
        groups = {
            "creating process": [psutil.Process()],
            "worker": [worker_tree, *worker_tree.children(recursive=True)],
            "Postgres": postgres_processes(),
        }
        cpu_before = {name: cpu_seconds(processes) for name, processes in groups.items()}
        start = time.monotonic()
        ids = create(payloads["burst"])
        figures["created"] = time.monotonic() - start
        figures["done"] = wait_until(all_embedded(ids), 300, worker, "burst") - start
        groups["Postgres"] = postgres_processes()  # with the backends opened meanwhile
        figures["cpu"] = {
            name: (cpu_seconds(processes) - cpu_before[name]) / len(ids) for name, processes in groups.items()
        }
        figures["calls"] = metrics.sample_value("celeste_embedding_encode_calls_total") - calls_before
        figures["drained"] = wait_until(queue_empty, 300, worker, "leftover messages") - start
        if drain_only:
            os.killpg(worker.proc.pid, signal.SIGSTOP)  # hold the worker while the backlog builds up
            try:
                held_start = time.monotonic()
                held_ids = create(payloads["held"])
                figures["held_created"] = time.monotonic() - held_start
            finally:
                os.killpg(worker.proc.pid, signal.SIGCONT)
            resumed = time.monotonic()
            figures["held_done"] = wait_until(all_embedded(held_ids), 300, worker, "drain-only") - resumed
        flush_redis()  # drop the leftover no-op messages so the worker stops cleanly
    reset_catalog()
    return figures


def run(quick: bool) -> list[Result]:
    count = 200 if quick else 1000
    reset_catalog()
    set_switch(tasks.embed_products.name, "background")
    payloads = {
        "warm": product_payloads(8, prefix="WARM"),
        "burst": product_payloads(count, prefix="BURST"),
        "held": product_payloads(count, prefix="HELD"),
    }
    default = settings.EMBEDDING_BACKEND
    # Raw throughput on the burst's texts, before and after the pipelines: the better of
    # the two is the reference (other load on the machine only lowers it).
    texts = [
        embedding_text(name=p["name"], category=p["category"], description=p["description"]) for p in payloads["burst"]
    ]
    quality_texts = product_texts(200 if quick else 1000)
    before = encoders(texts, quality_texts)
    runs = {"torch": pipeline("torch", payloads, drain_only=False)}
    runs[default] = pipeline(default, payloads, drain_only=True)
    with override_settings(EMBEDDING_BACKEND=default):
        raw = max(before[default]["raw"], raw_encode_rate(texts), key=lambda raw: raw["rate"])
        layout = f"{embeddings.lanes()} lane(s) x {embeddings.threads()} thread(s)"
    with override_settings(EMBEDDING_BACKEND="torch"):
        torch_layout = f"{embeddings.lanes()} lane(s) x {embeddings.threads()} thread(s)"
    torch_rate = count / runs["torch"]["done"]
    rate = count / runs[default]["done"]
    drain_rate = count / runs[default]["held_done"]
    cpu = runs[default]["cpu"]

    b = "embedding_pipeline"
    results = []
    for backend, figures in before.items():
        results.append(
            Result(b, f"{backend}: query embedding p50 ({len(QUERIES)} distinct queries)", figures["query_ms"], "ms")
        )
        results.append(
            Result(
                b,
                f"{backend}: raw encode throughput (batches of {RAW_BATCH}, {figures['raw']['loops']} loop(s))",
                figures["raw"]["rate"],
                "texts/s",
            )
        )
    torch_vectors = before["torch"]["vectors"]
    for backend in ("onnx", "onnx-int8"):
        cosines = (before[backend]["vectors"] * torch_vectors).sum(axis=1)
        results.append(
            Result(
                b,
                f"{backend} vs torch: mean cosine over {len(quality_texts)} catalog texts",
                float(cosines.mean()),
                "",
                ">= 0.99",
            )
        )
        results.append(Result(b, f"{backend} vs torch: lowest cosine", float(cosines.min()), ""))
    results += [
        Result(b, f"torch pipeline ({torch_layout}): {count} creates -> all embedded", runs["torch"]["done"], "s"),
        Result(b, "torch pipeline throughput", torch_rate, "products/s"),
        Result(b, f"{default} (default) pipeline: {count} product_create calls took", runs[default]["created"], "s"),
        Result(
            b, f"{default} (default) pipeline ({layout}): {count} creates -> all embedded", runs[default]["done"], "s"
        ),
        Result(b, f"{default} (default) pipeline throughput", rate, "products/s"),
        Result(b, f"pipeline throughput, {default} / torch", rate / torch_rate, "x", ">= 1.5"),
        Result(b, f"{default} raw encode throughput (best of 2, {raw['loops']} loop(s))", raw["rate"], "texts/s"),
        Result(b, f"pipeline / raw throughput, {default}", rate / raw["rate"], "x", ">= 0.7"),
        *(
            Result(b, f"{default} pipeline: CPU per product, {name}", seconds * 1000, "ms")
            for name, seconds in cpu.items()
        ),
        Result(b, f"{default}: CPU per text of the raw encode", raw["cpu"] * 1000, "ms"),
        Result(
            b,
            "bound on pipeline / raw with every core busy: raw CPU / pipeline CPU",
            raw["cpu"] / sum(cpu.values()),
            "x",
        ),
        Result(b, f"{default}: encode calls during the burst", runs[default]["calls"], "calls"),
        Result(b, f"{default}: all enqueued tasks of the burst finished (no-ops too)", runs[default]["drained"], "s"),
        Result(b, f"drain-only: {count} creates with the worker paused took", runs[default]["held_created"], "s"),
        Result(b, "drain-only: throughput from resume to all embedded", drain_rate, "products/s"),
        Result(b, "drain-only / raw throughput (no target)", drain_rate / raw["rate"], "x"),
    ]
    return report(results)
