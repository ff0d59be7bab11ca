from django.db.models import Count, Max, Prefetch

from .models import Order, OrderItem


def orders_with_relations():
    """Orders with everything the API can include, in a constant number of
    queries whatever the page size: orders+store+address, then items+products."""
    return Order.objects.select_related("store", "address").prefetch_related(
        Prefetch("items", queryset=OrderItem.objects.select_related("product"))
    )


def order_cache_version(order_id: int) -> tuple[int, str] | None:
    """(owner id, version) of an order in one query. The version changes with any
    change to the order, its items, their products, its store or its address, so
    a cached copy made at another version is never served."""
    row = (
        Order.objects.filter(id=order_id)
        .annotate(
            items_updated=Max("items__updated_at"),
            products_updated=Max("items__product__updated_at"),
            items_count=Count("items"),
        )
        .values_list(
            "user_id",
            "updated_at",
            "address__updated_at",
            "store__updated_at",
            "items_updated",
            "products_updated",
            "items_count",
        )
        .first()
    )
    if row is None:
        return None
    user_id, *parts = row
    return user_id, "|".join(str(part) for part in parts)
