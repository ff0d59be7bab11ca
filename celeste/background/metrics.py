"""Counters shared by every process, kept in Redis. A metric must never break
the work it measures, so Redis errors are logged and swallowed."""

import logging

import redis

from .redis import client

logger = logging.getLogger(__name__)
PREFIX = "celeste:metrics:"


def incr(name: str, amount: int = 1) -> None:
    try:
        client().incrby(PREFIX + name, amount)
    except redis.RedisError:
        logger.warning("metrics.incr_failed", extra={"metric": name})


def value(name: str) -> int:
    try:
        return int(client().get(PREFIX + name) or 0)
    except redis.RedisError:
        logger.warning("metrics.read_failed", extra={"metric": name})
        return 0
