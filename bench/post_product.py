"""POST /api/v1/products/ p50 by the switch of catalog.embed_products: background vs off vs sync.

In-process DRF APIClient as a staff user (force_authenticate), realistic demo
texts with unique SKUs. ``background`` writes an outbox row and publishes to
Redis after commit (no worker runs: the messages just queue, flushed at the
end); ``off`` records a skip; ``sync`` embeds the product inline after commit,
inside the request. The model is loaded first, so sync never pays the load.
Modes run in blocks, rotating their order every round, to spread drift evenly.

The switch is read through the per-process cache as in production (see
``bench.cached_switches``), so a POST does not pay a TaskSwitch query that a
deployed web process would not pay.
"""

import time

from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from bench import Result, cached_switches, p50, product_payloads, report, reset_catalog, set_switch
from catalog import embeddings
from catalog.models import EmbeddingStatus, Product, ProductEmbedding
from catalog.tasks import embed_products

URL = "/api/v1/products/"
MODES = ("background", "off", "sync")


def run(quick: bool) -> list[Result]:
    per_mode, rounds, warmup = (45, 3, 5) if quick else (200, 10, 10)
    reset_catalog()
    embeddings.encode(["load the model before anything is timed"])
    user = get_user_model().objects.create_user(username="bench-staff", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    payloads = iter(product_payloads(len(MODES) * (per_mode + warmup), prefix="POST"))
    timings = {mode: [] for mode in MODES}

    def post_block(mode: str, count: int, record: bool) -> None:
        set_switch(embed_products.name, mode)
        ids = []
        for _ in range(count):
            data = next(payloads)
            data = {**data, "price": str(data["price"])}
            start = time.perf_counter()
            response = client.post(URL, data, format="json")
            elapsed = time.perf_counter() - start
            assert response.status_code == 201, (response.status_code, response.content[:500])
            ids.append(response.data["id"])
            if record:
                timings[mode].append(elapsed)
        if mode == "sync":
            ready = ProductEmbedding.objects.filter(product_id__in=ids, status=EmbeddingStatus.READY).count()
            assert ready == len(ids), f"sync mode embedded {ready}/{len(ids)} products inline"
        else:
            # Left stale on purpose; take them out of the next sync POST's claim so
            # each sync request embeds exactly its own product.
            Product.objects.filter(id__in=ids).update(active=False)

    with cached_switches():
        for mode in MODES:
            post_block(mode, warmup, record=False)
        for round_no in range(rounds):
            order = MODES[round_no % len(MODES) :] + MODES[: round_no % len(MODES)]
            for mode in order:
                post_block(mode, per_mode // rounds, record=True)
    set_switch(embed_products.name, "background")
    reset_catalog()  # also flushes the messages queued in background mode

    ms = {mode: p50(samples) * 1000 for mode, samples in timings.items()}
    n = len(timings["background"])
    return report(
        [
            Result("post_product", f"POST p50, switch background (n={n})", ms["background"], "ms"),
            Result("post_product", f"POST p50, switch off (n={n})", ms["off"], "ms"),
            Result("post_product", f"POST p50, switch sync (n={n})", ms["sync"], "ms"),
            Result("post_product", "POST p50 ratio background / off", ms["background"] / ms["off"], "x", "<= 1.25"),
            Result("post_product", "POST p50 ratio background / sync", ms["background"] / ms["sync"], "x", "<= 0.3"),
        ]
    )
