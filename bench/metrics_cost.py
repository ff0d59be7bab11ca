"""What instrumentation costs: metrics on (METRICS_ENABLED=1) vs off, in the same run.

- **Task throughput.** No-op ``background.ping`` jobs through enqueue() and the
  ledger (as in ``task_throughput``) on one real worker started with metrics on,
  then one with metrics off (no task signal handlers, no django-prometheus
  database wrapper), back to back in alternating order; each round gives one
  on/off ratio and the median of the rounds counts. The publishing side (this
  process) is the same for both. (A py-spy profile of the worker under this load
  puts prometheus-client and our signal handlers at about 1 % of its samples.)
- **POST product p50.** Over HTTP against two gunicorn servers (one process
  each) started from the same code and database, one with metrics on (every
  counter in a multiprocess file, django-prometheus middleware and database
  wrapper) and one off; the embed switch on ``background``, no worker (the
  messages queue). Requests alternate in blocks between the two servers.
"""

import os
import statistics
import tempfile

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from bench import Result, p50, product_payloads, report, reset_catalog, set_switch
from bench.server import LOG_DIR, Server
from bench.task_throughput import through_ledger
from catalog.tasks import embed_products
from celeste.devserver.processes import celery_worker


def _env(metrics_on: bool, metrics_dir: str) -> dict:
    env = {"LOG_LEVEL": "WARNING", "EMBEDDING_WARM_ON_START": "0", "METRICS_ENABLED": "1" if metrics_on else "0"}
    if metrics_on:
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    return env


def task_throughput(n: int, rounds: int, metrics_dir: str) -> tuple[dict[bool, float], float]:
    """Each round runs both workers back to back (in alternating order) and yields one
    on/off ratio; the median ratio over the rounds cancels the machine's load drifting
    between rounds, which a ratio of best-of-rounds rates does not."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    ratios = []
    for round_no in range(rounds):
        order = (True, False) if round_no % 2 == 0 else (False, True)
        for metrics_on in order:
            env = _env(metrics_on, metrics_dir)
            with celery_worker(queues="fast", concurrency=1, env=env, log_dir=LOG_DIR) as worker:
                through_ledger(50, worker)  # warm: imports, connections
                rates[metrics_on].append(through_ledger(n, worker))
        ratios.append(rates[True][-1] / rates[False][-1])
    return {on: statistics.median(values) for on, values in rates.items()}, statistics.median(ratios)


def post_product(per_server: int, rounds: int, metrics_dir: str) -> dict[bool, float]:
    reset_catalog()
    set_switch(embed_products.name, "background")
    user = get_user_model().objects.create_user(username="bench-metrics-staff", is_staff=True)
    auth = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
    payloads = iter(product_payloads(2 * (per_server + 20), prefix="METRICS"))
    servers = {on: Server(f"metrics-{'on' if on else 'off'}", _env(on, metrics_dir)) for on in (True, False)}
    timings: dict[bool, list[float]] = {True: [], False: []}
    try:
        for server in servers.values():  # warm both
            for _ in range(10):
                server.post("/api/v1/products/", {**next(payloads), "price": "1.00"}, expect=201, headers=auth)
        for round_no in range(rounds):
            order = (True, False) if round_no % 2 == 0 else (False, True)
            for on in order:
                for _ in range(per_server // rounds):
                    data = next(payloads)
                    timings[on].append(
                        servers[on].post(
                            "/api/v1/products/", {**data, "price": str(data["price"])}, expect=201, headers=auth
                        )
                    )
    finally:
        for server in servers.values():
            server.stop()
    reset_catalog()
    return {on: p50(samples) for on, samples in timings.items()}


def run(quick: bool) -> list[Result]:
    n, rounds = (300, 2) if quick else (600, 7)
    per_server, post_rounds = (100, 4) if quick else (400, 10)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="celeste-bench-metrics-")
    rates, ratio = task_throughput(n, rounds, metrics_dir)
    posts = post_product(per_server, post_rounds, metrics_dir)
    http_p50 = f"POST product p50 over HTTP (n={per_server})"
    return report(
        [
            Result("metrics_cost", f"no-op jobs/s, metrics on (N={n}, median of {rounds})", rates[True], "jobs/s"),
            Result("metrics_cost", f"no-op jobs/s, metrics off (N={n}, median of {rounds})", rates[False], "jobs/s"),
            Result("metrics_cost", "task throughput on / off, median of paired rounds", ratio, "ratio", ">= 0.95"),
            Result("metrics_cost", f"{http_p50}, metrics on", posts[True] * 1000, "ms"),
            Result("metrics_cost", f"{http_p50}, metrics off", posts[False] * 1000, "ms"),
            Result("metrics_cost", "POST product p50 ratio on / off", posts[True] / posts[False], "x", "<= 1.05"),
        ]
    )
