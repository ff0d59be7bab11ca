"""A niced worker's database work runs at the worker's niceness too.

``runall`` starts its workers niced (``celeste.devserver.niceness``) so that a burst of slow work
yields the cores to the web. Part of that work is done by the worker's Postgres backend (the
embedding writes and their HNSW inserts), which would otherwise run at the database's priority and
compete with the backends serving the web's reads. Where the database runs on this host (the
embedded server of ``make run``), a worker's connection gives its backend the worker's niceness,
if the kernel lets it: an unprivileged process may lower the priority of its own user's processes
(the embedded server runs as ours, or as a user of its own when we are root, who may renice any).
Elsewhere (another host, another user, a pooler's shared backends) nothing changes: compose gives the
worker containers a lower CPU weight instead (docs/operations.md, "Isolation").
"""

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

LOCAL_HOSTS = {"", "localhost", "127.0.0.1", "::1"}


def _local_postgres(host: str, pid: int) -> bool:
    # The pid is the server's: only where the server is this host's does it name a local process
    # (and then a Postgres one). Whether we may renice it is the kernel's call (setpriority).
    if not (host in LOCAL_HOSTS or host.startswith("/")):
        return False
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
    except OSError:
        return False


def backend_share_niceness(sender=None, connection=None, **_):
    """``connection_created`` receiver (worker processes only): the backend takes our niceness."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness <= 0 or connection.vendor != "postgresql":
        return
    # psycopg knows the backend's pid and the host it reached (a socket directory for a unix
    # socket) from the connection's start: no round trip.
    info = connection.connection.info
    pid = info.backend_pid
    if not _local_postgres(info.host or "", pid):
        return
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError as exc:  # the backend just ended, or the kernel refuses: it keeps its priority
        logger.info("worker.backend_niceness_unchanged", extra={"pid": pid, "error": str(exc)})
