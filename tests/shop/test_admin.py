"""Every registered model's admin pages load for staff (changelist, search, change, add), and every changelist
filter the admin offers applies."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.urls import reverse

from resilience.auth.services import key_rotate
from resilience.auth.tokens import refresh_blacklist, tokens_for_user
from resilience.controls.services import control_set
from resilience.controls.state import PRIMARY_ONLY_READS
from resilience.events import event_record, events_flush
from resilience.idempotency.services import idempotent_call
from resilience.staff.otp import otp_backup_codes, otp_enroll
from shop.cart.services import cart_add_item
from shop.orders.services import order_place
from shop.payments.services import payment_create
from tests.factories import ProductFactory, UserFactory
from tests.second_factor import verified_login

REGISTERED = list(admin.site._registry)
# Adding by hand is refused on purpose: audit trails are written by the services, outstanding tokens by logins.
NO_ADD = {
    "resilience.KeyAuditEntry",
    "resilience.ControlAuditEntry",
    "token_blacklist.OutstandingToken",
    "shop.Order",
    "shop.Payment",
    "resilience.ResilienceEvent",
    "resilience.StaffLogin",
    "otp_totp.TOTPDevice",  # enrolled with `manage.py staff_otp enroll` (the secret is shown there, once)
    "otp_static.StaticDevice",
}
FILTERED = [model for model, model_admin in admin.site._registry.items() if model_admin.list_filter]


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def staff_client(client, db):
    boss = UserFactory(username="boss", is_staff=True, is_superuser=True)
    verified_login(client, boss, otp_enroll(user=boss))  # the add pages of controls and keys need a second factor
    return client


@pytest.fixture
def order(db):
    customer = UserFactory()
    product = ProductFactory()
    cart_add_item(user=customer, product_id=product.id, quantity=1)
    return order_place(user=customer)


@pytest.fixture
def every_model_has_a_row(order):
    """A row of each registered model, made the way the application makes it, so no change page is skipped."""
    payment_create(order=order)
    cart_add_item(user=order.user, product_id=ProductFactory().id, quantity=1)  # a cart left behind
    ProductFactory(is_active=False)
    refresh_blacklist(tokens_for_user(order.user)["refresh"])  # outstanding and blacklisted
    idempotent_call(user=order.user, scope="tests.admin", key="k", request_body={}, handler=lambda: (201, {}))
    key_rotate(reason="admin test")  # a database key and its audit entry
    control_set(key=PRIMARY_ONLY_READS, enabled=True, actor=None, reason="admin test")  # a switch and its audit
    event_record("control_changed", subject=PRIMARY_ONLY_READS, message="admin test")  # a resilience event
    event_record("staff_login", subject="boss", message="admin test", detail={"ip": "10.0.0.1", "outcome": "success"})
    events_flush()
    Group.objects.create(name="operators")
    otp_enroll(user=order.user)  # a second factor: a TOTP device and backup codes
    otp_backup_codes(user=order.user, count=1)
    empty = [model._meta.label for model in REGISTERED if not model._default_manager.exists()]
    assert not empty, empty


@pytest.mark.django_db
@pytest.mark.parametrize("model", REGISTERED, ids=lambda model: model._meta.label)
def test_admin_changelist_search_change_and_add_pages_load(staff_client, every_model_has_a_row, model):
    changelist = staff_client.get(_url(model, "changelist"), {"q": "x"})
    assert changelist.status_code == 200
    assert changelist.context["cl"].query == "x"  # the search was run, not dropped
    instance = model._default_manager.first()
    assert staff_client.get(_url(model, "change", instance.pk)).status_code == 200
    add = staff_client.get(_url(model, "add"))
    assert add.status_code == (403 if model._meta.label in NO_ADD else 200), add.status_code


def test_the_no_add_list_names_registered_models() -> None:
    assert NO_ADD <= {model._meta.label for model in REGISTERED}


@pytest.mark.django_db
@pytest.mark.parametrize("model", FILTERED, ids=lambda model: model._meta.label)
def test_every_changelist_filter_choice_applies(staff_client, every_model_has_a_row, model):
    """Each choice of each filter in the sidebar: the page loads (a bad lookup would redirect to ``?e=1``) with
    that choice selected, and the date hierarchy drills down too."""
    url = _url(model, "changelist")
    changelist = staff_client.get(url)
    assert changelist.status_code == 200
    cl = changelist.context["cl"]
    specs = list(cl.filter_specs)
    assert len(specs) == len(admin.site._registry[model].list_filter)  # every filter it declares is shown
    requested = 0
    for index, spec in enumerate(specs):
        choices = list(spec.choices(cl))
        assert len(choices) >= 2, (spec.title, choices)  # "All" and at least one real choice
        for choice in choices:
            page = staff_client.get(url + choice["query_string"])
            assert page.status_code == 200, (spec.title, choice["query_string"], page.status_code)
            shown = page.context["cl"]
            selected = [str(c["display"]) for c in list(shown.filter_specs)[index].choices(shown) if c["selected"]]
            assert selected == [str(choice["display"])], (spec.title, choice["query_string"], selected)
            requested += 1
    assert requested >= 2 * len(specs)
    hierarchy = admin.site._registry[model].date_hierarchy
    if hierarchy:
        newest = getattr(model._default_manager.latest(hierarchy), hierarchy)
        drill = {
            f"{hierarchy}__year": newest.year,
            f"{hierarchy}__month": newest.month,
            f"{hierarchy}__day": newest.day,
        }
        page = staff_client.get(url, drill)
        assert page.status_code == 200 and page.context["cl"].result_count >= 1


@pytest.mark.django_db
def test_filters_narrow_the_list(staff_client, order):
    hidden = ProductFactory(is_active=False)
    shown = order.items.first().product
    inactive = staff_client.get(_url(type(hidden), "changelist"), {"is_active__exact": "0"}).context["cl"]
    assert list(inactive.result_list) == [hidden]
    pending = staff_client.get(_url(type(order), "changelist"), {"status__exact": order.status}).context["cl"]
    assert [o.pk for o in pending.result_list] == [order.pk]
    assert staff_client.get(_url(type(order), "changelist"), {"status__exact": "paid"}).context["cl"].result_count == 0
    by_category = staff_client.get(_url(type(shown), "changelist"), {"category__id__exact": shown.category_id})
    assert list(by_category.context["cl"].result_list) == [shown]


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
