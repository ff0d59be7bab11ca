"""Per-user, per-channel sliding-window rate limit, atomic in Redis so it holds
across every worker (Celery's own rate_limit is per worker)."""

import logging
import time
from collections import deque

from django.conf import settings
from redis.exceptions import RedisError

from celeste.background.redis import client

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600

# Members are delivery ids: a retried delivery is already inside the window
# and is not counted twice.
_SLIDING_WINDOW = """
local now, window, limit, member = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], member) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, member)
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


def rate_limit_allow(*, user_id: int, channel: str, delivery_id: int) -> bool:
    """True if this delivery may go out (and counts it); False when the user is over the limit."""
    key = f"celeste:ratelimit:{channel}:{user_id}"
    now_ms = int(time.time() * 1000)
    allowed = client().eval(
        _SLIDING_WINDOW, 1, key, now_ms, WINDOW_SECONDS * 1000, settings.NOTIFY_RATE_LIMIT_PER_HOUR, str(delivery_id)
    )
    return bool(allowed)


# Campaign pacing, global across workers: each sender reserves the next free slots on one
# schedule in Redis (GCRA: the key holds when the next free slot starts, on Redis's own clock so
# the workers' clocks need not agree) and sleeps until each of its slots. N workers together send
# at most CAMPAIGN_MAX_PER_SECOND, not N times that.
CAMPAIGN_PACE_KEY = "celeste:ratelimit:campaign-pace"
# ARGV: the interval between slots (µs), how many consecutive slots to take. Returns how far
# (µs) the first of them is from now.
_NEXT_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, count = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local after = slot + interval * count
redis.call('SET', KEYS[1], after, 'PX', math.ceil((after - now) / 1000) + 1000)
return slot - now
"""
# Slots are reserved this many seconds' worth at a time (at least one): a Redis round trip per
# batch, not per email. A slot its sender does not use (its chunk ended) goes unused: the pace
# is a ceiling, never exceeded.
RESERVE_SECONDS = 0.1


class CampaignPace:
    """``wait()`` before each campaign email. While Redis cannot be reached, it paces this
    process alone (at most the rate per worker) rather than stopping or racing."""

    def __init__(self, per_second: float):
        self.interval_us = int(1_000_000 / per_second) if per_second > 0 else 0
        self.batch = max(1, int(per_second * RESERVE_SECONDS)) if per_second > 0 else 0
        self._slots: deque[float] = deque()  # reserved slots, on time.monotonic()
        self._local_next = time.monotonic()

    def wait(self) -> None:
        if not self.interval_us:
            return
        if not self._slots:
            self._reserve()
        delay = self._slots.popleft() - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _reserve(self) -> None:
        step = self.interval_us / 1_000_000
        try:
            first = client().eval(_NEXT_SLOTS, 1, CAMPAIGN_PACE_KEY, self.interval_us, self.batch) / 1_000_000
            start, count = time.monotonic() + first, self.batch
        except RedisError as exc:
            logger.warning("campaign.pace_local", extra={"error": str(exc)})
            start, count = max(self._local_next, time.monotonic()), 1
        self._slots.extend(start + i * step for i in range(count))
        self._local_next = start + count * step
