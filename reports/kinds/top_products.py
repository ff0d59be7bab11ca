"""Top products by revenue, then units, over orders that were paid (cancelled and
unpaid orders aside); at most ``limit`` rows."""

from orders.models import OrderStatus

from .common import bounds, narrowing

APPLIES = {"date_from", "date_to", "stores", "category", "limit"}
COLUMNS = ["rank", "sku", "product", "category", "currency", "orders", "units", "revenue"]
# Orders that were paid (and not cancelled), as plain strings for the SQL array.
SOLD = [s.value for s in (OrderStatus.PAID, OrderStatus.CONFIRMED, OrderStatus.SHIPPED, OrderStatus.DELIVERED)]


def query(filters: dict) -> tuple[str, dict]:
    span = bounds(filters)
    params = {"start": span.start, "end": span.end, "sold": SOLD, "limit": filters["limit"]}
    where = narrowing(filters, params, stores="o.store_id", category="p.category")
    sql = f"""
        SELECT row_number() OVER (ORDER BY sum(i.line_total) DESC, sum(i.quantity) DESC, p.sku),
               p.sku, p.name, p.category, o.currency, count(DISTINCT o.id), sum(i.quantity), sum(i.line_total)
        FROM orders_orderitem i
        JOIN orders_order o ON o.id = i.order_id
        JOIN catalog_product p ON p.id = i.product_id
        WHERE o.created_at >= %(start)s AND o.created_at < %(end)s AND o.status = ANY(%(sold)s) {where}
        GROUP BY p.sku, p.name, p.category, o.currency
        ORDER BY 1
        LIMIT %(limit)s
    """
    return sql, params
