"""Orders API: addresses, placing, ownership, transitions, includes, query counts."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from catalog.models import StockLevel
from catalog.services import stock_level_set
from orders.models import Address, Order

from ..factories import AddressFactory, ProductFactory, StoreFactory, UserFactory, place_order

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders/"
ADDRESSES = "/api/v1/addresses/"
ALL = "products,stores,addresses"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def customer():
    return UserFactory()


@pytest.fixture
def shop(customer):
    store = StoreFactory()
    oat, drill = ProductFactory(name="Oat Milk", price="1.99"), ProductFactory(name="Drill", price="89.00")
    stock_level_set(product=oat, store=store, quantity=10)
    stock_level_set(product=drill, store=store, quantity=1)
    return {"store": store, "oat": oat, "drill": drill, "address": AddressFactory(user=customer)}


def place(client, shop, **overrides):
    payload = {
        "store": shop["store"].id,
        "address": shop["address"].id,
        "items": [{"product": shop["oat"].id, "quantity": 2}],
        **overrides,
    }
    return client.post(ORDERS, payload, format="json")


# --- addresses ------------------------------------------------------------------


def test_customer_manages_own_addresses(customer):
    client = client_for(customer)
    payload = {"recipient": "Ada", "line1": "Main St 1", "city": "Berlin", "postal_code": "10117", "country": "DE"}

    created = client.post(ADDRESSES, payload, format="json")
    assert created.status_code == 201
    assert (
        client.patch(f"{ADDRESSES}{created.json()['id']}/", {"city": "Potsdam"}, format="json").json()["city"]
        == "Potsdam"
    )
    assert client.get(ADDRESSES).json()["count"] == 1
    assert client.delete(f"{ADDRESSES}{created.json()['id']}/").status_code == 204


def test_another_users_address_is_a_404(customer):
    other = AddressFactory()

    assert client_for(customer).get(f"{ADDRESSES}{other.id}/").status_code == 404
    assert client_for(customer).delete(f"{ADDRESSES}{other.id}/").status_code == 404
    assert Address.objects.filter(id=other.id).exists()


def test_bad_country_is_a_400(customer):
    response = client_for(customer).post(
        ADDRESSES,
        {"recipient": "A", "line1": "B", "city": "C", "postal_code": "1", "country": "Germany"},
        format="json",
    )
    assert response.status_code == 400
    assert "country" in response.json()


def test_an_address_used_by_an_order_cannot_be_deleted(customer, shop):
    place(client_for(customer), shop)

    response = client_for(customer).delete(f"{ADDRESSES}{shop['address'].id}/")

    assert response.status_code == 409
    assert Address.objects.filter(id=shop["address"].id).exists()


def test_addresses_need_authentication():
    assert APIClient().get(ADDRESSES).status_code == 401


# --- placing --------------------------------------------------------------------


def test_customer_places_an_order_with_server_computed_totals(customer, shop):
    response = place(
        client_for(customer), shop, items=[{"product": shop["oat"].id, "quantity": 2, "unit_price": "0.01"}]
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "pending"
    assert body["total"] == "3.98"
    assert body["items"][0]["unit_price"] == "1.99"
    assert StockLevel.objects.get(product=shop["oat"]).quantity == 8


def test_not_enough_stock_is_a_409_and_changes_nothing(customer, shop):
    response = place(
        client_for(customer),
        shop,
        items=[{"product": shop["oat"].id, "quantity": 1}, {"product": shop["drill"].id, "quantity": 2}],
    )

    assert response.status_code == 409
    assert "Only 1 of 'Drill'" in response.json()["detail"]
    assert not Order.objects.exists()
    assert StockLevel.objects.get(product=shop["oat"]).quantity == 10


def test_a_product_the_store_does_not_stock_says_so(customer, shop):
    elsewhere = ProductFactory(name="Kettle")

    response = place(client_for(customer), shop, items=[{"product": elsewhere.id, "quantity": 1}])

    assert response.status_code == 409
    assert response.json()["detail"] == f"{shop['store'].name} does not stock 'Kettle' ({elsewhere.sku})."
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda shop: {"items": []}, "items"),
        (lambda shop: {"items": [{"product": shop["oat"].id, "quantity": 0}]}, "items"),
        (lambda shop: {"items": [{"product": 999999, "quantity": 1}]}, "items"),
        (
            lambda shop: {
                "items": [{"product": shop["oat"].id, "quantity": 1}, {"product": shop["oat"].id, "quantity": 1}]
            },
            "items",
        ),
        (lambda shop: {"store": 999999}, "store"),
        (lambda shop: {"address": AddressFactory().id}, "address"),
    ],
)
def test_bad_order_input_is_a_400(customer, shop, change, field):
    response = place(client_for(customer), shop, **change(shop))

    assert response.status_code == 400
    assert field in response.json()
    assert not Order.objects.exists()


def test_an_inactive_product_cannot_be_ordered(customer, shop):
    shop["oat"].active = False
    shop["oat"].save()

    response = place(client_for(customer), shop)

    assert response.status_code == 400
    assert "not for sale" in str(response.json())


# --- reading and ownership --------------------------------------------------------


def test_customers_see_only_their_own_orders(customer, shop):
    mine = place(client_for(customer), shop).json()["id"]
    theirs = place_order()

    client = client_for(customer)
    assert [o["id"] for o in client.get(ORDERS).json()["results"]] == [mine]
    assert client.get(f"{ORDERS}{theirs.id}/").status_code == 404
    assert client.get(f"{ORDERS}{theirs.id}/", {"include": ALL}).status_code == 404
    assert client.post(f"{ORDERS}{theirs.id}/cancel/").status_code == 404


def test_staff_see_all_orders_and_filter_them():
    place_order()
    second = place_order()
    staff = client_for(UserFactory(is_staff=True))

    assert staff.get(ORDERS).json()["count"] == 2
    assert [o["id"] for o in staff.get(ORDERS, {"store": second.store_id}).json()["results"]] == [second.id]
    assert staff.get(ORDERS, {"status": "paid"}).json()["count"] == 0
    assert staff.get(ORDERS, {"created_after": "2000-01-01T00:00:00Z"}).json()["count"] == 2
    assert staff.get(ORDERS, {"created_before": "2000-01-01T00:00:00Z"}).json()["count"] == 0
    assert staff.get(ORDERS, {"status": "lost"}).status_code == 400


def test_includes_embed_related_objects(customer, shop):
    order_id = place(client_for(customer), shop).json()["id"]

    plain = client_for(customer).get(f"{ORDERS}{order_id}/").json()
    full = client_for(customer).get(f"{ORDERS}{order_id}/", {"include": ALL}).json()

    assert plain["store"] == shop["store"].id and plain["items"][0]["product"] == shop["oat"].id
    assert full["store"]["code"] == shop["store"].code
    assert full["address"]["city"] == "Berlin"
    assert full["items"][0]["product"]["name"] == "Oat Milk"


def test_unknown_include_is_a_400(customer, shop):
    order_id = place(client_for(customer), shop).json()["id"]

    response = client_for(customer).get(f"{ORDERS}{order_id}/", {"include": "products,users"})

    assert response.status_code == 400
    assert "users" in response.json()["include"]


def test_order_list_runs_a_constant_number_of_queries_whatever_the_page_size():
    staff_user = UserFactory(is_staff=True)
    staff = client_for(staff_user)

    def queries_for_list() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as captured:
            response = staff.get(ORDERS, {"include": ALL, "page_size": 200})
        assert response.status_code == 200
        return len(captured.captured_queries), len(response.json()["results"])

    place_order(lines=((Decimal("1.00"), 1), (Decimal("2.00"), 2)))
    one = queries_for_list()
    store = StoreFactory()
    for _ in range(199):
        place_order(store=store, lines=((Decimal("1.00"), 1), (Decimal("2.00"), 2)))
    many = queries_for_list()

    assert one[1] == 1 and many[1] == 200
    assert one[0] == many[0]


# --- transitions ------------------------------------------------------------------


def test_customer_cancels_while_allowed_and_stock_comes_back(customer, shop):
    order_id = place(client_for(customer), shop).json()["id"]

    response = client_for(customer).post(f"{ORDERS}{order_id}/cancel/")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert StockLevel.objects.get(product=shop["oat"]).quantity == 10
    again = client_for(customer).post(f"{ORDERS}{order_id}/cancel/")
    assert again.status_code == 409
    assert "is cancelled" in again.json()["detail"]


def test_only_staff_move_orders_along(customer, shop):
    order_id = place(client_for(customer), shop).json()["id"]
    staff = client_for(UserFactory(is_staff=True))

    assert client_for(customer).post(f"{ORDERS}{order_id}/mark-paid/").status_code == 403
    assert staff.post(f"{ORDERS}{order_id}/ship/").status_code == 409
    for step, status in [
        ("mark-paid", "paid"),
        ("confirm", "confirmed"),
        ("ship", "shipped"),
        ("deliver", "delivered"),
    ]:
        response = staff.post(f"{ORDERS}{order_id}/{step}/")
        assert response.status_code == 200, response.content
        assert response.json()["status"] == status
    refused = client_for(customer).post(f"{ORDERS}{order_id}/cancel/")
    assert refused.status_code == 409
    assert "is delivered" in refused.json()["detail"]


def test_orders_need_authentication():
    assert APIClient().get(ORDERS).status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        "created_before=0962-11-05T04:44:22-17:38",  # Python takes the offset, Postgres does not
        "created_after=2024-01-01T00:00:00%2B23:59",
    ],
)
def test_datetime_filters_with_offsets_postgres_refuses_are_converted_to_utc(customer_client, query):
    assert customer_client.get(f"/api/v1/orders/?{query}").status_code == 200


def test_a_datetime_filter_outside_the_years_python_has_in_utc_is_a_400(customer_client):
    response = customer_client.get("/api/v1/orders/?created_after=0001-01-01T00:00:00%2B01:00")

    assert response.status_code == 400
    assert "created_after" in response.json()


def test_the_fast_order_json_is_what_the_declared_fields_would_give():
    """Orders are read through plain functions (orders/api/serializers.py); DRF's generic
    to_representation of the same serializers, field by field, must agree with them."""
    from rest_framework.serializers import ModelSerializer

    from orders.api import serializers as s
    from orders.selectors import orders_with_relations

    from ..factories import reach

    placed = place_order(lines=((Decimal("2.50"), 2), (Decimal("0.99"), 3)))
    reach(placed, "paid", "confirmed")
    Order.objects.filter(id=placed.id).update(payment_error="card declined")
    order = orders_with_relations().get(id=placed.id)
    item = order.item_list[0]

    def generic(serializer, instance):
        return dict(ModelSerializer.to_representation(serializer, instance))

    assert s.address_json(order.address) == generic(s.AddressSerializer(), order.address)
    assert s.included_store_json(order.store) == generic(s.IncludedStoreSerializer(), order.store)
    assert s.included_product_json(item.product) == generic(s.IncludedProductSerializer(), item.product)
    assert s.order_item_json(item, set()) == generic(s.OrderItemSerializer(), item)
    plain = generic(s.OrderSerializer(context={"includes": set()}), order)
    assert s.order_json(order, set()) == {**plain, "items": [dict(i) for i in plain["items"]]}
    assert s.order_json(order, set())["paid_at"].endswith("Z") and s.order_json(order, set())["shipped_at"] is None
    full = s.order_json(order, set(s.INCLUDES))
    assert full["store"]["code"] == order.store.code and full["items"][0]["product"]["sku"] == item.product.sku
