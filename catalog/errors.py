from celeste.api.errors import Conflict


class CatalogConflict(Conflict):
    """The request is valid but the catalog's state forbids it (answered with 409)."""


class InsufficientStock(CatalogConflict):
    """A store holds fewer units of a product than asked for."""

    def __init__(self, *, product_id: int, store_id: int, available: int, wanted: int, stocked: bool = True):
        if stocked:
            message = f"Only {available} of product {product_id} left in store {store_id} ({wanted} wanted)."
        else:  # "only 0 left" would suggest it comes back
            message = f"Store {store_id} does not stock product {product_id}."
        super().__init__(message)
        self.product_id, self.store_id, self.available, self.wanted = product_id, store_id, available, wanted
        self.stocked = stocked


class InUse(CatalogConflict):
    """Other records (orders) still refer to it: the delete is refused and nothing changes."""
