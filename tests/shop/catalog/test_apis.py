from __future__ import annotations

from decimal import Decimal

import pytest

from tests.factories import CategoryFactory, ProductFactory
from tests.helpers import assert_error, assert_validation_error

pytestmark = pytest.mark.django_db

PRODUCTS = "/api/products/"
PAGE_KEYS = {"count", "next", "previous", "results"}


def test_products_list_returns_page_with_product_shape(api_client):
    category = CategoryFactory(name="Garden", slug="garden")
    product = ProductFactory(category=category, price=Decimal("12.50"), stock=7, sku="GAR-001", name="Trowel")

    response = api_client.get(PRODUCTS)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == PAGE_KEYS
    assert body["count"] == 1
    assert body["next"] is None and body["previous"] is None
    [item] = body["results"]
    assert {"id", "sku", "name", "slug", "price", "currency", "stock", "category"} <= set(item)
    assert item["id"] == product.id
    assert item["sku"] == "GAR-001"
    assert item["name"] == "Trowel"
    assert item["slug"] == product.slug
    assert item["price"] == "12.50"
    assert item["currency"] == "USD"
    assert item["stock"] == 7
    assert item["category"] == {"id": category.id, "slug": "garden", "name": "Garden"}


def test_products_list_hides_inactive_products(api_client):
    active = ProductFactory()
    ProductFactory(is_active=False)
    body = api_client.get(PRODUCTS).json()
    assert [item["id"] for item in body["results"]] == [active.id]
    assert body["count"] == 1


def test_products_list_filters_by_category_id_and_slug(api_client):
    books = CategoryFactory(slug="books")
    novel = ProductFactory(category=books)
    ProductFactory()
    by_id = api_client.get(PRODUCTS, {"category": str(books.id)}).json()
    by_slug = api_client.get(PRODUCTS, {"category": "books"}).json()
    assert [item["id"] for item in by_id["results"]] == [novel.id]
    assert [item["id"] for item in by_slug["results"]] == [novel.id]


@pytest.mark.parametrize("ref", ["no-such-slug", "987654321", "99999999999999999999999999999", "²"])
def test_products_list_unknown_category_is_validation_error(api_client, ref):
    ProductFactory()
    assert_validation_error(api_client.get(PRODUCTS, {"category": ref}), "category")


@pytest.mark.parametrize(
    ("field", "value", "query"),
    [
        ("name", "Blue Teapot", "teapot"),
        ("description", "Hand-thrown stoneware", "Stoneware"),
        ("sku", "TEA-42", "tea-4"),
    ],
)
def test_products_list_searches_q_in_name_description_and_sku(api_client, field, value, query):
    match = ProductFactory(**{field: value})
    ProductFactory(name="Unrelated", description="Nothing.", sku="OTHER-1")
    body = api_client.get(PRODUCTS, {"q": query}).json()
    assert [item["id"] for item in body["results"]] == [match.id]


def test_products_list_orders_by_name_then_id(api_client):
    banana = ProductFactory(name="Banana")
    apple_1 = ProductFactory(name="Apple")
    apple_2 = ProductFactory(name="Apple")
    cherry = ProductFactory(name="Cherry")
    body = api_client.get(PRODUCTS).json()
    assert [item["id"] for item in body["results"]] == [apple_1.id, apple_2.id, banana.id, cherry.id]


def test_products_list_default_page_size_is_20_with_next_link(api_client):
    ProductFactory.create_batch(25)
    body = api_client.get(PRODUCTS).json()
    assert body["count"] == 25
    assert len(body["results"]) == 20
    assert body["next"] is not None and "page=2" in body["next"]
    second = api_client.get(PRODUCTS, {"page": 2}).json()
    assert len(second["results"]) == 5
    assert second["previous"] is not None
    assert {item["id"] for item in body["results"]}.isdisjoint({item["id"] for item in second["results"]})


def test_products_list_page_size_up_to_100_is_honoured(api_client):
    ProductFactory.create_batch(3)
    assert len(api_client.get(PRODUCTS, {"page_size": 2}).json()["results"]) == 2
    assert len(api_client.get(PRODUCTS, {"page_size": 100}).json()["results"]) == 3


@pytest.mark.parametrize("page_size", ["101", "0", "-1", "x", "1.5", "99999999999999999999999"])
def test_products_list_bad_page_size_is_validation_error(api_client, page_size):
    ProductFactory()
    assert_validation_error(api_client.get(PRODUCTS, {"page_size": page_size}), "page_size")


@pytest.mark.parametrize("page", ["0", "-1", "x", "last"])
def test_products_list_bad_page_is_validation_error(api_client, page):
    ProductFactory()
    assert_validation_error(api_client.get(PRODUCTS, {"page": page}), "page")


@pytest.mark.parametrize("page", ["2", "99999999999999999999999"])
def test_products_list_page_out_of_range_is_not_found(api_client, page):
    ProductFactory()
    assert_error(api_client.get(PRODUCTS, {"page": page}), 404, "not_found")


