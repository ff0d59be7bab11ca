"""Catalog API: CRUD, permissions, validation, filters, pagination."""

import pytest

from catalog.models import Product, ProductEmbedding, StockLevel
from catalog.services import embeddings_embed_stale

from ..factories import ProductFactory, StockLevelFactory, StoreFactory, place_order

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/v1/products/"
STORES = "/api/v1/stores/"
STOCK = "/api/v1/stock-levels/"


def product_payload(**overrides):
    return {
        "sku": "OAT-1",
        "name": "Oat Milk 1L",
        "description": "Dairy-free.",
        "category": "plant-based",
        "price": "1.99",
        "currency": "EUR",
        **overrides,
    }


def test_staff_creates_a_product_with_a_pending_embedding(staff_client):
    response = staff_client.post(PRODUCTS, product_payload(), format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["embedding_status"] == "pending"
    assert ProductEmbedding.objects.filter(product_id=body["id"]).exists()


def test_embedding_status_becomes_ready_then_pending_again_on_a_text_change(staff_client):
    product_id = staff_client.post(PRODUCTS, product_payload(), format="json").json()["id"]
    embeddings_embed_stale()
    assert staff_client.get(f"{PRODUCTS}{product_id}/").json()["embedding_status"] == "ready"

    staff_client.patch(f"{PRODUCTS}{product_id}/", {"price": "2.49"}, format="json")
    assert staff_client.get(f"{PRODUCTS}{product_id}/").json()["embedding_status"] == "ready"

    staff_client.patch(f"{PRODUCTS}{product_id}/", {"description": "Now barista style."}, format="json")
    assert staff_client.get(f"{PRODUCTS}{product_id}/").json()["embedding_status"] == "pending"


def test_anyone_can_read_the_catalog(api_client):
    ProductFactory()

    assert api_client.get(PRODUCTS).status_code == 200
    assert api_client.get(STORES).status_code == 200


def test_anonymous_users_cannot_write(api_client):
    assert api_client.post(PRODUCTS, product_payload(), format="json").status_code == 401
    assert not Product.objects.exists()


def test_customers_cannot_write(customer_client):
    product = ProductFactory()

    assert customer_client.post(PRODUCTS, product_payload(), format="json").status_code == 403
    assert customer_client.patch(f"{PRODUCTS}{product.id}/", {"price": "0.01"}, format="json").status_code == 403
    assert customer_client.delete(f"{PRODUCTS}{product.id}/").status_code == 403
    product.refresh_from_db()
    assert str(product.price) == "2.50"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"price": "-1.00"}, "price"),
        ({"price": "abc"}, "price"),
        ({"currency": "XYZ"}, "currency"),
        ({"name": ""}, "name"),
        ({"sku": ""}, "sku"),
    ],
)
def test_bad_product_input_is_a_400_and_changes_nothing(staff_client, overrides, field):
    response = staff_client.post(PRODUCTS, product_payload(**overrides), format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Product.objects.exists()


def test_duplicate_sku_is_a_400(staff_client):
    ProductFactory(sku="OAT-1")

    response = staff_client.post(PRODUCTS, product_payload(sku="OAT-1"), format="json")

    assert response.status_code == 400
    assert "sku" in response.json()
    assert Product.objects.count() == 1


def test_staff_updates_and_deletes_a_product(staff_client):
    product = ProductFactory()

    assert staff_client.patch(f"{PRODUCTS}{product.id}/", {"name": "Renamed"}, format="json").status_code == 200
    assert Product.objects.get(id=product.id).name == "Renamed"
    assert staff_client.delete(f"{PRODUCTS}{product.id}/").status_code == 204
    assert not Product.objects.filter(id=product.id).exists()


def test_deleting_a_product_orders_refer_to_is_a_409_and_changes_nothing(staff_client):
    order = place_order()
    product = order.items.get().product

    response = staff_client.delete(f"{PRODUCTS}{product.id}/")

    assert response.status_code == 409
    assert response.json()["detail"] == (
        f"Product {product.name!r} ({product.sku}) cannot be deleted: order items refer to it. "
        "Deactivate it instead (active: false)."
    )
    assert Product.objects.filter(id=product.id, active=True).exists()
    assert StockLevel.objects.filter(product=product).exists()


def test_deleting_a_store_orders_refer_to_is_a_409_and_changes_nothing(staff_client):
    store = place_order().store

    response = staff_client.delete(f"{STORES}{store.id}/")

    assert response.status_code == 409
    assert "orders refer to it" in response.json()["detail"]
    assert StockLevel.objects.filter(store=store).exists()


def test_staff_deletes_a_store_with_its_stock_levels(staff_client):
    level = StockLevelFactory()

    assert staff_client.delete(f"{STORES}{level.store_id}/").status_code == 204
    assert not StockLevel.objects.filter(id=level.id).exists()


def test_unknown_product_is_a_404(api_client):
    assert api_client.get(f"{PRODUCTS}999999/").status_code == 404


@pytest.fixture
def stocked():
    berlin, paris = StoreFactory(code="berlin"), StoreFactory(code="paris")
    oat = ProductFactory(name="Oat Milk", category="plant-based", price="1.99")
    drill = ProductFactory(name="Drill", category="hardware", price="89.00")
    soap = ProductFactory(name="Soap", category="household", price="3.50", active=False)
    StockLevelFactory(product=oat, store=berlin, quantity=0)
    StockLevelFactory(product=oat, store=paris, quantity=4)
    StockLevelFactory(product=drill, store=berlin, quantity=2)
    return {"berlin": berlin, "paris": paris, "oat": oat, "drill": drill, "soap": soap}


def list_names(client, **params):
    response = client.get(PRODUCTS, params)
    assert response.status_code == 200, response.content
    return sorted(p["name"] for p in response.json()["results"])


def test_product_filters(api_client, stocked):
    berlin = stocked["berlin"].id

    assert list_names(api_client, store=berlin) == ["Drill", "Oat Milk"]
    assert list_names(api_client, store=berlin, in_stock="true") == ["Drill"]
    assert list_names(api_client, in_stock="true") == ["Drill", "Oat Milk"]
    assert list_names(api_client, in_stock="false") == ["Soap"]
    assert list_names(api_client, category="hardware") == ["Drill"]
    assert list_names(api_client, active="false") == ["Soap"]
    assert list_names(api_client, price_min="2", price_max="50") == ["Soap"]
    assert list_names(api_client, search="drill") == ["Drill"]


def test_product_ordering(api_client, stocked):
    response = api_client.get(PRODUCTS, {"ordering": "-price"})

    assert [p["name"] for p in response.json()["results"]] == ["Drill", "Soap", "Oat Milk"]


@pytest.mark.parametrize("params", [{"store": 999999}, {"price_min": "cheap"}, {"in_stock": "maybe"}])
def test_bad_filters_are_a_400(api_client, stocked, params):
    assert api_client.get(PRODUCTS, params).status_code == 400


def test_lists_are_paginated(api_client):
    for _ in range(7):
        ProductFactory()

    body = api_client.get(PRODUCTS, {"page_size": 5}).json()

    assert body["count"] == 7
    assert len(body["results"]) == 5
    assert body["next"]
    assert len(api_client.get(PRODUCTS, {"page_size": 5, "page": 2}).json()["results"]) == 2
    assert api_client.get(PRODUCTS, {"page": 9}).status_code == 404


def test_store_crud(staff_client, api_client):
    response = staff_client.post(STORES, {"code": "lisbon", "name": "Lisbon Baixa", "city": "Lisbon"}, format="json")
    assert response.status_code == 201
    store_id = response.json()["id"]

    assert staff_client.post(STORES, {"code": "lisbon", "name": "Again"}, format="json").status_code == 400
    assert staff_client.patch(f"{STORES}{store_id}/", {"city": "Porto"}, format="json").json()["city"] == "Porto"
    assert api_client.post(STORES, {"code": "x", "name": "X"}, format="json").status_code == 401


def test_stock_levels_set_and_update(staff_client):
    store, product = StoreFactory(), ProductFactory()

    response = staff_client.post(STOCK, {"product": product.id, "store": store.id, "quantity": 5}, format="json")
    assert response.status_code == 201, response.content
    level_id = response.json()["id"]

    assert staff_client.patch(f"{STOCK}{level_id}/", {"quantity": 9}, format="json").status_code == 200
    assert StockLevel.objects.get(id=level_id).quantity == 9


def test_negative_stock_is_a_400(staff_client):
    store, product = StoreFactory(), ProductFactory()

    response = staff_client.post(STOCK, {"product": product.id, "store": store.id, "quantity": -1}, format="json")

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert not StockLevel.objects.exists()


@pytest.mark.parametrize("quantity", [2**31, 2**63, 10**30])
def test_a_stock_quantity_beyond_the_column_is_a_400_naming_the_field(staff_client, quantity):
    store, product = StoreFactory(), ProductFactory()

    response = staff_client.post(STOCK, {"product": product.id, "store": store.id, "quantity": quantity}, format="json")

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert not StockLevel.objects.exists()


def test_a_stock_update_beyond_the_column_is_a_400_and_changes_nothing(staff_client):
    level = StockLevelFactory(quantity=3)

    response = staff_client.patch(f"{STOCK}{level.id}/", {"quantity": 2**31}, format="json")

    assert response.status_code == 400
    assert "quantity" in response.json()
    assert StockLevel.objects.get(id=level.id).quantity == 3


def test_a_second_stock_level_for_the_same_pair_is_a_400(staff_client):
    level = StockLevelFactory()

    response = staff_client.post(
        STOCK, {"product": level.product_id, "store": level.store_id, "quantity": 1}, format="json"
    )

    assert response.status_code == 400
    assert StockLevel.objects.count() == 1


def test_a_stock_level_cannot_be_moved_to_another_product(staff_client):
    level = StockLevelFactory(quantity=3)
    other = ProductFactory()

    response = staff_client.patch(f"{STOCK}{level.id}/", {"product": other.id, "quantity": 8}, format="json")

    assert response.status_code == 400
    assert "product" in response.json()
    level.refresh_from_db()
    assert (level.product_id, level.quantity) == (level.product_id, 3)
    assert not StockLevel.objects.filter(product=other).exists()


def test_stock_level_filters(api_client):
    level = StockLevelFactory(quantity=3)
    StockLevelFactory(quantity=30)

    body = api_client.get(STOCK, {"store": level.store_id}).json()
    assert [row["id"] for row in body["results"]] == [level.id]
    assert len(api_client.get(STOCK, {"min_quantity": 10}).json()["results"]) == 1


def test_openapi_schema_and_swagger_ui(api_client):
    assert api_client.get("/api/schema/").status_code == 200
    assert api_client.get("/api/docs/").status_code == 200


def test_token_authentication(api_client, staff_user):
    token = api_client.post(
        "/api/v1/auth/token/", {"username": staff_user.username, "password": "secret-pass-123"}
    ).json()["token"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert api_client.post(PRODUCTS, product_payload(), format="json").status_code == 201


def test_the_openapi_schema_generates_without_warnings(tmp_path):
    from django.core.management import call_command

    call_command("spectacular", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))

    assert "/api/v1/products/search" in (tmp_path / "schema.yml").read_text()


def test_a_bad_currency_lists_the_accepted_ones(staff_client, settings):
    response = staff_client.post(PRODUCTS, product_payload(currency="XYZ"), format="json")

    assert response.status_code == 400
    accepted = ", ".join(settings.CURRENCIES)
    assert response.json() == {"currency": [f'"XYZ" is not an accepted currency: use one of {accepted}.']}
