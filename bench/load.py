"""HTTP load test (Locust) of the stack `make run` starts: capacity at p95 <= 300 ms, background vs sync, isolation.

The stack is ``runall``'s own processes (``stack_commands``: gunicorn, the Celery workers (fast;
slow and images) at their niceness and encoder threads, beat) on the bench's database and Redis, on
loopback; the load is Locust (``bench/load_users.py``) in a subprocess, headless, each step
bounded in time. Every step offers a constant rate (users × ``constant_throughput``) for a fixed
time and prints, per endpoint, requests/s and p50/p95/p99. While it runs the bench samples the backlog (outbox jobs
not finished plus embeddings pending); after it, it waits until the backlog is empty (the drain).

A rate passes when nothing failed, the offered rate was reached (90 %), p95 <= 300 ms and the
backlog did not grow (its value at the end is within 25 % + 20 of the first half's peak). A
capacity is the highest passing rate of a short rising search (×1.5 steps, one step between the
last pass and the first miss; falling to 0.5 req/s at most while the first step misses; a step lasts
at least 20 requests' time). Task switches pick the mode: ``background`` (as shipped) or
``sync`` (every task run inside the request, the plan's "before").

- Web tier: web pinned to core 0 and the workers + beat to core 1 (``taskset``); Postgres, Redis and
  Locust are not pinned (they share both cores), so the split is of Celeste's processes only.
- Whole box: nothing pinned; the figure is the sustained rate, requests / (run + drain).
- Isolation: reads at a fixed rate with the worker idle, then during a burst of 5,000 product
  embeddings and product images (the switch of the embed task goes off -> background, which
  enqueues every stale product at once; the images are uploaded as the step starts). The burst's
  products are saved (pending) before the idle step: both steps read the same catalog.
"""

import csv
import io
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from PIL import Image
from rest_framework.authtoken.models import Token

from bench import BASE_DIR, Result, demo_products, product_payloads, report, reset_catalog, set_switch
from catalog import services as catalog_services
from catalog.images import product_image_upload
from catalog.models import ImageStatus, Product, ProductImage, StockLevel, Store
from celeste.background.models import OutboxMessage, TaskSwitch
from celeste.background.schedules import ensure_periodic_tasks, ensure_task_switches
from celeste.background.services import task_switch_set
from celeste.devserver.loopback import free_port
from celeste.devserver.management.commands.runall import stack_commands
from celeste.devserver.processes import database_url_for_current_connection
from orders import services as order_services
from orders.models import Order, OrderItem, OrderStatus
from orders.payments import PAYMENT_SUCCEEDED, SIGNATURE_HEADER, signature_header

LOG_DIR = BASE_DIR / "var" / "bench" / "logs" / "load"
P95_TARGET_MS = 300
USER_RATE = 2.0  # at most this many requests/s per Locust user: a step runs rate / USER_RATE users, rounded up
STEP_FACTOR = 1.5
MIN_RATE = 0.5  # req/s: the search goes no lower (low enough for the plan's "before" to have a capacity)
MIN_REQUESTS = 20  # a step lasts long enough for this many requests: a p95 of a handful says little
CUSTOMERS = 200
# The write paths that used to do slow work in the request (issue 17): embedding, the payment's
# pre-cache, notifications and Odoo order, the status change's notifications.
WRITES = {"product_create": 1, "product_update": 1, "pay": 1, "confirm": 1}
MIXED = {
    "browse": 30,
    "search": 15,
    "view": 20,
    "order_detail": 10,
    "notifications": 8,
    "place_order": 4,
    "pay": 4,
    "product_create": 3,
    "product_update": 3,
    "confirm": 3,
}
READS = {"browse": 40, "search": 20, "order_detail": 20, "notifications": 20}
QUERIES = ["oat milk", "gluten free pasta", "something for breakfast", "dark chocolate", "laundry detergent"]
QUERIES += ["baby food", "sparkling water", "vegan cheese", "fresh bread", "screwdriver set", "shampoo", "frozen pizza"]


