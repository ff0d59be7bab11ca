"""Counters shared by every process, kept in Redis. A metric must never break
the work it measures, so Redis errors are logged and swallowed."""

import functools
import logging

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from django.conf import settings

logger = logging.getLogger(__name__)
PREFIX = "celeste:metrics:"


@functools.cache
def _client() -> redis.Redis:
    # No retry backoff: while Redis is down a metric is skipped, not waited for.
    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )


def incr(name: str, amount: int = 1) -> None:
    try:
        _client().incrby(PREFIX + name, amount)
    except redis.RedisError:
        logger.warning("metrics.incr_failed", extra={"metric": name})


def value(name: str) -> int:
    try:
        return int(_client().get(PREFIX + name) or 0)
    except redis.RedisError:
        logger.warning("metrics.read_failed", extra={"metric": name})
        return 0
