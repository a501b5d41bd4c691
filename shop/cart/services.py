"""Cart writes. Each locks the user's cart row so concurrent edits of one cart apply one by one."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core.exceptions import FieldValidationError, NotFoundError
from shop.cart.models import MAX_LINE_QUANTITY, Cart, CartItem
from shop.catalog.exceptions import OutOfStockError, Shortage
from shop.catalog.models import Product


def _cart_locked(user: AbstractBaseUser) -> Cart:
    Cart.objects.get_or_create(user=user)
    return Cart.objects.select_for_update().get(user=user)


def _check_quantity(product: Product, quantity: int) -> None:
    if quantity > MAX_LINE_QUANTITY:
        raise FieldValidationError({"quantity": [f"At most {MAX_LINE_QUANTITY} of one product per cart."]})
    if quantity > product.stock:
        raise OutOfStockError([Shortage(product.id, product.sku, requested=quantity, available=product.stock)])


@transaction.atomic
def cart_add_item(*, user: AbstractBaseUser, product_id: int, quantity: int) -> CartItem:
    """Add a product; the same product already in the cart has its quantity increased."""
    cart = _cart_locked(user)
    product = Product.objects.filter(id=product_id, is_active=True).first()
    if product is None:
        raise FieldValidationError({"product_id": [f"No product with id {product_id} is for sale."]})
    item = cart.items.filter(product=product).first()
    new_quantity = quantity + (item.quantity if item else 0)
    _check_quantity(product, new_quantity)
    if item is None:
        item = CartItem.objects.create(cart=cart, product=product, quantity=new_quantity)
    else:
        item.quantity = new_quantity
        item.save(update_fields=["quantity"])
    cart.save(update_fields=["updated_at"])
    return item


def _item_locked(user: AbstractBaseUser, item_id: int) -> CartItem:
    _cart_locked(user)
    item = CartItem.objects.filter(id=item_id, cart__user=user).select_related("product").first()
    if item is None:
        raise NotFoundError("No item with this id in your cart.")
    return item


@transaction.atomic
def cart_update_item(*, user: AbstractBaseUser, item_id: int, quantity: int) -> CartItem:
    item = _item_locked(user, item_id)
    _check_quantity(item.product, quantity)
    item.quantity = quantity
    item.save(update_fields=["quantity"])
    return item


@transaction.atomic
def cart_remove_item(*, user: AbstractBaseUser, item_id: int) -> None:
    _item_locked(user, item_id).delete()


def cart_clear(*, cart: Cart) -> None:
    cart.items.all().delete()
