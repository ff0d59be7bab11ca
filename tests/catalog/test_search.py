"""Semantic search: real model, real HNSW index, filters and bad input."""

import pytest

from catalog import services
from catalog.models import Product
from catalog.services import embeddings_embed_stale

from ..factories import ProductFactory, StockLevelFactory, StoreFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/products/search"


@pytest.fixture
def catalog():
    berlin, paris = StoreFactory(code="berlin"), StoreFactory(code="paris")
    products = {
        "oat": ProductFactory(
            name="Organic Oat Milk 1L",
            description="Dairy-free oat drink, creamy, for coffee and cereal.",
            category="plant-based",
        ),
        "almond": ProductFactory(
            name="Almond Milk 1L", description="Unsweetened dairy-free almond drink.", category="plant-based"
        ),
        "cow": ProductFactory(name="Whole Milk 1L", description="Fresh cow's milk, 3.5% fat.", category="dairy"),
        "drill": ProductFactory(
            name="Cordless Drill 18V", description="Power drill with two batteries and a charger.", category="hardware"
        ),
        "saw": ProductFactory(
            name="Circular Saw 1200W", description="Electric saw for cutting wood.", category="hardware"
        ),
        "beans": ProductFactory(
            name="Espresso Coffee Beans 1kg", description="Dark roast whole beans.", category="beverages"
        ),
    }
    StockLevelFactory(product=products["oat"], store=berlin, quantity=0)
    StockLevelFactory(product=products["almond"], store=berlin, quantity=12)
    StockLevelFactory(product=products["oat"], store=paris, quantity=5)
    StockLevelFactory(product=products["drill"], store=paris, quantity=3)
    while embeddings_embed_stale():
        pass
    return {"stores": {"berlin": berlin, "paris": paris}, **products}


def names(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [hit["product"]["name"] for hit in response.json()["results"]]


def test_relevant_products_come_first(api_client, catalog):
    milks = names(api_client.get(URL, {"q": "a carton of milk", "limit": 6}))
    oat = names(api_client.get(URL, {"q": "oat drink", "limit": 1}))

    assert set(milks[:3]) == {"Organic Oat Milk 1L", "Almond Milk 1L", "Whole Milk 1L"}
    assert oat == ["Organic Oat Milk 1L"]


def test_hits_carry_a_similarity_score_best_first(api_client, catalog):
    results = api_client.get(URL, {"q": "power tools"}).json()["results"]

    scores = [hit["score"] for hit in results]
    assert scores == sorted(scores, reverse=True)
    assert results[0]["product"]["category"] == "hardware"
    assert results[0]["product"]["embedding_status"] == "ready"


def test_limit_caps_the_results(api_client, catalog):
    assert len(names(api_client.get(URL, {"q": "milk", "limit": 2}))) == 2


def test_store_and_in_stock_filters(api_client, catalog):
    berlin = catalog["stores"]["berlin"].id

    assert set(names(api_client.get(URL, {"q": "milk", "store": berlin}))) == {"Organic Oat Milk 1L", "Almond Milk 1L"}
    assert names(api_client.get(URL, {"q": "milk", "store": berlin, "in_stock": "true"})) == ["Almond Milk 1L"]


def test_in_stock_anywhere(api_client, catalog):
    found = names(api_client.get(URL, {"q": "milk", "in_stock": "true"}))

    assert set(found) == {"Organic Oat Milk 1L", "Almond Milk 1L", "Cordless Drill 18V"}


def test_category_filter(api_client, catalog):
    found = names(api_client.get(URL, {"q": "milk", "category": "hardware"}))

    assert set(found) == {"Cordless Drill 18V", "Circular Saw 1200W"}


def test_filtered_query_still_fills_the_limit_from_deep_in_the_index(api_client, catalog):
    """Iterative index scan: the only in-stock products in Paris are far from the query."""
    paris = catalog["stores"]["paris"].id
    for i in range(300):
        ProductFactory(name=f"Oat Milk Variety {i}", description="Dairy-free oat drink.", category="plant-based")
    while embeddings_embed_stale():
        pass

    found = names(api_client.get(URL, {"q": "oat milk", "store": paris, "in_stock": "true", "limit": 2}))

    assert set(found) == {"Organic Oat Milk 1L", "Cordless Drill 18V"}


def test_products_not_embedded_yet_are_not_returned(api_client, catalog):
    ProductFactory(name="Oat Milk Barista Edition", description="Dairy-free oat drink for baristas.")

    assert "Oat Milk Barista Edition" not in names(api_client.get(URL, {"q": "oat milk barista"}))


def test_deactivated_and_deleted_products_drop_out(api_client, catalog):
    services.product_update(product=catalog["oat"], active=False)
    catalog["almond"].delete()

    found = names(api_client.get(URL, {"q": "milk"}))

    assert "Whole Milk 1L" in found
    assert "Organic Oat Milk 1L" not in found
    assert "Almond Milk 1L" not in found


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "x" * 501}, "q"),
        ({"q": "milk", "limit": 0}, "limit"),
        ({"q": "milk", "limit": 101}, "limit"),
        ({"q": "milk", "limit": "ten"}, "limit"),
        ({"q": "milk", "store": 999999}, "store"),
        ({"q": "milk", "store": "abc"}, "store"),
        ({"q": "milk", "in_stock": "maybe"}, "in_stock"),
    ],
)
def test_bad_input_is_rejected_with_a_field_error(api_client, catalog, params, field):
    response = api_client.get(URL, params)

    assert response.status_code == 400
    assert field in response.json()


def test_unknown_store_message_names_the_store(api_client, catalog):
    response = api_client.get(URL, {"q": "milk", "store": 424242})

    assert response.json()["store"] == ["Unknown store 424242."]


def test_search_url_works_with_a_trailing_slash(api_client, catalog):
    assert names(api_client.get(URL + "/", {"q": "drill", "limit": 1})) == ["Cordless Drill 18V"]


def test_sort_popularity_breaks_ties_between_equally_relevant_products(api_client):
    # Two products with the same text have the same vector: a tie the popularity score breaks.
    quiet = ProductFactory(name="Rye Bread 500g", description="Sourdough rye loaf.", category="bakery")
    popular = ProductFactory(name="Rye Bread 500g", description="Sourdough rye loaf.", category="bakery")
    ProductFactory(name="Cordless Drill 18V", description="Power drill.", category="hardware")
    while embeddings_embed_stale():
        pass
    Product.objects.filter(id=popular.id).update(popularity=42.0)

    def ids(params):
        response = api_client.get(URL, {"q": "rye bread", "limit": 3, **params})
        assert response.status_code == 200, response.content
        return [hit["product"]["id"] for hit in response.json()["results"]]

    assert ids({"sort": "popularity"})[:2] == [popular.id, quiet.id]
    assert set(ids({})[:2]) == {popular.id, quiet.id}  # relevance alone: the tie in any order
    assert ids({"sort": "popularity"})[2] == ids({})[2]  # no tie, no change


def test_an_unknown_sort_is_a_400(api_client):
    response = api_client.get(URL, {"q": "bread", "sort": "price"})

    assert response.status_code == 400
    assert "sort" in response.json()
