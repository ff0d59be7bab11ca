"""Stock-outs and low stock per store: every stock level of an active product at or
below ``threshold`` units (``out`` at zero or less, else ``low``)."""

from .common import narrowing

APPLIES = {"stores", "category", "threshold"}
COLUMNS = ["store", "sku", "product", "category", "quantity", "state"]


def query(filters: dict) -> tuple[str, dict]:
    params = {"threshold": filters["threshold"]}
    where = narrowing(filters, params, stores="l.store_id", category="p.category")
    sql = f"""
        SELECT s.code, p.sku, p.name, p.category, l.quantity,
               CASE WHEN l.quantity <= 0 THEN 'out' ELSE 'low' END
        FROM catalog_stocklevel l
        JOIN catalog_store s ON s.id = l.store_id
        JOIN catalog_product p ON p.id = l.product_id
        WHERE p.active AND l.quantity <= %(threshold)s {where}
        ORDER BY s.code, l.quantity, p.sku
    """
    return sql, params
