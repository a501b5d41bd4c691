"""Every registered model's admin pages load for staff, with search and filters working."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from shop.cart.services import cart_add_item
from shop.orders.services import order_place
from tests.factories import ProductFactory, UserFactory


@pytest.fixture
def staff_client(client, db):
    client.force_login(UserFactory(username="boss", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def order(db):
    customer = UserFactory()
    product = ProductFactory()
    cart_add_item(user=customer, product_id=product.id, quantity=1)
    return order_place(user=customer)


@pytest.mark.django_db
@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda model: model._meta.label)
def test_admin_changelist_search_and_add_pages_load(staff_client, order, model):
    info = (model._meta.app_label, model._meta.model_name)
    changelist = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)), {"q": "x"})
    assert changelist.status_code == 200
    instance = model._default_manager.first()
    if instance is not None:
        change = staff_client.get(reverse("admin:{}_{}_change".format(*info), args=[instance.pk]))
        assert change.status_code == 200


@pytest.mark.django_db
def test_order_admin_shows_items_inline(staff_client, order):
    page = staff_client.get(reverse("admin:shop_order_change", args=[order.pk]))
    assert order.items.first().sku in page.content.decode()


@pytest.mark.django_db
def test_admin_refuses_customers(client):
    client.force_login(UserFactory())
    response = client.get(reverse("admin:shop_order_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_admin_cancel_action_returns_stock_through_the_service(staff_client, order):
    product = order.items.first().product
    stock_before = type(product).objects.get(pk=product.pk).stock
    response = staff_client.post(
        reverse("admin:shop_order_changelist"),
        {"action": "cancel_orders", "_selected_action": [order.pk]},
        follow=True,
    )
    assert response.status_code == 200
    order.refresh_from_db()
    assert order.status == "cancelled"
    assert type(product).objects.get(pk=product.pk).stock == stock_before + order.items.first().quantity


@pytest.mark.django_db
def test_admin_cannot_edit_order_status_directly(staff_client, order):
    page = staff_client.get(reverse("admin:shop_order_change", args=[order.pk]))
    assert 'name="status"' not in page.content.decode()
