"""Orders metrics: the enriched-order cache's hits and misses."""

from prometheus_client import Counter

ENRICHED_CACHE = Counter(
    "celeste_order_cache_requests_total", "Enriched-order cache lookups by result (hit, miss).", ["result"]
)
