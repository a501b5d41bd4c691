"""The shop's models, each defined in its area's package (Django finds them through this module)."""

from shop.cart.models import Cart, CartItem
from shop.catalog.models import Category, Product
from shop.orders.models import Order, OrderItem
from shop.payments.models import Payment

__all__ = ["Cart", "CartItem", "Category", "Order", "OrderItem", "Payment", "Product"]
