"""Odoo sync status per store: order syncs (a paid order's sale.order) and inventory
pushes (a product's quantity at the store), each with its pending, failed and synced
counts and the last success."""

APPLIES = {"stores"}
COLUMNS = ["store", "sync", "pending", "failed", "synced", "skipped", "last_success"]


def query(filters: dict) -> tuple[str, dict]:
    params, orders_where, stock_where = {}, "", ""
    if filters.get("stores"):
        params["stores"] = filters["stores"]
        orders_where = "WHERE o.store_id = ANY(%(stores)s)"
        stock_where = "WHERE x.store_id = ANY(%(stores)s)"
    counts = """count(*) FILTER (WHERE x.status = 'pending'), count(*) FILTER (WHERE x.status = 'failed'),
               count(*) FILTER (WHERE x.status = 'synced'), count(*) FILTER (WHERE x.status = 'skipped'),
               max(x.synced_at)"""
    sql = f"""
        SELECT s.code, 'orders', {counts}
        FROM integrations_odooorderlink x
        JOIN orders_order o ON o.id = x.order_id
        JOIN catalog_store s ON s.id = o.store_id
        {orders_where}
        GROUP BY s.code
        UNION ALL
        SELECT s.code, 'inventory', {counts}
        FROM integrations_inventorysyncstate x JOIN catalog_store s ON s.id = x.store_id
        {stock_where}
        GROUP BY s.code
        ORDER BY 1, 2
    """
    return sql, params
