"""Backpressure: a maximum depth per queue (QUEUE_MAX_DEPTHS, overridden per
queue by a QueueLimit row in the admin). enqueue() asks ``over_limit`` before
writing a job; past the limit the task's overflow policy applies (CelesteTask.
overflow): ``sync`` runs it inline after commit, ``drop`` skips it with a count
(for work a sweeper redoes), ``refuse`` raises QueueFull — the API answers 503
with Retry-After and the caller's transaction, with everything it wrote, rolls back.

The depths and limits are read at most once per QUEUE_DEPTH_CACHE_SECONDS per
process (one Redis pipeline, one small query), never per enqueue. While Redis
cannot say, no queue counts as full: the outbox keeps the jobs anyway.
"""

import logging
import threading
import time
from enum import StrEnum

import redis
from django.conf import settings

from .errors import QueueFull
from .metrics import queue_lengths
from .models import QueueLimit

logger = logging.getLogger(__name__)


class Overflow(StrEnum):
    """What enqueue() does with a job whose queue is full (a task's ``overflow``)."""

    SYNC = "sync"  # run it inline after commit
    DROP = "drop"  # skip it, counted: a sweeper redoes the work
    REFUSE = "refuse"  # raise QueueFull: the request fails with a 503, nothing stored


_lock = threading.Lock()
_depths: dict[str, int] = {}
_limits: dict[str, int] = {}
_loaded_at = float("-inf")


def _refresh() -> None:
    global _depths, _limits, _loaded_at
    _limits = {**settings.QUEUE_MAX_DEPTHS, **dict(QueueLimit.objects.values_list("queue", "max_depth"))}
    try:
        _depths = queue_lengths()
    except redis.RedisError as exc:
        logger.warning("backpressure.depth_unknown", extra={"error": repr(exc)})
        _depths = {}
    _loaded_at = time.monotonic()


def over_limit(queue: str) -> QueueFull | None:
    """The QueueFull to raise (or to log) if ``queue`` is at its maximum depth, else None."""
    with _lock:
        if time.monotonic() - _loaded_at > settings.QUEUE_DEPTH_CACHE_SECONDS:
            _refresh()
        depth, limit = _depths.get(queue), _limits.get(queue)
    if depth is None or limit is None or depth < limit:
        return None
    return QueueFull(queue=queue, depth=depth, limit=limit)


def forget_depths() -> None:
    global _loaded_at
    with _lock:
        _loaded_at = float("-inf")
