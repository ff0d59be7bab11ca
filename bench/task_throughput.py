"""Job ledger cost: no-op task throughput through enqueue() vs the same task sent bare to Celery.

One real worker (queue fast, concurrency 1, prefork). Ledger: N ``background.ping``
jobs enqueued in one transaction, so each is an outbox row that the worker
claims when it starts and deletes when it finishes (two writes per job more
than a bare message); timed from the commit until every row is gone. Bare:
N ``send_task("background.ping")`` messages without the ledger header (what
Celery alone costs: the same result-backend write, no claim, no finish);
timed from the first send until every result is stored. The worker is warm
(one round of each runs first), and the two are measured alternately, the
better of two rounds counting for each.
"""

import time

from django.db import transaction
from django_celery_results.models import TaskResult

from bench import BASE_DIR, Result, flush_redis, report, wait_until
from celeste.background.models import OutboxMessage
from celeste.background.publisher import publisher
from celeste.background.queue import enqueue
from celeste.background.tasks import ping
from celeste.celery import app
from celeste.devserver.processes import celery_worker


def through_ledger(n: int, worker) -> float:
    started = time.monotonic()
    with transaction.atomic():
        for _ in range(n):
            enqueue(ping)
    publisher.flush(timeout=60)
    finished = wait_until(lambda: not OutboxMessage.objects.exists(), 600, worker, "ledger jobs")
    return n / (finished - started)


def bare(n: int, worker) -> float:
    TaskResult.objects.filter(task_name=ping.name).delete()
    started = time.monotonic()
    for _ in range(n):
        app.send_task(ping.name)
    finished = wait_until(
        lambda: TaskResult.objects.filter(task_name=ping.name).count() >= n, 600, worker, "bare tasks"
    )
    return n / (finished - started)


def run(quick: bool) -> list[Result]:
    n = 200 if quick else 1000
    flush_redis()
    env = {"LOG_LEVEL": "WARNING", "EMBEDDING_WARM_ON_START": "0"}
    with celery_worker(queues="fast", concurrency=1, env=env, log_dir=BASE_DIR / "var" / "bench" / "logs") as worker:
        through_ledger(50, worker), bare(50, worker)  # warm up: imports, connections
        ledger_rates, bare_rates = [], []
        for _ in range(2):
            ledger_rates.append(through_ledger(n, worker))
            bare_rates.append(bare(n, worker))
    ledger_rate, bare_rate = max(ledger_rates), max(bare_rates)
    return report(
        [
            Result("task_throughput", f"no-op jobs/s through enqueue + ledger (N={n})", ledger_rate, "jobs/s"),
            Result("task_throughput", f"no-op tasks/s sent bare to Celery (N={n})", bare_rate, "tasks/s"),
            Result("task_throughput", "ledger throughput vs bare Celery", ledger_rate / bare_rate, "ratio"),
        ]
    )
