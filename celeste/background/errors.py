from celeste.api.errors import Unavailable


class PermanentError(Exception):
    """Retrying cannot fix this: the job goes straight to the failed-task inbox."""


class TransientError(Exception):
    """Worth retrying later (a peer is down, a lock was contended)."""


class QueueFull(Unavailable):
    """A queue is at its maximum depth and the task's overflow policy is ``refuse``:
    the caller's transaction rolls back; the API answers 503 with Retry-After."""

    retry_after_setting = "QUEUE_FULL_RETRY_AFTER_SECONDS"
    log_event = "web.queue_full"

    def __init__(self, *, queue: str, depth: int, limit: int):
        self.queue, self.depth, self.limit = queue, depth, limit
        super().__init__(f"The {queue!r} queue is full ({depth} waiting, limit {limit}); retry shortly.")
