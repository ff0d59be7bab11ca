"""Building the enriched order that the detail endpoint serves from Redis.

The one module outside ``api/`` that imports the API (its serializer): here the
API's JSON itself is the product. The cache must hold byte for byte what
``GET /orders/{id}/?include=products,stores,addresses`` answers, so it is built
with the very serializer that answers it. tests/test_architecture.py allows this
import and no other.
"""

from .api.serializers import INCLUDES, OrderSerializer
from .cache import enriched_order_forget, enriched_order_set
from .selectors import order_cache_version, orders_with_relations


def enriched_order_build(order) -> dict:
    """Exactly what ``GET /orders/{id}/?include=products,stores,addresses`` returns."""
    return OrderSerializer(order, context={"includes": set(INCLUDES)}).data


def enriched_order_refresh(*, order_id: int) -> bool:
    """Build and cache one order. Returns False if the order is gone or changed
    while it was being built (then nothing stale is left behind)."""
    version = order_cache_version(order_id)
    order = orders_with_relations().filter(id=order_id).first()
    if version is None or order is None:
        enriched_order_forget(order_id)
        return False
    enriched_order_set(order_id, version=version[1], order=enriched_order_build(order))
    current = order_cache_version(order_id)
    if current is None or current[1] != version[1]:
        enriched_order_forget(order_id)
        return False
    return True
