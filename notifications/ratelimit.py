"""Per-user, per-channel sliding-window rate limit, atomic in Redis so it holds
across every worker (Celery's own rate_limit is per worker)."""

import time

from django.conf import settings

from celeste.background.redis import client

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
