"""Catalog reads. Customers only ever see active products."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from core.exceptions import FieldValidationError, NotFoundError
from shop.catalog.models import Category, Product


def category_list() -> QuerySet[Category]:
    return Category.objects.order_by("name", "id")


def category_get_by_ref(*, ref: str) -> Category:
    """A category by id (digits) or slug; a validation error naming ``category`` when there is none."""
    # isdigit() alone accepts "²" and other Unicode digits that int() refuses: only ASCII digits are an id.
    lookup = {"id": int(ref)} if ref.isascii() and ref.isdigit() and len(ref) < 19 else {"slug": ref}
    category = Category.objects.filter(**lookup).first()
    if category is None:
        raise FieldValidationError({"category": [f"No category with id or slug {ref!r}."]})
    return category


def product_list(*, category: Category | None = None, query: str | None = None) -> QuerySet[Product]:
    products = Product.objects.filter(is_active=True).select_related("category")
    if category is not None:
        products = products.filter(category=category)
    if query:
        products = products.filter(Q(name__icontains=query) | Q(description__icontains=query) | Q(sku__icontains=query))
    return products.order_by("name", "id")


def product_get(*, product_id: int) -> Product:
    product = Product.objects.filter(id=product_id, is_active=True).select_related("category").first()
    if product is None:
        raise NotFoundError("No product with this id.")
    return product
