import logging

from celery.signals import worker_init, worker_ready
from django.db import connections

from . import main_process

logger = logging.getLogger(__name__)

# Recovery steps every worker runs when it starts (apps append to this list):
# publish what the outbox kept while the broker was down, re-enqueue stale work.
ON_WORKER_START = []


def _recover_on_worker_start(**_):
    for step in ON_WORKER_START:
        try:
            # This runs in the worker's main process, where no request cycle checks connections.
            main_process.check_connections()
            step()
        except Exception:
            logger.exception("worker.recovery_failed", extra={"step": step.__name__})
    # This runs in the worker's main process: children must not share its connection.
    connections.close_all()


def connect_worker_signals():
    from .queue import outbox_relay

    if outbox_relay not in ON_WORKER_START:
        ON_WORKER_START.append(outbox_relay)
    worker_init.connect(main_process.remember_main_process, dispatch_uid="background.remember_main_process", weak=False)
    worker_ready.connect(_recover_on_worker_start, dispatch_uid="background.recover_on_worker_start", weak=False)
