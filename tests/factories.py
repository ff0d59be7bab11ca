from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from catalog import services
from catalog.models import Product, StockLevel, Store


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("secret-pass-123")


class StoreFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Store

    code = factory.Sequence(lambda n: f"store-{n}")
    name = factory.Sequence(lambda n: f"Store {n}")
    city = "Berlin"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.store_create(**kwargs)


class ProductFactory(factory.django.DjangoModelFactory):
    """Creates products through the service, as the API and admin do."""

    class Meta:
        model = Product

    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    name = factory.Sequence(lambda n: f"Product {n}")
    description = "A product."
    category = "pantry"
    price = Decimal("2.50")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.product_create(**kwargs)


class StockLevelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StockLevel

    product = factory.SubFactory(ProductFactory)
    store = factory.SubFactory(StoreFactory)
    quantity = 10

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.stock_level_set(**kwargs)


class AddressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "orders.Address"

    user = factory.SubFactory(UserFactory)
    recipient = "Ada Lovelace"
    line1 = "Unter den Linden 1"
    city = "Berlin"
    postal_code = "10117"
    country = "DE"


def place_order(*, user=None, store=None, lines=((Decimal("2.50"), 2),), stock=10):
    """An order of fresh products, each stocked with ``stock`` units, placed through the service."""
    from orders.services import order_place

    user = user or UserFactory()
    store = store or StoreFactory()
    items = []
    for price, quantity in lines:
        product = ProductFactory(price=price)
        services.stock_level_set(product=product, store=store, quantity=stock)
        items.append((product, quantity))
    return order_place(user=user, store=store, address=AddressFactory(user=user), items=items)


def reach(order, *statuses):
    """Record that ``order`` went through ``statuses`` (their timestamps), without the
    services' side effects (no jobs enqueued): what background work about a status checks."""
    from orders.models import STATUS_TIMESTAMPS, Order

    Order.objects.filter(id=order.id).update(**{STATUS_TIMESTAMPS[status]: timezone.now() for status in statuses})
    order.refresh_from_db()
    return order
