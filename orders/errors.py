from celeste.api.errors import Conflict


class OrderConflict(Conflict):
    """The request is valid but the order's state forbids it (answered with 409)."""


class InvalidTransition(OrderConflict):
    pass


class OutOfStock(OrderConflict):
    pass


class TooManyUnpaidOrders(OrderConflict):
    pass
