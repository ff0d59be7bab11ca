"""Concurrency limits per task type, across all workers: a Redis semaphore.

A slot is a member of a sorted set scored by its expiry, so a worker killed while
holding one cannot hold it forever: a slot older than the task's hard time limit
(plus a margin) is freed by the next acquire. Acquire and release are one round
trip each. While Redis is unreachable the limit is not enforced (the work runs):
a semaphore must never turn a Redis outage into stopped work.
"""

import logging
import time
import uuid

import redis

from .redis import client

logger = logging.getLogger(__name__)
KEY_PREFIX = "celeste:slots:"

# KEYS[1] the set; ARGV: now, limit, member, expiry. Returns 1 if the member holds a slot.
# Also the live stream's per-user connection limit (notifications/live.py).
ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
    return 1
end
return 0
"""


def _key(task_name: str) -> str:
    return KEY_PREFIX + task_name


def slot_acquire(task_name: str, *, limit: int, hold_seconds: float) -> str | None:
    """A slot token if one of ``limit`` is free (or Redis cannot say), else None."""
    token = uuid.uuid4().hex
    now = time.time()
    try:
        held = client().eval(ACQUIRE_SCRIPT, 1, _key(task_name), now, limit, token, now + hold_seconds)
    except redis.RedisError as exc:
        logger.warning("task.slot_unchecked", extra={"task_name": task_name, "error": repr(exc)})
        return token
    return token if held else None


def slot_release(task_name: str, token: str) -> None:
    try:
        client().zrem(_key(task_name), token)
    except redis.RedisError as exc:  # the slot expires by itself
        logger.warning("task.slot_release_failed", extra={"task_name": task_name, "error": repr(exc)})


def slots_held(task_name: str) -> int:
    """Slots held now (expired ones not counted)."""
    return client().zcount(_key(task_name), time.time(), "+inf")
