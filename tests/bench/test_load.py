"""The load bench's plumbing (bench/load.py): a short Locust run against a live server makes
every request of the mix with no failure and reports per-endpoint figures. It asserts no timing."""

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


class _Arrivals(ThreadingHTTPServer):
    """Answers every GET with ``{}`` after 20 ms and records when each request arrived."""

    daemon_threads = True

    def __init__(self):
        self.times: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(handler):  # noqa: N805 - the server is `self` here
                self.times.append(time.monotonic())
                time.sleep(0.02)
                handler.send_response(200)
                handler.send_header("Content-Length", "2")
                handler.end_headers()
                handler.wfile.write(b"{}")

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.django_db
def test_the_users_of_a_step_send_at_independent_times_not_in_bursts(redis, tmp_path):
    """Found while profiling: Locust started a step's users at once and its constant pacing kept
    them on that phase, so 8 users at 2 requests/s each sent 8 requests at the same instant
    twice a second (150 of 171 gaps between arrivals under 5 ms). A step's p95 then measured
    a burst's length, not the server's queue at that rate."""
    server = _Arrivals()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    plan = {
        "weights": {"browse": 1},
        "staff_token": "",
        "signature_header": "",
        "reads": {"products": [1], "stores": [1], "categories": ["a"], "queries": ["q"], "customers": []},
        "once": {},
    }
    try:
        load.locust(SimpleNamespace(url=server_url(server)), plan, rate=16, seconds=8, name="pace", log_dir=tmp_path)
    finally:
        server.shutdown()

    arrivals = sorted(server.times)[16:]  # past the first round, which starts at random phases
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(arrivals) > 80
    assert sum(gap < 0.005 for gap in gaps) < len(gaps) / 3, sorted(gaps)[: len(gaps) // 2]


def server_url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"
