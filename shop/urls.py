"""The shop's REST API, mounted under /api/."""

from django.urls import path

from shop.accounts.apis import LogoutApi, LogoutEverywhereApi, MeApi, RegisterApi, TokenObtainApi, TokenRefreshApi
from shop.cart.apis import CartApi, CartItemAddApi, CartItemApi
from shop.catalog.apis import CategoryListApi, ProductDetailApi, ProductListApi
from shop.orders.apis import OrderCancelApi, OrderDetailApi, OrderListCreateApi

app_name = "shop"

urlpatterns = [
    path("auth/register/", RegisterApi.as_view(), name="register"),
    path("auth/token/", TokenObtainApi.as_view(), name="token"),
    path("auth/token/refresh/", TokenRefreshApi.as_view(), name="token-refresh"),
    path("auth/logout/", LogoutApi.as_view(), name="logout"),
    path("auth/logout/all/", LogoutEverywhereApi.as_view(), name="logout-everywhere"),
    path("auth/me/", MeApi.as_view(), name="me"),
    path("categories/", CategoryListApi.as_view(), name="categories"),
    path("products/", ProductListApi.as_view(), name="products"),
    path("products/<int:product_id>/", ProductDetailApi.as_view(), name="product"),
    path("cart/", CartApi.as_view(), name="cart"),
    path("cart/items/", CartItemAddApi.as_view(), name="cart-items"),
    path("cart/items/<int:item_id>/", CartItemApi.as_view(), name="cart-item"),
    path("orders/", OrderListCreateApi.as_view(), name="orders"),
    path("orders/<int:order_id>/", OrderDetailApi.as_view(), name="order"),
    path("orders/<int:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
]
