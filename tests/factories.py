from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

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
