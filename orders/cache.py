"""The enriched-order cache: the full ``?include=products,stores,addresses``
JSON of an order, filled by a task after payment, dropped on any change."""

import logging

import redis
from django.conf import settings
from rest_framework.renderers import JSONRenderer

from celeste.background.redis import client

from .metrics import ENRICHED_CACHE

logger = logging.getLogger(__name__)


def _key(order_id: int) -> str:
    return f"celeste:orders:enriched:v2:{order_id}"


def enriched_order_get(order_id: int) -> tuple[str, bytes] | None:
    """(version, JSON bytes of the order) if cached; None if absent or Redis is unreachable."""
    try:
        blob = client().get(_key(order_id))
    except redis.RedisError:
        logger.warning("orders.cache_unavailable", extra={"order_id": order_id})
        return None
    if not blob:
        return None
    version, _, body = blob.partition(b"\n")
    return version.decode(), body


def count_lookup(*, hit: bool) -> None:
    ENRICHED_CACHE.labels(result="hit" if hit else "miss").inc()


def enriched_order_set(order_id: int, *, version: str, order: dict) -> None:
    # The version goes on its own first line, so a hit can be served as bytes.
    body = JSONRenderer().render(order)  # byte for byte what the API renders
    client().set(_key(order_id), version.encode() + b"\n" + body, ex=settings.ORDER_CACHE_TTL_SECONDS)


def enriched_order_forget(*order_ids: int) -> None:
    if not order_ids:
        return
    try:
        client().delete(*(_key(order_id) for order_id in order_ids))
    except redis.RedisError:
        # Cannot drop it now: the TTL bounds how long a stale copy could live.
        logger.error("orders.cache_invalidation_failed", extra={"order_ids": list(order_ids)})
