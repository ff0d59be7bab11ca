class PermanentError(Exception):
    """Retrying cannot fix this: the job goes straight to the failed-task inbox."""


class TransientError(Exception):
    """Worth retrying later (a peer is down, a lock was contended)."""
