from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from resilience.guard_rails import guard_rail_register
        from shop.payments.guard_rails import check_payments

        guard_rail_register("Payments: gateway down -> orders kept pending_payment", check_payments)
