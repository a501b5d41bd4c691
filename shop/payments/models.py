from django.db import models

from shop.orders.models import Order


class PaymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    DECLINED = "declined", "Declined"
    CANCELLED = "cancelled", "Cancelled"


class Payment(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="payments")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.PENDING)
    idempotency_key = models.CharField(
        max_length=64, unique=True, help_text="Sent to the gateway: never charged twice."
    )
    gateway_reference = models.CharField(max_length=128, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    # A payment cancelled with its order after a charge attempt whose outcome was unknown is checked at the gateway
    # once by retry_payments (a late charge there needs a refund); set when that check is done.
    reconciled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Payment {self.idempotency_key} ({self.status})"
