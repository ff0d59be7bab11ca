import logging

from celery.signals import celeryd_init, task_postrun, worker_init, worker_ready, worker_shutdown
from django.db import close_old_connections, connections
from django.db.backends.signals import connection_created

from celeste.logs import request_id

from . import ledger, main_process, metrics, priority, startup

logger = logging.getLogger(__name__)

_heartbeat: ledger.HeartbeatThread | None = None


def _assign_worker_id(sender=None, **_):
    # celeryd_init runs in the main process before the pool forks: children inherit the id.
    worker_id = ledger.worker_id_assign(str(sender))
    metrics.worker_identify(hostname=str(sender), worker_id=worker_id)


def _share_niceness_with_backends(**_):
    # Before the pool forks, in a worker only (the web's connections keep the database's priority).
    connection_created.connect(priority.backend_share_niceness, dispatch_uid="background.backend_niceness")


def _track_periodic_starts(**_):
    # The periodic tasks' stored results record when each run started (STARTED, one
    # more write per tick), so the admin shows how long the last run took. Not every
    # task: that write would cost every job; nor the quiet ticks (CelesteTask.quiet_when_idle).
    for spec in startup.periodic_tasks():
        spec.task.track_started = not spec.task.quiet_when_idle


def _recover_on_worker_start(sender=None, **_):
    global _heartbeat
    from .queue import outbox_relay

    _heartbeat = ledger.HeartbeatThread(hostname=getattr(sender, "hostname", ""), step=outbox_relay)
    # Beat once before the first message is consumed, so no other worker takes
    # this one's first claims for a dead worker's.
    _heartbeat.beat_once(step=False)
    # Recovery: first publish what the outbox kept while the broker was down and
    # republish the jobs of dead workers, then the apps' own steps (startup.py);
    # heartbeats of workers gone for a day are only history.
    for step in [outbox_relay, ledger.heartbeats_prune, *startup.worker_start_steps()]:
        try:
            # This runs in the worker's main process, where no request cycle checks connections.
            main_process.check_connections()
            step()
        except Exception:
            logger.exception("worker.recovery_failed", extra={"step": step.__name__})
    # This runs in the worker's main process: children must not share its connection.
    connections.close_all()
    _heartbeat.start()
    metrics.worker_exporter_start(ledger.worker_id())


def _sign_off(**_):
    if _heartbeat is not None:
        _heartbeat.stop()


def _forget_request_id(task=None, **_):
    # task_postrun is sent on every way out of a task (success, failure, retry, Ignore),
    # after its last log line. An eager run belongs to its caller's context: left alone.
    if task is not None and not task.request.is_eager:
        request_id.set("")


def _recycle_connections(task=None, **_):
    # A task's database connection outlives it, as a request's does (CONN_MAX_AGE; Celery's
    # fixup closes it only every CELERY_DB_REUSE_MAX tasks): closed here once too old or
    # broken, and health-checked at the next task's first query.
    if task is not None and not task.request.is_eager:
        close_old_connections()


def connect_worker_signals():
    celeryd_init.connect(_assign_worker_id, dispatch_uid="background.assign_worker_id", weak=False)
    celeryd_init.connect(_track_periodic_starts, dispatch_uid="background.track_periodic_starts", weak=False)
    worker_init.connect(main_process.remember_main_process, dispatch_uid="background.remember_main_process", weak=False)
    worker_ready.connect(_recover_on_worker_start, dispatch_uid="background.recover_on_worker_start", weak=False)
    worker_shutdown.connect(_sign_off, dispatch_uid="background.sign_off", weak=False)
    task_postrun.connect(_forget_request_id, dispatch_uid="background.forget_request_id", weak=False)
    task_postrun.connect(_recycle_connections, dispatch_uid="background.recycle_connections", weak=False)
    celeryd_init.connect(_share_niceness_with_backends, dispatch_uid="background.share_niceness", weak=False)