@dataclass
class Step:
    label: str
    rate: float
    seconds: float
    stats: dict  # endpoint name -> {"count", "failures", "rps", "p50", "p95", "p99"}; "Aggregated" too
    backlog: list[int] = field(default_factory=list)
    drain_seconds: float = 0.0

    @property
    def total(self) -> dict:
        return self.stats["Aggregated"]

    @property
    def backlog_grew(self) -> bool:
        half = self.backlog[: max(1, len(self.backlog) // 2)]
        return bool(self.backlog) and self.backlog[-1] > max(half) * 1.25 + 20

    @property
    def passed(self) -> bool:
        t = self.total
        return (
            t["failures"] == 0 and t["rps"] >= 0.9 * self.rate and t["p95"] <= P95_TARGET_MS and not self.backlog_grew
        )

    @property
    def sustained_rps(self) -> float:
        """Requests per second of the run and the drain together: the work the box really kept up with."""
        return self.total["count"] / (self.seconds + self.drain_seconds)

    def print(self) -> None:
        t = self.total
        print(
            f"    {self.label} offered {self.rate:.1f}/s: {t['rps']:.1f} req/s, p50/p95/p99 "
            f"{t['p50']:.0f}/{t['p95']:.0f}/{t['p99']:.0f} ms, {t['failures']} failed; backlog "
            f"{self.backlog[0] if self.backlog else 0}->{max(self.backlog, default=0)}->"
            f"{self.backlog[-1] if self.backlog else 0}{' GROWING' if self.backlog_grew else ''}, "
            f"drain {self.drain_seconds:.1f} s -> {'pass' if self.passed else 'miss'}",
            flush=True,
        )
        for name, s in sorted(self.stats.items()):
            if name != "Aggregated":
                print(
                    f"      {name:<44} {s['rps']:7.1f} req/s  p50 {s['p50']:5.0f}  p95 {s['p95']:5.0f}  "
                    f"p99 {s['p99']:5.0f} ms  {s['failures']} failed",
                    flush=True,
                )


# --- the stack ---------------------------------------------------------------------------


class Stack:
    """runall's web, worker and beat (not the stream: no SSE in the mix) on the bench's database."""

    def __init__(self, name: str, *, backend: str, pinned: bool):
        self.port = free_port()
        commands, envs = stack_commands(host="127.0.0.1", port=self.port, stream_port=0)
        env = {
            "DATABASE_URL": database_url_for_current_connection(),
            "REDIS_URL": settings.REDIS_URL,
            "EMBEDDING_BACKEND": backend,
            # runall's embedded database prints mail to the worker log; here the URL is given.
            "EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend",
            # Every customer places orders step after step: the limit would refuse them.
            "ORDER_MAX_OPEN_UNPAID": "1000000",
        }
        cores = {"web": "0", "worker": "1", "worker-slow": "1", "beat": "1"} if pinned else {}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.procs, self.logs = {}, {}
        for role in ("web", "worker", "worker-slow", "beat"):
            child_env = {**(envs.get(role) or os.environ), **env}
            # The processes read switches through the per-process cache, as deployed (2 s).
            child_env.pop("TASK_SWITCH_CACHE_SECONDS", None)
            argv = (["taskset", "-c", cores[role]] if role in cores else []) + commands[role]
            if role == "beat":
                argv += ["--schedule", str(LOG_DIR / "beat-schedule")]
            self.logs[role] = LOG_DIR / f"{name}-{role}.log"
            with open(self.logs[role], "w") as log:
                self.procs[role] = subprocess.Popen(
                    argv, cwd=BASE_DIR, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        # A search embeds its query: 200 once the web's model is loaded.
        while not self._answers("/api/v1/products/search?q=warm+up") or any(
            " ready." not in self.logs[role].read_text() for role in ("worker", "worker-slow")
        ):
            for role, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{role} exited: {self.logs[role].read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start in {timeout} s; see {LOG_DIR}")
            time.sleep(0.5)
        for _ in range(10):  # the other web process and threads load their models too
            self._answers("/api/v1/products/search?q=warm+up+again")

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=30) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def running_stack(name: str, *, backend: str, pinned: bool):
    stack = Stack(name, backend=backend, pinned=pinned)
    try:
        yield stack
    finally:
        stack.stop()


# --- data --------------------------------------------------------------------------------


class Data:
    """What the users act on: the demo catalog, customers with tokens and addresses, a staff token."""

    def __init__(self, *, customers: int = CUSTOMERS):
        reset_catalog()
        ensure_periodic_tasks()
        ensure_task_switches()
        self.task_names = list(TaskSwitch.objects.values_list("task_name", flat=True))
        self.switches("off")  # seeding enqueues nothing
        from django.core.management import call_command

        call_command("load_demo_catalog", verbosity=0)
        self.stores = list(Store.objects.values_list("id", flat=True))
        self.products = list(Product.objects.values_list("id", flat=True))
        self.catalog = Product.objects.in_bulk()
        self.descriptions = {pid: product.description for pid, product in self.catalog.items()}
        # Every product in every store, never short of stock, whatever the run orders (one
        # statement: the service's per-row path would take most of the seeding time).
        StockLevel.objects.bulk_create(
            [StockLevel(product_id=p, store_id=s, quantity=10_000_000) for p in self.products for s in self.stores],
            update_conflicts=True,
            unique_fields=["product", "store"],
            update_fields=["quantity"],
        )
        User = get_user_model()
        staff = User.objects.create_user(username="load-staff", is_staff=True)
        self.staff_token = Token.objects.create(user=staff).key
        self.customers = []
        for i in range(customers):
            user = User.objects.create_user(username=f"load-customer-{i}", email=f"customer{i}@example.com")
            address = order_services.address_create(
                user=user,
                recipient=f"Customer {i}",
                line1="1 Load Street",
                city="Berlin",
                postal_code="10115",
                country="DE",
            )
            self.customers.append({"user": user, "address": address, "store": random.choice(self.stores)})
        for customer in self.customers:
            customer["order"] = self.orders(1, customer=customer, paid=True)[0]
            customer["token"] = Token.objects.create(user=customer["user"]).key
        self.sequence = itertools.count()
        self.embed_all()

    def switches(self, mode: str) -> None:
        for name in self.task_names:
            set_switch(name, mode)

    def embed_all(self) -> None:
        """Embed what is pending in this process (the demo catalog): search has vectors from the start."""
        catalog_services.embeddings_embed_pending()

    def orders(self, count: int, *, customer: dict | None = None, paid: bool = False) -> list[int]:
        """``count`` orders of 1–3 demo products, pending or paid, written in bulk: seeding between
        steps must be quick. No stock is taken (every product has 10M everywhere) and nothing is
        enqueued; the orders are what the API would have stored."""
        if not count:
            return []
        with connection.cursor() as cursor:
            cursor.execute("SELECT nextval('orders_order_number_seq') FROM generate_series(1, %s)", [count])
            numbers = [f"CEL-{value:08d}" for (value,) in cursor.fetchall()]
        orders, lines = [], []
        for number in numbers:
            owner = customer or random.choice(self.customers)
            items = []
            for product_id in sorted(random.sample(self.products, random.randint(1, 3))):
                product, quantity = self.catalog[product_id], random.randint(1, 3)
                items.append(
                    OrderItem(
                        product_id=product.id,
                        product_name=product.name,
                        sku=product.sku,
                        unit_price=product.price,
                        quantity=quantity,
                        line_total=product.price * quantity,
                    )
                )
            total = sum(item.line_total for item in items)
            orders.append(
                Order(
                    number=number,
                    user=owner["user"],
                    store_id=owner["store"],
                    address=owner["address"],
                    currency=self.catalog[items[0].product_id].currency,
                    subtotal=total,
                    total=total,
                    status=OrderStatus.PAID if paid else OrderStatus.PENDING,
                    paid_at=timezone.now() if paid else None,
                )
            )
            lines.append(items)
        Order.objects.bulk_create(orders)
        for order, items in zip(orders, lines, strict=True):
            for item in items:
                item.order = order
        OrderItem.objects.bulk_create([item for items in lines for item in items])
        return [order.id for order in orders]

    def plan(self, *, weights: dict[str, int], rate: float, seconds: float, mode: str) -> dict:
        """The plan of one step, with enough one-time items for its rate (and a margin)."""
        total = sum(weights.values())

        def needed(name: str) -> int:
            return math.ceil(rate * seconds * weights.get(name, 0) / total * 1.3) + 5 if weights.get(name) else 0

        step = next(self.sequence)
        self.switches(mode)
        pending = self.orders(needed("pay"))
        paid = self.orders(needed("confirm"), paid=True)
        payments = []
        for order in Order.objects.filter(id__in=pending):
            event = {
                "id": f"evt_load_{uuid.uuid4().hex}",
                "type": PAYMENT_SUCCEEDED,
                "data": {"order_number": order.number, "amount": str(order.total), "currency": order.currency},
            }
            body = json.dumps(event)
            payments.append([body, signature_header(body=body.encode(), secrets=[settings.PAYMENT_WEBHOOK_SECRETS[0]])])
        creates = [
            {**p, "price": str(p["price"])} for p in product_payloads(needed("product_create"), prefix=f"LOAD{step}")
        ]
        updates = [
            [pid, f"{self.descriptions[pid]} (revision {step}.{i})"]
            for i, pid in enumerate(random.choices(self.products, k=needed("product_update")))
        ]
        order_items = [
            [
                {"product": pid, "quantity": random.randint(1, 3)}
                for pid in random.sample(self.products, random.randint(1, 4))
            ]
            for _ in range(needed("place_order"))
        ]
        customers = [
            {"token": c["token"], "order": c["order"], "store": c["store"], "address": c["address"].id}
            for c in self.customers
        ]
        return {
            "weights": weights,
            "staff_token": self.staff_token,
            "signature_header": SIGNATURE_HEADER,
            "reads": {
                "products": self.products,
                "stores": self.stores,
                "categories": sorted({p["category"] for p in demo_products()}),
                "queries": QUERIES,
                "customers": customers,
            },
            "once": {
                "product_create": creates,
                "product_update": updates,
                "payment": payments,
                "confirm": paid,
                "order_items": order_items,
            },
        }


# --- a step ------------------------------------------------------------------------------


def backlog() -> int:
    """Jobs not finished (their outbox rows) plus embeddings still pending."""
    return OutboxMessage.objects.count() + catalog_services.pending_embeddings().count()


def drain(timeout: float = 300) -> float:
    started = time.monotonic()
    while backlog():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the backlog did not drain in {timeout:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - started


def locust(stack, plan: dict, *, rate: float, seconds: float, name: str, log_dir=LOG_DIR) -> tuple[dict, list]:
    """Run the plan against ``stack.url`` at ``rate`` for ``seconds``; the per-endpoint stats and
    the backlog samples (one a second)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    plan_path = log_dir / f"{name}.plan.json"
    users = max(1, math.ceil(rate / USER_RATE))
    plan_path.write_text(json.dumps({**plan, "user_rate": rate / users}))  # users × this = the rate offered
    prefix = log_dir / name
    argv = [sys.executable, "-m", "locust", "-f", str(BASE_DIR / "bench" / "load_users.py"), "--headless"]
    argv += ["--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds:.0f}s", "--host", stack.url]
    argv += ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "10"]
    samples = []
    with open(log_dir / f"{name}.locust.log", "w") as log:
        proc = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env={**os.environ, "CELESTE_LOAD_PLAN": str(plan_path)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        while proc.poll() is None:
            samples.append(backlog())
            time.sleep(1)
    stats = read_stats(prefix)
    if "Aggregated" not in stats or not stats["Aggregated"]["count"]:
        raise RuntimeError(f"Locust made no requests: {(log_dir / f'{name}.locust.log').read_text()[-3000:]}")
    return stats, samples


def read_stats(prefix) -> dict:
    stats = {}
    with open(f"{prefix}_stats.csv") as handle:
        for row in csv.DictReader(io.StringIO(handle.read())):
            stats[row["Name"]] = {
                "count": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]),
                "p50": float(row["50%"] or 0),
                "p95": float(row["95%"] or 0),
                "p99": float(row["99%"] or 0),
            }
    return stats


def step(data: Data, stack: Stack, *, label: str, weights: dict, mode: str, rate: float, seconds: float) -> Step:
    seconds = max(seconds, MIN_REQUESTS / rate)
    plan = data.plan(weights=weights, rate=rate, seconds=seconds, mode=mode)
    time.sleep(2.5)  # the processes' switch cache (2 s) sees the mode
    drain()
    name = f"{label}-{rate:.1f}".replace(" ", "_").replace(",", "")
    stats, samples = locust(stack, plan, rate=rate, seconds=seconds, name=name)
    result = Step(label, rate, seconds, stats, samples)
    result.drain_seconds = drain()
    result.print()
    return result


def capacity(data, stack, *, label, weights, mode, start, seconds, max_steps) -> tuple[Step | None, list[Step]]:
    """The highest passing rate of a rising search from ``start`` (falling while the first misses)."""
    steps, rate, best, miss = [], start, None, None
    while len(steps) < max_steps:
        result = step(data, stack, label=label, weights=weights, mode=mode, rate=rate, seconds=seconds)
        steps.append(result)
        if result.passed:
            best = result
            if miss:
                break
            rate *= STEP_FACTOR
        else:
            miss = result
            if best:
                break
            if rate <= MIN_RATE:
                break
            rate = max(rate / (STEP_FACTOR * STEP_FACTOR), MIN_RATE)
    if best and miss and best.rate * 1.2 < miss.rate and len(steps) < max_steps + 1:
        result = step(
            data, stack, label=label, weights=weights, mode=mode, rate=math.sqrt(best.rate * miss.rate), seconds=seconds
        )
        steps.append(result)
        if result.passed:
            best = result
    return best, steps


# --- isolation ---------------------------------------------------------------------------


def image_bytes(i: int) -> bytes:
    """A distinct photo-sized JPEG (noise, so every variant has real work)."""
    image = Image.effect_noise((1200, 900), 40 + i % 50).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def isolation(data: Data, stack: Stack, *, products: int, images: int, rate: float, seconds: float) -> list[Result]:
    # Both plans first: making one sets every switch (the embed one included) to background.
    plans = [data.plan(weights=READS, rate=rate, seconds=seconds, mode="background") for _ in range(2)]
    time.sleep(2.5)
    drain()
    # The burst: products saved while the embed switch is off stay pending; switching it back
    # enqueues them all at once (its on_switch_back), as an import or a model change would.
    # They are saved before the idle step, so both steps read the same catalog: the figure is
    # the burst's work, not lists and keyword searches over 5,000 more products.
    set_switch("catalog.embed_products", "off")
    time.sleep(2.5)
    for spec in product_payloads(products, prefix="BURST"):
        catalog_services.product_create(**spec)
    stats, samples = locust(stack, plans[0], rate=rate, seconds=seconds, name="reads-idle")
    idle = Step("reads, worker idle", rate, seconds, stats, samples)
    idle.print()
    plan = plans[1]
    pictures = [image_bytes(i) for i in range(images)]
    task_switch_set(task_name="catalog.embed_products", mode="background", by="bench.load")
    for i, content in enumerate(pictures):
        product_image_upload(product=Product.objects.get(id=data.products[i % len(data.products)]), content=content)
    pending_images = ProductImage.objects.filter(status=ImageStatus.PENDING)
    before = (catalog_services.pending_embeddings().count(), pending_images.count())
    stats, samples = locust(stack, plan, rate=rate, seconds=seconds, name="reads-burst")
    after = (catalog_services.pending_embeddings().count(), pending_images.count())
    burst = Step("reads, during the burst", rate, seconds, stats, samples)
    burst.print()
    embedded = before[0] - after[0]
    print(
        f"    burst: embeddings pending {before[0]} -> {after[0]} ({embedded / seconds:.0f}/s), images pending "
        f"{before[1]} -> {after[1]} over the {seconds:.0f} s step; the rest is left to the worker (stopped next)",
        flush=True,
    )
    Product.objects.filter(sku__startswith="BURST").update(active=False)
    results = [
        Result("load", f"reads p95, worker idle ({rate:.0f} req/s)", idle.total["p95"], "ms"),
        Result("load", f"reads p95, {products:,} embeddings + {images} images burst", burst.total["p95"], "ms"),
        Result("load", "burst: embeddings left pending at the step's end (> 0: it ran throughout)", after[0], ""),
        Result("load", "burst: embeddings made per second during the reads", embedded / seconds, "/s"),
        Result("load", "reads p95 ratio burst / idle", burst.total["p95"] / idle.total["p95"], "x", "<= 1.5"),
    ]
    for name in sorted(idle.stats):
        if name != "Aggregated" and name in burst.stats:
            ratio = burst.stats[name]["p95"] / max(idle.stats[name]["p95"], 1)
            results.append(Result("load", f"  {name} p95 burst / idle", ratio, "x"))
    return results


# --- run ---------------------------------------------------------------------------------


def run(quick: bool) -> list[Result]:
    # A search stops at its first miss; the step cap only bounds a runaway (a capacity reached
    # at the cap is printed as a lower bound). Starts sit a step or two below each capacity.
    seconds, max_steps = (6, 3) if quick else (15, 8)
    # A SIGTERM (a timeout, Ctrl-C's cousin) unwinds through the stacks' ``finally``: none is left running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{__name__}: terminated"))
    data = Data()
    results = []
    print(f"  load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    def search(stack, label, *, weights, mode, start):
        best, steps = capacity(
            data, stack, label=label, weights=weights, mode=mode, start=start, seconds=seconds, max_steps=max_steps
        )
        if best is not None and best.rate == max(step.rate for step in steps):
            print(f"    {label}: no step above {best.rate:.0f}/s was tried; the capacity is at least this", flush=True)
        return best

    def rate(best: Step | None, *, sustained: bool) -> float:
        if best is None:
            return 0.0  # no rate tried kept p95 <= 300 ms
        return best.sustained_rps if sustained else best.total["rps"]

    def ratio(numerator: float, denominator: float) -> float:
        # A side with no passing rate has no capacity to compare: nan (a MISS), never a huge ratio.
        return numerator / denominator if numerator and denominator else math.nan

    # One stack per encoder and placement, each used by every search that needs it (a start costs ~30 s).
    # Web tier: Celeste's web on core 0, its worker and beat on core 1.
    with running_stack("web-tier", backend="onnx-int8", pinned=True) as stack:
        tier = {
            mode: search(stack, f"web tier {mode}", weights=WRITES, mode=mode, start=start)
            for mode, start in (("sync", 4), ("background", 8))
        }
    # Whole box: the plan's "before" (sync, torch), as shipped (background, onnx-int8), and sync on onnx-int8.
    with running_stack("box-torch", backend="torch", pinned=False) as stack:
        box = {("sync", "torch"): search(stack, "box sync+torch", weights=WRITES, mode="sync", start=2)}
        mixed = {("sync", "torch"): search(stack, "mixed sync+torch", weights=MIXED, mode="sync", start=8)}
    with running_stack("box-int8", backend="onnx-int8", pinned=False) as stack:
        box[("background", "onnx-int8")] = search(
            stack, "box background+onnx-int8", weights=WRITES, mode="background", start=8
        )
        box[("sync", "onnx-int8")] = search(stack, "box sync+onnx-int8", weights=WRITES, mode="sync", start=3)
        mixed[("background", "onnx-int8")] = search(
            stack, "mixed background+onnx-int8", weights=MIXED, mode="background", start=8
        )
        data.switches("background")
        isolated = isolation(
            data, stack, products=1000 if quick else 5000, images=20 if quick else 100, rate=20, seconds=seconds
        )
    for mode in ("sync", "background"):
        results.append(
            Result(
                "load",
                f"web tier (taskset), writes, {mode}: req/s at p95<=300",
                rate(tier[mode], sustained=False),
                "req/s",
            )
        )
    results.append(
        Result(
            "load",
            "web tier writes capacity background / sync",
            ratio(rate(tier["background"], sustained=False), rate(tier["sync"], sustained=False)),
            "x",
            ">= 3",
        )
    )
    for key, best in box.items():
        drain_s = best.drain_seconds if best else 0
        results.append(
            Result(
                "load",
                f"whole box, writes, {key[0]}+{key[1]}: sustained req/s (drain {drain_s:.1f} s)",
                rate(best, sustained=True),
                "req/s",
            )
        )
    shipped = rate(box[("background", "onnx-int8")], sustained=True)
    results.append(
        Result(
            "load",
            "whole box writes: shipped (background, onnx-int8) / before (sync, torch)",
            ratio(shipped, rate(box[("sync", "torch")], sustained=True)),
            "x",
            ">= 2",
        )
    )
    results.append(
        Result(
            "load",
            "whole box writes: background / sync, both onnx-int8",
            ratio(shipped, rate(box[("sync", "onnx-int8")], sustained=True)),
            "x",
        )
    )
    for key, best in mixed.items():
        results.append(
            Result("load", f"whole box, mixed, {key[0]}+{key[1]}: sustained req/s", rate(best, sustained=True), "req/s")
        )
    results.append(
        Result(
            "load",
            "whole box mixed: shipped / before",
            ratio(
                rate(mixed[("background", "onnx-int8")], sustained=True), rate(mixed[("sync", "torch")], sustained=True)
            ),
            "x",
        )
    )
    results += isolated
    data.switches("background")
    reset_catalog()
    results.append(Result("load", "load average (1 min) at the end", os.getloadavg()[0], ""))
    return report(results)
