"""Sales by store and day: orders, units and revenue per status (and currency).
With a category, only that category's items count (units, revenue) and an order
counts if it has one of them."""

from django.conf import settings

from .common import bounds, narrowing

APPLIES = {"date_from", "date_to", "stores", "category"}
COLUMNS = ["store", "day", "status", "currency", "orders", "units", "revenue"]


def query(filters: dict) -> tuple[str, dict]:
    span = bounds(filters)
    params = {"tz": settings.TIME_ZONE, "start": span.start, "end": span.end}
    joins = ""
    if "category" in filters:
        # Only the category's items count, so it narrows the join rather than the orders.
        joins = "JOIN catalog_product p ON p.id = i.product_id AND p.category = %(category)s"
        params["category"] = filters["category"]
    where = narrowing(filters, params, stores="o.store_id")
    sql = f"""
        SELECT s.code, (o.created_at AT TIME ZONE %(tz)s)::date AS day, o.status, o.currency,
               count(DISTINCT o.id), sum(i.quantity), sum(i.line_total)
        FROM orders_order o
        JOIN catalog_store s ON s.id = o.store_id
        JOIN orders_orderitem i ON i.order_id = o.id
        {joins}
        WHERE o.created_at >= %(start)s AND o.created_at < %(end)s {where}
        GROUP BY s.code, day, o.status, o.currency
        ORDER BY s.code, day, o.status, o.currency
    """
    return sql, params
