"""Catalog admin: saves and deletes go through the catalog services."""

import pytest
from django.urls import reverse

from catalog import services
from catalog.models import Product, StockLevel, Store

from ..factories import ProductFactory, StockLevelFactory, StoreFactory, place_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def calls(monkeypatch):
    """Records every call of the catalog's stock, store and delete services (they still
    run); tests clear it once their data is made (the factories use services too)."""
    seen = []
    for name in ("stock_level_set", "stock_level_delete", "product_delete", "store_delete", "store_create"):
        real = getattr(services, name)

        def spy(*, _real=real, _name=name, **kwargs):
            seen.append(_name)
            return _real(**kwargs)

        monkeypatch.setattr(services, name, spy)
    return seen


def product_form(product, rows):
    data = {
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category": product.category,
        "price": str(product.price),
        "currency": product.currency,
        "active": "on",
        "stock_levels-TOTAL_FORMS": str(len(rows)),
        "stock_levels-INITIAL_FORMS": str(sum(1 for row in rows if "id" in row)),
        "images-TOTAL_FORMS": "0",  # the images inline, untouched
        "images-INITIAL_FORMS": "0",
    }
    for index, row in enumerate(rows):
        data.update({f"stock_levels-{index}-{field}": value for field, value in row.items()})
        data[f"stock_levels-{index}-product"] = product.id
    return data


def test_the_stock_level_inline_sets_moves_and_deletes_through_the_services(admin_client, calls):
    product = ProductFactory()
    kept, moved, dropped = (StockLevelFactory(product=product, quantity=q) for q in (1, 2, 3))
    new_store, moved_to = StoreFactory(), StoreFactory()
    calls.clear()

    response = admin_client.post(
        reverse("admin:catalog_product_change", args=[product.id]),
        product_form(
            product,
            [
                {"id": kept.id, "store": kept.store_id, "quantity": "7"},
                {"id": moved.id, "store": moved_to.id, "quantity": "2"},
                {"id": dropped.id, "store": dropped.store_id, "quantity": "3", "DELETE": "on"},
                {"store": new_store.id, "quantity": "5"},
            ],
        ),
    )

    assert response.status_code == 302, response.content[:3000]
    stock = dict(StockLevel.objects.filter(product=product).values_list("store_id", "quantity"))
    assert stock == {kept.store_id: 7, moved_to.id: 2, new_store.id: 5}
    assert sorted(calls) == ["stock_level_delete"] * 2 + ["stock_level_set"] * 3


def test_deleting_a_product_in_the_admin_goes_through_the_service(admin_client, calls):
    product = ProductFactory()

    admin_client.post(reverse("admin:catalog_product_delete", args=[product.id]), {"post": "yes"})

    assert not Product.objects.filter(id=product.id).exists()
    assert calls == ["product_delete"]


def test_the_admin_refuses_to_delete_a_product_orders_refer_to(admin_client):
    product = place_order().items.get().product

    response = admin_client.post(reverse("admin:catalog_product_delete", args=[product.id]), {"post": "yes"})

    assert "protected" in response.content.decode()
    assert Product.objects.filter(id=product.id).exists()


def test_bulk_deleting_stores_and_stock_levels_goes_through_the_services(admin_client, calls):
    stores, level = [StoreFactory(), StoreFactory()], StockLevelFactory()
    calls.clear()

    admin_client.post(
        reverse("admin:catalog_store_changelist"),
        {"action": "delete_selected", "_selected_action": [s.id for s in stores], "post": "yes"},
    )
    admin_client.post(
        reverse("admin:catalog_stocklevel_changelist"),
        {"action": "delete_selected", "_selected_action": [level.id], "post": "yes"},
    )

    assert not Store.objects.filter(id__in=[s.id for s in stores]).exists()
    assert not StockLevel.objects.exists()
    assert calls == ["store_delete", "store_delete", "stock_level_delete"]


def test_adding_a_store_in_the_admin_goes_through_the_service(admin_client, calls):
    response = admin_client.post(
        reverse("admin:catalog_store_add"),
        {"code": "berlin-mitte", "name": "Berlin Mitte", "city": "Berlin", "active": "on", "odoo_location_id": "8"},
    )

    assert response.status_code == 302, response.content[:3000]
    assert Store.objects.filter(code="berlin-mitte", odoo_location_id=8).exists()
    assert calls == ["store_create"]