def test_products_list_empty_category_means_no_filter(api_client):
    ProductFactory.create_batch(2)
    assert api_client.get(PRODUCTS, {"category": ""}).json()["count"] == 2


def test_products_list_nul_character_in_q_is_validation_error(api_client):
    assert_validation_error(api_client.get(PRODUCTS, {"q": "tea\x00pot"}), "q")


def test_products_list_is_public_without_token(api_client):
    ProductFactory()
    assert api_client.get(PRODUCTS).status_code == 200


def test_product_detail_returns_product(api_client):
    product = ProductFactory(price=Decimal("3.10"))
    response = api_client.get(f"{PRODUCTS}{product.id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == product.id
    assert body["price"] == "3.10"
    assert body["category"]["id"] == product.category_id


def test_product_detail_inactive_is_not_found(api_client):
    product = ProductFactory(is_active=False)
    assert_error(api_client.get(f"{PRODUCTS}{product.id}/"), 404, "not_found")


@pytest.mark.parametrize("product_id", ["987654321", "99999999999999999999999999999"])
def test_product_detail_unknown_id_is_not_found(api_client, product_id):
    assert_error(api_client.get(f"{PRODUCTS}{product_id}/"), 404, "not_found")


def test_categories_list_returns_page_of_categories(api_client):
    garden = CategoryFactory(name="Garden", slug="garden")
    books = CategoryFactory(name="Books", slug="books")
    response = api_client.get("/api/categories/")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PAGE_KEYS
    assert body["results"] == [
        {"id": books.id, "slug": "books", "name": "Books"},
        {"id": garden.id, "slug": "garden", "name": "Garden"},
    ]


def test_categories_list_bad_page_size_is_validation_error(api_client):
    assert_validation_error(api_client.get("/api/categories/", {"page_size": "101"}), "page_size")


# query parameters: what the schema states is what is enforced


@pytest.mark.parametrize("q", ["a" * 201, "a" * 5000, " " + "a" * 200])
def test_products_list_q_longer_than_200_characters_is_validation_error(api_client, q):
    ProductFactory()
    error = assert_validation_error(api_client.get(PRODUCTS, {"q": q}), "q")
    assert set(error["detail"]) == {"q"}


def test_products_list_q_of_200_characters_is_accepted(api_client):
    ProductFactory()
    assert api_client.get(PRODUCTS, {"q": "a" * 200}).status_code == 200


def test_products_list_q_is_searched_trimmed(api_client):
    teapot = ProductFactory(name="Blue Teapot")
    ProductFactory(name="Unrelated")
    body = api_client.get(PRODUCTS, {"q": "  teapot  "}).json()
    assert [item["id"] for item in body["results"]] == [teapot.id]


@pytest.mark.parametrize("q", ["nul\x00byte", "\x00"])
def test_products_list_q_with_nul_is_validation_error(api_client, q):
    assert_validation_error(api_client.get(PRODUCTS, {"q": q}), "q")


@pytest.mark.parametrize("ref", ["c" * 121, " books", "books ", "bo oks", "books/1", "bücher"])
def test_products_list_category_outside_its_documented_shape_is_validation_error(api_client, ref):
    CategoryFactory(slug="books")
    assert_validation_error(api_client.get(PRODUCTS, {"category": ref}), "category")


@pytest.mark.parametrize("path", [PRODUCTS, "/api/categories/"])
@pytest.mark.parametrize("params", [{"page": ""}, {"page_size": ""}, {"page": "1.5"}, {"page_size": "101"}])
def test_lists_refuse_an_empty_or_out_of_range_page_parameter(api_client, path, params):
    ProductFactory()
    assert_validation_error(api_client.get(path, params), *params)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (PRODUCTS, {"categroy": "books"}),
        (PRODUCTS, {"pagesize": "5"}),
        (PRODUCTS, {"q": "atlas", "format": "json"}),
        ("/api/categories/", {"search": "x"}),
    ],
)
def test_lists_refuse_an_unknown_query_parameter_naming_it(api_client, path, params):
    ProductFactory()
    unknown = next(name for name in params if name not in {"q"})
    error = assert_validation_error(api_client.get(path, params), unknown)
    assert error["detail"][unknown] == ["Unknown query parameter."]


def test_product_detail_refuses_an_unknown_query_parameter(api_client, product):
    error = assert_validation_error(api_client.get(f"{PRODUCTS}{product.id}/", {"expand": "category"}), "expand")
    assert error["detail"]["expand"] == ["Unknown query parameter."]


def test_lists_accept_every_documented_parameter_together(api_client):
    books = CategoryFactory(slug="books")
    atlas = ProductFactory(category=books, name="Atlas")
    params = {"category": "books", "q": "atlas", "page": "1", "page_size": "5"}
    body = api_client.get(PRODUCTS, params).json()
    assert [item["id"] for item in body["results"]] == [atlas.id]
    assert api_client.get("/api/categories/", {"page": "1", "page_size": "100"}).status_code == 200
