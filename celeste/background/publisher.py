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

    def _run(self) -> None:
        from .queue import publish_messages

        while True:
            batch = [self._queue.get()]
            # Whatever piled up meanwhile goes in the same round (one DELETE for all).
            while len(batch) < 100:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                db.close_old_connections()
                publish_messages(batch)
            except Exception:  # the rows stay in the outbox; the relay will publish them
                logger.exception("outbox.publisher_failed", extra={"count": len(batch)})
            finally:
                if self._queue.empty():
                    # Idle: hold no database connection (tests drop their database; servers restart).
                    db.connections.close_all()
                for _ in batch:
                    self._queue.task_done()


publisher = OutboxPublisher()
