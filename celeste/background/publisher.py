"""Publishes committed outbox rows from a background thread of the same
process, so a request never waits on Redis (and pays nothing extra when Redis
is down). If the process dies first, the row is still in the outbox and the
relay publishes it: the thread is a fast path, the outbox is the guarantee."""

import atexit
import logging
import os
import queue
import threading
import time

from django import db

logger = logging.getLogger(__name__)
# After this long without work the thread gives its database connection back.
IDLE_SECONDS = 2.0
_CLOSE = object()


class OutboxPublisher:
    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, message) -> None:
        self._ensure_running()
        self._queue.put(message)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far was attempted. True if it was."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def _ensure_running(self) -> None:
        # A forked child (prefork worker, gunicorn) inherits no running thread.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():
                self._queue = queue.Queue()
                self._pid = os.getpid()
                atexit.register(self.flush)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
                self._thread.start()

    def close_connections(self) -> None:
        """Make the thread drop its database connection (e.g. before a test database is dropped)."""
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._queue.put(_CLOSE)
            self.flush()

    def _run(self) -> None:
        from .queue import publish_messages

        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                db.connections.close_all()  # idle: hold no connection
                continue
            if first is _CLOSE:
                db.connections.close_all()
                self._queue.task_done()
                continue
            batch = [first]
            # Whatever piled up meanwhile goes in the same round (one DELETE for all).
            while len(batch) < 100:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:  # handled on the next round, after this batch
                    self._queue.task_done()
                    self._queue.put(_CLOSE)
                    break
                batch.append(item)
            try:
                db.close_old_connections()
                publish_messages(batch)
            except Exception:  # the rows stay in the outbox; the relay will publish them
                logger.exception("outbox.publisher_failed", extra={"count": len(batch)})
            finally:
                for _ in batch:
                    self._queue.task_done()


publisher = OutboxPublisher()
