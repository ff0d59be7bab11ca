"""The load bench's plumbing (bench/load.py): a short Locust run against a live server makes
every request of the mix with no failure and reports per-endpoint figures. It asserts no timing."""

from types import SimpleNamespace

import pytest

from bench import load


@pytest.mark.django_db(transaction=True)
def test_a_short_locust_run_makes_every_request_of_the_mix_without_failure(live_server, redis, settings, tmp_path):
    settings.ORDER_MAX_OPEN_UNPAID = 0  # as the bench's stack: customers place order after order
    data = load.Data(customers=5)
    plan = data.plan(weights=load.MIXED, rate=10, seconds=8, mode="background")
    plan["in_turn"] = True  # each request of the mix in turn, not drawn by weight

    # By address: Locust's gevent resolver may spend seconds on "localhost" with no DNS server.
    server = SimpleNamespace(url=live_server.url.replace("localhost", "127.0.0.1"))
    stats, samples = load.locust(server, plan, rate=10, seconds=8, name="plumbing", log_dir=tmp_path)

    endpoints = {name: s for name, s in stats.items() if name != "Aggregated"}
    assert len(endpoints) == len(load.MIXED), sorted(endpoints)
    assert all(s["count"] > 0 and s["failures"] == 0 for s in endpoints.values()), endpoints
    assert stats["Aggregated"]["p95"] > 0 and samples
