from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    verbose_name = "Shop"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from resilience.db.monitor import monitor_task_register
        from shop.payments import checks as payment_checks
        from shop.payments import guard_rails as payment_guard_rails
        from shop.payments.metrics import payments_pending_refresh

        payment_checks.register()
        payment_guard_rails.register()
        monitor_task_register(payments_pending_refresh)  # bulwark_payments_pending, every 5 s (shop/payments)
