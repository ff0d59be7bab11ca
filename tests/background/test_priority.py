"""A niced worker's Postgres backends run at its niceness (celeste/background/priority.py), so the
database work of a burst (embedding writes, HNSW inserts) yields to the web's queries too."""

import os

import pytest
from django.db import connection

from celeste.background.models import OutboxMessage
from celeste.background.priority import _local_postgres
from celeste.background.queue import enqueue
from celeste.background.tasks import ping

from ..conftest import wait_for


def client_backends() -> dict[int, int]:
    """The niceness of every client backend of this database, by pid."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'"
        )
        pids = [pid for (pid,) in cursor.fetchall()]
    found = {}
    for pid in pids:
        try:
            found[pid] = os.getpriority(os.PRIO_PROCESS, pid)
        except ProcessLookupError:  # it ended since
            pass
    return found


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_niced_workers_backends_take_its_niceness_and_the_others_keep_theirs(start_worker):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (ours,) = cursor.fetchone()
    before = client_backends()
    assert before[ours] == 0

    start_worker(nice=7)
    job = enqueue(ping)  # run in a pool child: a connection made after the fork
    wait_for(lambda: not OutboxMessage.objects.filter(id=job.id).exists(), message="the ping")

    after = client_backends()
    niced = {pid for pid, niceness in after.items() if niceness == 7}
    # The main process's heartbeat thread and the pool child that ran the job each hold one.
    assert len(niced) >= 2, after
    assert all(after[pid] == 0 for pid in before if pid in after), (before, after)
    assert after[ours] == 0  # not a worker: this process's backend keeps the database's priority


@pytest.mark.django_db
def test_a_database_elsewhere_is_left_alone():
    """A pid from a server on another host names no process here, whatever runs under that number."""
    assert not _local_postgres("db.internal", os.getpid())
    connection.ensure_connection()
    info = connection.connection.info
    assert _local_postgres(info.host, info.backend_pid)  # the test database is this host's
    assert not _local_postgres(info.host, os.getpid())  # this process is no Postgres
