"""Warm shutdown (SIGTERM, as a deploy sends it) during a long embedding batch.

Two ways the signal arrives:
- to the main process only (``docker stop``, systemd ``KillMode=mixed``): it stops
  consuming, waits for the running batch to finish, then signs off;
- to the whole process group (``Worker.stop()``, systemd's default
  ``KillMode=control-group``): the pool child running the batch dies of it too
  (Celery resets SIGTERM to its default in pool children), so the batch's rows
  (locked, not written) stay pending and its job must be recovered.
Either way the stopped worker signs off (its heartbeat row is deleted), so the next
worker recovers whatever it held at once instead of waiting for the heartbeat to go
stale, and nothing is lost.
"""

import os
import signal
import time

import pytest

from catalog.models import EmbeddingStatus, ProductEmbedding
from celeste.background.models import OutboxMessage, WorkerHeartbeat

from ..conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.django_db(transaction=True)]
EMBED_TASK = "catalog.embed_products"


@pytest.mark.parametrize("target", ["main process", "process group"])
def test_a_warm_shutdown_during_a_long_embedding_batch_loses_nothing(ledger, fault_worker, target):
    # Given a worker in the middle of a long embedding batch (512 products a model call: seconds
    # even for the int8 encoder). The products are there before it starts: made while it runs,
    # its lanes would embed them as they come, in small batches, before the signal.
    ledger.create(products=1024, orders=10, stock_changes=10)
    worker = fault_worker(EMBEDDING_BATCH_SIZE="512")
    wait_for(lambda: WorkerHeartbeat.objects.filter(pid=worker.proc.pid).exists(), timeout=10, message="its heartbeat")
    wait_for(lambda: "embedding.model_loaded" in worker.log(), timeout=60, message="the model loaded")
    time.sleep(1)  # well inside the first model call
    running = OutboxMessage.objects.filter(task_name=EMBED_TASK).exclude(worker_id="").exists()
    ready_before = ProductEmbedding.objects.filter(status=EmbeddingStatus.READY).count()

    # When it gets SIGTERM (warm shutdown)
    ledger.event(f"SIGTERM to the {target} (embed job running: {running}, {ready_before} embeddings ready)")
    stopped_at = time.monotonic()
    if target == "main process":
        os.kill(worker.proc.pid, signal.SIGTERM)
        worker.proc.wait(60)
    else:
        worker.stop(timeout=60)
    ledger.fault(f"worker exited with {worker.proc.returncode} after {time.monotonic() - stopped_at:.1f}s")
    ready_after = ProductEmbedding.objects.filter(status=EmbeddingStatus.READY).count()
    left = OutboxMessage.objects.count()
    ledger.event(f"{ready_after} embeddings ready, {left} jobs left in the ledger")
    if target == "main process":  # the batch was allowed to finish
        assert not OutboxMessage.objects.filter(task_name=EMBED_TASK).exclude(worker_id="").exists()
        assert ready_after > ready_before  # the running batch (whatever its size) was stored

    # Then it left by itself and signed off, and a new worker finishes the rest, once
    assert running, "the shutdown did not catch the batch running"
    assert worker.proc.returncode == 0, f"not a clean exit:\n{worker.log()[-4000:]}"
    assert not WorkerHeartbeat.objects.filter(pid=worker.proc.pid).exists()
    fault_worker()
    ledger.check(timeout=90)
