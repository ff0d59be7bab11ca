from django.db import connection
from django.db.models import Prefetch

from catalog.models import Product, ProductImage, Store
from catalog.selectors import product_images_prefetch

from .models import Address, Order, OrderItem

_PRODUCT_COLUMNS_NOT_SHOWN = ("search_vector", "content_hash", "popularity", "created_at", "updated_at")


def orders_with_relations():
    """Orders with everything the API can include, in a constant number of queries
    whatever the page size: orders+store+address, items+products, images, variants.

    The items and images land in plain lists (``order.item_list``, ``product.image_list``):
    Django's default prefetch gives every order and product its own queryset object, and
    building 800 of those was most of the time of a 200-order page. Products come without the
    columns no order shows (the search tsvector is the largest part of a product row)."""
    items = (
        OrderItem.objects.select_related("product")
        .defer(*(f"product__{name}" for name in _PRODUCT_COLUMNS_NOT_SHOWN))
        .prefetch_related(product_images_prefetch("product__images", to_attr="image_list"))
    )
    return Order.objects.select_related("store", "address").prefetch_related(
        Prefetch("items", queryset=items, to_attr="item_list")
    )


# One statement, planned once by Postgres and not compiled by the ORM on every request: this
# runs before each pre-cached order detail is served, so its cost is the cached path's cost.
_VERSION_SQL = f"""
SELECT o.user_id,
       concat_ws('|', o.updated_at, a.updated_at, s.updated_at,
                 items.updated, items.products_updated, items.count, images.updated, images.count)
FROM {Order._meta.db_table} o
JOIN {Address._meta.db_table} a ON a.id = o.address_id
JOIN {Store._meta.db_table} s ON s.id = o.store_id
CROSS JOIN LATERAL (
    SELECT max(i.updated_at) AS updated, max(p.updated_at) AS products_updated, count(*) AS count
    FROM {OrderItem._meta.db_table} i JOIN {Product._meta.db_table} p ON p.id = i.product_id
    WHERE i.order_id = o.id
) items
CROSS JOIN LATERAL (
    SELECT max(im.updated_at) AS updated, count(*) AS count
    FROM {ProductImage._meta.db_table} im
    WHERE im.product_id IN (SELECT product_id FROM {OrderItem._meta.db_table} WHERE order_id = o.id)
) images
WHERE o.id = %s
"""


def order_cache_version(order_id: int) -> tuple[int, str] | None:
    """(owner id, version) of an order in one query. The version changes with any
    change to the order, its items, their products and the products' images, its
    store or its address, so a cached copy made at another version is never served."""
    with connection.cursor() as cursor:
        cursor.execute(_VERSION_SQL, [order_id])
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1])
