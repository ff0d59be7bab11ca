"""Celeste benchmarks: `python -m bench [names...] [--quick]`.

Each benchmark module has ``run(quick: bool) -> list[Result]``; a Result is
either a plain figure (no target) or a ratio/figure with a target, measured in
the same run as what it is compared with. Helpers shared by the modules live
here; they need Django set up (``bench.__main__`` does that first).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_NAME = "celeste_bench"


@dataclass
class Result:
    bench: str
    label: str
    value: float
    unit: str = ""
    target: str = ""  # e.g. "<= 1.25"; empty: a figure reported without a target

    @property
    def verdict(self) -> str:
        if not self.target:
            return ""
        op, bound = self.target.split()
        ok = self.value <= float(bound) if op == "<=" else self.value >= float(bound)
        return "PASS" if ok else "MISS"

    def line(self) -> str:
        value = f"{self.value:.3f}".rstrip("0").rstrip(".") if self.value < 1000 else f"{self.value:,.0f}"
        target = f"target {self.target:<8} {self.verdict}" if self.target else ""
        return f"  {self.label:<64} {value:>10} {self.unit:<10} {target}"


def report(results: list[Result]) -> list[Result]:
    for result in results:
        print(result.line(), flush=True)
    return results


def wait_until(done, timeout: float, worker, what: str, *, poll: float = 0.05) -> float:
    """Poll ``done()`` every ``poll`` seconds; return the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done after {timeout:.0f}s; worker log tail:\n{worker.log()[-3000:]}")
        time.sleep(poll)
    return time.monotonic()


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def demo_products() -> list[dict]:
    """The demo catalog's realistic names/descriptions (267 products)."""
    data = json.loads((BASE_DIR / "catalog" / "demo_data.json").read_text())
    return data["products"]


def product_payloads(count: int, *, prefix: str) -> list[dict]:
    """``count`` product specs cycling through the demo texts, each with a unique SKU."""
    specs = demo_products()
    payloads = []
    for i in range(count):
        spec = specs[i % len(specs)]
        payloads.append(
            {
                "sku": f"{prefix}-{i:06d}",
                "name": spec["name"] if i < len(specs) else f"{spec['name']} ({i // len(specs) + 1})",
                "description": spec["description"],
                "category": spec["category"],
                "price": Decimal(spec["price"]),
                "currency": spec["currency"],
            }
        )
    return payloads


def cached_switches():
    """Read task switches through the per-process cache, as a deployed process does.

    The run sets TASK_SWITCH_CACHE_SECONDS=0 so that every process sees a switch
    change at once; inside this block this process keeps its cached copy instead
    (``set_switch`` forgets it), so a timed write does not pay a TaskSwitch query
    that production (2 s cache) would not pay.
    """
    from django.test import override_settings

    return override_settings(TASK_SWITCH_CACHE_SECONDS=3600)


def set_switch(task_name: str, mode: str) -> None:
    from celeste.background.models import TaskSwitch
    from celeste.background.switches import forget_cached_switches

    TaskSwitch.objects.update_or_create(task_name=task_name, defaults={"mode": mode})
    forget_cached_switches()


def flush_redis() -> None:
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL).flushall()


def reset_catalog() -> None:
    """Empty the catalog and the outbox, so each benchmark starts from the same state."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE catalog_productembedding, catalog_stocklevel, catalog_product, background_outboxmessage,"
            " background_failedtask RESTART IDENTITY CASCADE"
        )
    flush_redis()
