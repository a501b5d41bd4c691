"""Collect the payments of orders pending payment; cancel (restocking) those unpaid past PAYMENT_UNPAID_CANCEL_AFTER.

Safe to run any time, as often as wanted (e.g. from cron every few minutes): each payment keeps one
idempotency key, so the gateway never charges it twice.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from resilience.config.reader import format_duration
from resilience.controls.services import controls_load
from shop.orders.models import Order, OrderStatus
from shop.payments.collection import payments_retry


class Command(BaseCommand):
    help = (
        "Collect pending payments now that the gateway is back (never charging twice) and cancel, returning "
        "their stock, orders left unpaid longer than PAYMENT_UNPAID_CANCEL_AFTER."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--order", type=int, action="append", dest="orders", help="only this order (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        controls_load()  # an operator's forced breaker applies here too
        if not settings.SHOP_PAYMENT_GATEWAY_URL:
            self.stdout.write(
                "No PAYMENT_GATEWAY_URL: nothing can be charged; only orders unpaid too long are cancelled."
            )
        pending = Order.objects.filter(status=OrderStatus.PENDING_PAYMENT)
        if options["orders"]:
            pending = pending.filter(id__in=options["orders"])
        total = pending.count()
        cancel_after = settings.SHOP_PAYMENT_UNPAID_CANCEL_AFTER
        self.stdout.write(
            f"{total} order(s) pending payment; unpaid after {format_duration(cancel_after)} = cancelled."
        )
        with tqdm(
            total=total, desc="retrying payments", unit="order", file=sys.stderr, disable=options["verbosity"] == 0
        ) as bar:

            def progress(order_id: int, status: str) -> None:
                bar.update(1)
                if options["verbosity"] >= 2:
                    bar.write(f"order {order_id}: {status}", file=sys.stderr)

            report = payments_retry(order_ids=options["orders"], progress=progress)
        summary = (
            f"{len(report.paid)} paid, {len(report.payment_failed)} declined (payment_failed, stock returned), "
            f"{len(report.still_pending)} still pending, {len(report.cancelled)} cancelled as unpaid too long."
        )
        style = self.style.WARNING if report.still_pending else self.style.SUCCESS
        self.stdout.write(style(summary))
        if report.refund_needed:
            orders = ", ".join(f"#{order_id}" for order_id in report.refund_needed)
            self.stdout.write(self.style.ERROR(f"Charged by the gateway after they were cancelled, refund: {orders}."))
        if report.still_pending and settings.SHOP_PAYMENT_GATEWAY_URL:
            self.stdout.write("The gateway is still unavailable for some: run again later (nothing is charged twice).")
