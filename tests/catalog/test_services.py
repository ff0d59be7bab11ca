"""Catalog services: stock taken and given back by other apps (orders), deletes."""

import pytest

from catalog import services
from catalog.errors import InsufficientStock, InUse
from catalog.models import Product, ProductEmbedding, StockLevel, Store

from ..factories import ProductFactory, StockLevelFactory, StoreFactory, place_order

pytestmark = pytest.mark.django_db


def test_reserving_takes_every_quantity():
    store = StoreFactory()
    first, second = StockLevelFactory(store=store, quantity=5), StockLevelFactory(store=store, quantity=3)

    services.stock_reserve(store_id=store.id, quantities={first.product_id: 2, second.product_id: 3})

    assert StockLevel.objects.get(id=first.id).quantity == 3
    assert StockLevel.objects.get(id=second.id).quantity == 0


def test_reserving_more_than_a_store_holds_is_refused_and_changes_nothing():
    store = StoreFactory()
    plenty, scarce = StockLevelFactory(store=store, quantity=10), StockLevelFactory(store=store, quantity=1)

    with pytest.raises(InsufficientStock) as refused:
        services.stock_reserve(store_id=store.id, quantities={plenty.product_id: 2, scarce.product_id: 2})

    assert (refused.value.product_id, refused.value.available, refused.value.wanted) == (scarce.product_id, 1, 2)
    assert StockLevel.objects.get(id=plenty.id).quantity == 10


def test_a_product_the_store_does_not_stock_has_none_to_reserve():
    with pytest.raises(InsufficientStock, match="does not stock product"):
        services.stock_reserve(store_id=StoreFactory().id, quantities={ProductFactory().id: 1})


def test_releasing_gives_stock_back_and_recreates_a_deleted_row():
    store = StoreFactory()
    kept, gone = StockLevelFactory(store=store, quantity=1), ProductFactory()

    services.stock_release(store_id=store.id, quantities={kept.product_id: 2, gone.id: 4})

    assert StockLevel.objects.get(id=kept.id).quantity == 3
    assert StockLevel.objects.get(store=store, product=gone).quantity == 4


def test_deleting_a_product_takes_its_stock_levels_and_embedding_with_it():
    level = StockLevelFactory()

    services.product_delete(product=level.product)

    assert not Product.objects.filter(id=level.product_id).exists()
    assert not StockLevel.objects.filter(id=level.id).exists()
    assert not ProductEmbedding.objects.filter(product_id=level.product_id).exists()


def test_a_product_orders_refer_to_is_not_deleted():
    product = place_order().items.get().product

    with pytest.raises(InUse, match="order items refer to it"):
        services.product_delete(product=product)

    assert Product.objects.filter(id=product.id).exists()


def test_a_store_orders_refer_to_is_not_deleted():
    store = place_order().store

    with pytest.raises(InUse, match="orders refer to it"):
        services.store_delete(store=store)

    assert Store.objects.filter(id=store.id).exists()


def test_deleting_a_stock_level_leaves_the_product_and_store():
    level = StockLevelFactory()

    services.stock_level_delete(stock_level=level)

    assert not StockLevel.objects.filter(id=level.id).exists()
    assert Product.objects.filter(id=level.product_id).exists() and Store.objects.filter(id=level.store_id).exists()
