from django.db.models import Count, Max, Prefetch

from catalog.selectors import product_images_prefetch

from .models import Order, OrderItem


def orders_with_relations():
    """Orders with everything the API can include, in a constant number of queries
    whatever the page size: orders+store+address, items+products, images, variants."""
    items = OrderItem.objects.select_related("product").prefetch_related(product_images_prefetch("product__images"))
    return Order.objects.select_related("store", "address").prefetch_related(Prefetch("items", queryset=items))


def order_cache_version(order_id: int) -> tuple[int, str] | None:
    """(owner id, version) of an order in one query. The version changes with any
    change to the order, its items, their products and the products' images, its
    store or its address, so a cached copy made at another version is never served.
    (Counts are distinct: the images join repeats each item once per image.)"""
    row = (
        Order.objects.filter(id=order_id)
        .annotate(
            items_updated=Max("items__updated_at"),
            products_updated=Max("items__product__updated_at"),
            items_count=Count("items", distinct=True),
            images_updated=Max("items__product__images__updated_at"),
            images_count=Count("items__product__images", distinct=True),
        )
        .values_list(
            "user_id",
            "updated_at",
            "address__updated_at",
            "store__updated_at",
            "items_updated",
            "products_updated",
            "items_count",
            "images_updated",
            "images_count",
        )
        .first()
    )
    if row is None:
        return None
    user_id, *parts = row
    return user_id, "|".join(str(part) for part in parts)
