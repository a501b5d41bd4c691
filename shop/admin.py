"""Django admin for the shop: search, filters, order lines inline. Staff only."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from shop.cart.models import Cart, CartItem
from shop.catalog.models import Category, Product
from shop.orders.exceptions import OrderNotCancellableError
from shop.orders.models import Order, OrderItem
from shop.orders.services import order_cancel
from shop.payments.collection import PaymentRetryReport, payments_retry
from shop.payments.models import Payment


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "name", "category", "price", "currency", "stock", "is_active"]
    list_filter = ["is_active", "category", "currency"]
    list_editable = ["is_active"]
    search_fields = ["sku", "name", "description"]
    prepopulated_fields = {"slug": ["name"]}
    list_select_related = ["category"]


class CartItemInline(admin.TabularInline):
    model = CartItem
    extra = 0
    raw_id_fields = ["product"]


@admin.register(Cart)
class CartAdmin(admin.ModelAdmin):
    list_display = ["user", "updated_at"]
    search_fields = ["user__username", "user__email"]
    inlines = [CartItemInline]


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    can_delete = False
    readonly_fields = ["product", "sku", "name", "unit_price", "quantity", "line_total"]

    def has_add_permission(self, request, obj=None) -> bool:  # lines are frozen at checkout
        return False


class PaymentInline(admin.TabularInline):
    model = Payment
    extra = 0
    can_delete = False
    readonly_fields = [
        "amount",
        "currency",
        "status",
        "idempotency_key",
        "gateway_reference",
        "attempts",
        "last_error",
        "created_at",
    ]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.action(description="Cancel selected orders pending payment (stock is returned)")
def cancel_orders(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Order]) -> None:
    cancelled, refused = 0, []
    for order in queryset:
        try:
            order_cancel(user=order.user, order_id=order.pk)
            cancelled += 1
        except OrderNotCancellableError:
            refused.append(f"#{order.pk} ({order.status})")
    if cancelled:
        modeladmin.message_user(request, f"Cancelled {cancelled} order(s); their stock is back.", messages.SUCCESS)
    if refused:
        modeladmin.message_user(
            request, f"Not cancelled (not pending payment): {', '.join(refused)}.", messages.WARNING
        )


def _report_retry(modeladmin: admin.ModelAdmin, request: HttpRequest, report: PaymentRetryReport) -> None:
    parts = [
        f"{len(report.paid)} paid",
        f"{len(report.payment_failed)} declined (payment_failed, stock returned)",
        f"{len(report.still_pending)} still pending (gateway unavailable or not configured)",
        f"{len(report.cancelled)} cancelled as unpaid too long (stock returned)",
    ]
    level = messages.WARNING if report.still_pending else messages.SUCCESS
    modeladmin.message_user(request, "Payments retried: " + ", ".join(parts) + ".", level)
    if report.refund_needed:
        orders = ", ".join(f"#{order_id}" for order_id in report.refund_needed)
        modeladmin.message_user(request, f"Charged after they were cancelled, refund: {orders}.", messages.ERROR)


@admin.action(description="Collect payment now (same key: never charged twice); cancel if unpaid too long")
def retry_order_payments(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Order]) -> None:
    report = payments_retry(order_ids=queryset.values_list("id", flat=True))
    _report_retry(modeladmin, request, report)


@admin.action(description="Collect these payments now (same key: never charged twice); cancel if unpaid too long")
def retry_payments(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
    report = payments_retry(order_ids=queryset.values_list("order_id", flat=True))
    _report_retry(modeladmin, request, report)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "status", "total", "currency", "created_at"]
    actions = [cancel_orders, retry_order_payments]
    list_filter = ["status", "created_at"]
    search_fields = ["id", "user__username", "user__email", "items__sku"]
    # Status changes go through services (cancel returns stock), never through a free edit.
    readonly_fields = ["user", "status", "total", "currency", "created_at", "updated_at"]
    date_hierarchy = "created_at"
    inlines = [OrderItemInline, PaymentInline]

    def has_add_permission(self, request: HttpRequest) -> bool:  # orders come from checkout only
        return False


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ["idempotency_key", "order", "status", "amount", "currency", "attempts", "updated_at"]
    list_filter = ["status"]
    actions = [retry_payments]
    search_fields = ["idempotency_key", "gateway_reference", "order__id"]
    # Outcomes come from the gateway through the services, never from a free edit.
    readonly_fields = [
        "order",
        "amount",
        "currency",
        "status",
        "idempotency_key",
        "gateway_reference",
        "attempts",
        "last_error",
        "reconciled_at",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:  # payments come with their order only
        return False
