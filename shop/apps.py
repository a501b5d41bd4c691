from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from shop.payments import checks as payment_checks
        from shop.payments import guard_rails as payment_guard_rails

        payment_checks.register()
        payment_guard_rails.register()
