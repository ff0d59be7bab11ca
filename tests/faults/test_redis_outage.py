"""Redis stops for 10 s while the shop keeps writing.

Redis is only the transport: API calls and services keep succeeding while it is
down, because each job's outbox row commits with the write that needs it. The
worker loses its broker connection and reconnects; the relay publishes what the
publishers could not. When Redis is back every job runs, once.
"""

import time

import pytest

from celeste.background.models import OutboxMessage
from celeste.devserver import embedded

from .conftest import PRODUCTION_RETRIES

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.django_db(transaction=True)]
OUTAGE_SECONDS = 10


def test_writes_during_a_redis_outage_are_all_done_once_it_is_back(ledger, fault_worker, redis, embedded_root):
    # Given a worker (gossip, mingle and heartbeat on, as in production) busy with a burst
    worker = fault_worker(lean=False, **PRODUCTION_RETRIES)
    ledger.create(products=20, orders=5, stock_changes=5)

    # When Redis stops for 10 s while the API and services keep writing
    embedded.stop_redis(embedded_root)
    stopped = ledger.event("Redis stopped")
    try:
        ledger.create(products=20, orders=5, stock_changes=5, api=True)
        pending = OutboxMessage.objects.filter(published_at__isnull=True).count()
        ledger.event(f"{pending} jobs wait in the outbox unpublished")
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
    finally:
        embedded.start_redis(embedded_root)
    ledger.fault_over("Redis started")

    # Then every job is done once, and the worker lived through it
    ledger.check(timeout=90)
    assert pending > 0, "the outage did not catch any job unpublished"
    assert worker.proc.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"
