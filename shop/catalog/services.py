"""Catalog writes."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils.text import slugify

from shop.catalog.models import Category, Product


@transaction.atomic
def category_ensure(*, name: str, description: str = "") -> Category:
    category, _ = Category.objects.get_or_create(
        slug=slugify(name), defaults={"name": name, "description": description}
    )
    return category


@transaction.atomic
def product_ensure(
    *,
    sku: str,
    name: str,
    category: Category,
    price: Decimal,
    stock: int,
    description: str = "",
    is_active: bool = True,
) -> tuple[Product, bool]:
    """Create the product unless its SKU exists (an existing one, and its stock, is left as it is)."""
    return Product.objects.get_or_create(
        sku=sku,
        defaults={
            "name": name,
            "slug": slugify(f"{name}-{sku}"),
            "category": category,
            "price": price,
            "stock": stock,
            "description": description,
            "is_active": is_active,
        },
    )
