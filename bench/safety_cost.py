"""What the safety nets cost on the request path: task-message signing and
backpressure both on vs both off, in the same run.

- **POST product p50.** In-process DRF APIClient as a staff user, the embed switch
  on ``background`` (no worker: the messages queue). A POST checks its queue's depth
  (backpressure: a cached read, refreshed once a second) and writes its outbox row;
  after commit this process's publisher thread signs and publishes it, competing
  with the requests for the interpreter as in a web process. Blocks alternate
  between on (signing, the default depth limits) and off (no signing, no limits and
  no depth reads), set with ``override_settings`` (both modules read their settings
  at every call), each ending once the publisher has sent its messages, so each
  block pays for its own.
- **Per message.** Signing at publish plus verifying in the worker, timed alone
  (the HMAC over the canonical JSON of a typical job), in microseconds.
"""

import time

from django.contrib.auth import get_user_model
from django.test import override_settings
from rest_framework.test import APIClient

from bench import Result, cached_switches, p50, product_payloads, report, reset_catalog, set_switch
from catalog.tasks import embed_products
from celeste.background.backpressure import forget_depths
from celeste.background.publisher import publisher
from celeste.background.signing import signature_make, signature_verify

URL = "/api/v1/products/"
JOB = {
    "task_name": "notifications.dispatch_order_event",
    "task_id": "0b6f6f0e-3c0a-4b4e-9a57-2f1d2f0c1a11",
    "args": [],
    "kwargs": {"order_id": 123456, "status": "paid"},
    "job": True,
}


def post_p50(per_mode: int, rounds: int) -> dict[bool, float]:
    reset_catalog()
    set_switch(embed_products.name, "background")
    user = get_user_model().objects.create_user(username="bench-safety-staff", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    payloads = iter(product_payloads(2 * (per_mode + 20), prefix="SAFETY"))
    timings: dict[bool, list[float]] = {True: [], False: []}

    def block(signing: bool, count: int, record: bool) -> None:
        # Off: no limits, and the depths read once are trusted for the whole block (no Redis reads).
        safety = {} if signing else {"QUEUE_MAX_DEPTHS": {}, "QUEUE_DEPTH_CACHE_SECONDS": 1e9}
        forget_depths()
        with override_settings(TASK_SIGNING_ENABLED=signing, **safety):
            for _ in range(count):
                data = next(payloads)
                start = time.perf_counter()
                response = client.post(URL, {**data, "price": str(data["price"])}, format="json")
                elapsed = time.perf_counter() - start
                assert response.status_code == 201, (response.status_code, response.content[:500])
                if record:
                    timings[signing].append(elapsed)
            assert publisher.flush(timeout=30), "the publisher fell behind"

    with cached_switches():
        for signing in (True, False):  # warm both
            block(signing, 10, record=False)
        for round_no in range(rounds):
            for signing in (True, False) if round_no % 2 == 0 else (False, True):
                block(signing, per_mode // rounds, record=True)
    reset_catalog()  # also flushes the queued messages
    return {signing: p50(samples) for signing, samples in timings.items()}


def sign_and_verify_us(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        signature_verify(header=signature_make(**JOB), **JOB)
    return (time.perf_counter() - start) / n * 1e6


def run(quick: bool) -> list[Result]:
    per_mode, rounds = (100, 4) if quick else (400, 10)
    posts = post_p50(per_mode, rounds)
    label = f"POST product p50 (n={per_mode})"
    return report(
        [
            Result("safety_cost", f"{label}, signing + backpressure on", posts[True] * 1000, "ms"),
            Result("safety_cost", f"{label}, both off", posts[False] * 1000, "ms"),
            Result("safety_cost", "POST product p50 ratio on / off", posts[True] / posts[False], "x", "<= 1.05"),
            Result("safety_cost", "sign + verify one message", sign_and_verify_us(20_000), "µs"),
        ]
    )
