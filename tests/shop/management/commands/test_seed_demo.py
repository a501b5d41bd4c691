"""``seed_demo``: the demo catalog (6 categories, 60 products), safe to run again: rows that exist are left as
they are, missing ones are added."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from shop.catalog.demo import CATEGORIES, demo_products
from shop.catalog.models import Category, Product

pytestmark = pytest.mark.django_db


def seed(verbosity: int = 0) -> str:
    out = StringIO()
    call_command("seed_demo", verbosity=verbosity, stdout=out)
    return out.getvalue()


def catalog() -> dict[str, tuple]:
    return {
        p.sku: (p.name, p.slug, p.category.name, p.price, p.stock, p.description, p.is_active)
        for p in Product.objects.select_related("category")
    }


def test_the_first_run_loads_the_whole_demo_catalog(api_client) -> None:
    output = seed()
    assert "6 categories, 60 products (60 new)" in output
    assert Category.objects.count() == len(CATEGORIES) == 6
    assert Product.objects.count() == 60
    expected = {demo.sku: (demo.name, demo.category, demo.price, demo.stock) for demo in demo_products()}
    assert {sku: (name, cat, price, stock) for sku, (name, _, cat, price, stock, _, _) in catalog().items()} == expected
    # For sale through the API at once.
    listed = api_client.get("/api/products/", {"page_size": 100})
    assert listed.status_code == 200 and listed.json()["count"] == 60


def test_running_again_leaves_every_row_alone(api_client) -> None:
    seed()
    sold = Product.objects.get(sku="BOO-001")
    sold.price, sold.stock, sold.name = Decimal("1.00"), 3, "Atlas (signed copy)"  # edited in the admin, sold
    sold.save()
    Category.objects.filter(name="Books").update(description="Edited by hand")
    before = catalog()

    output = seed()

    assert "(0 new)" in output
    assert catalog() == before
    assert Product.objects.get(sku="BOO-001").stock == 3
    assert Category.objects.get(name="Books").description == "Edited by hand"
    assert (Category.objects.count(), Product.objects.count()) == (6, 60)


def test_a_missing_product_is_added_back_and_nothing_else_changes() -> None:
    seed()
    Product.objects.filter(sku="TOY-010").delete()
    Product.objects.filter(sku="HOM-001").update(stock=0)
    output = seed()
    assert "(1 new)" in output
    assert Product.objects.count() == 60
    assert Product.objects.get(sku="TOY-010").stock > 0
    assert Product.objects.get(sku="HOM-001").stock == 0


def test_the_progress_bar_is_silent_at_verbosity_0(capsys) -> None:
    seed(verbosity=0)
    assert "seeding products" not in capsys.readouterr().err
    Product.objects.all().delete()
    seed(verbosity=1)
    assert "seeding products" in capsys.readouterr().err
