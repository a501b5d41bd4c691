from __future__ import annotations

import pytest

from core.exceptions import FieldValidationError, NotFoundError
from shop.catalog.selectors import category_get_by_ref, category_list, product_get, product_list
from tests.factories import CategoryFactory, ProductFactory

pytestmark = pytest.mark.django_db


def test_product_list_hides_inactive_products():
    active = ProductFactory()
    ProductFactory(is_active=False)
    assert list(product_list()) == [active]


def test_product_list_filters_by_category():
    books, toys = CategoryFactory(), CategoryFactory()
    novel = ProductFactory(category=books)
    ProductFactory(category=toys)
    assert list(product_list(category=books)) == [novel]


@pytest.mark.parametrize(
    ("field", "value", "query"),
    [
        ("name", "Blue Teapot", "teapot"),
        ("description", "Hand-thrown stoneware", "STONEWARE"),
        ("sku", "TEA-0042", "tea-004"),
    ],
)
def test_product_list_searches_name_description_and_sku_case_insensitively(field, value, query):
    match = ProductFactory(**{field: value})
    ProductFactory(name="Unrelated", description="Nothing to see.", sku="OTHER-1")
    assert list(product_list(query=query)) == [match]


def test_product_list_orders_by_name_then_id():
    second_b = ProductFactory(name="Banana")
    first_a = ProductFactory(name="Apple")
    second_a = ProductFactory(name="Apple")
    assert list(product_list()) == [first_a, second_a, second_b]


def test_category_list_orders_by_name():
    zeta = CategoryFactory(name="Zeta")
    alpha = CategoryFactory(name="Alpha")
    assert list(category_list()) == [alpha, zeta]


def test_category_get_by_ref_finds_by_id_and_slug():
    category = CategoryFactory(slug="garden")
    assert category_get_by_ref(ref=str(category.id)) == category
    assert category_get_by_ref(ref="garden") == category


@pytest.mark.parametrize("ref", ["no-such-category", "999999999", "99999999999999999999999999", "²", "١٢"])
def test_category_get_by_ref_unknown_raises_validation_error_on_category(ref):
    CategoryFactory()
    with pytest.raises(FieldValidationError) as excinfo:
        category_get_by_ref(ref=ref)
    assert "category" in excinfo.value.detail


def test_product_get_returns_active_product():
    product = ProductFactory()
    assert product_get(product_id=product.id) == product


def test_product_get_inactive_raises_not_found():
    product = ProductFactory(is_active=False)
    with pytest.raises(NotFoundError):
        product_get(product_id=product.id)
