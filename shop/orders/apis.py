"""Orders API. Checkout places the order in one transaction, then -- after the commit, outside any
transaction -- collects the payment from the gateway, and answers with the order as it stands then: ``paid``,
``payment_failed`` (declined; stock returned) or ``pending_payment`` (gateway down, hanging or not configured:
collected later, never charged twice); ``payment.status`` and ``payment.message`` say which. With an
Idempotency-Key the stored replay is that final response (see resilience/idempotency/services.py).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.pagination import StrictPageNumberPagination
from core.api.schema import error_responses
from core.api.serializers import StrictInputSerializer
from core.exceptions import FieldValidationError
from resilience.idempotency.services import idempotent_call
from shop.orders.models import Order, OrderItem
from shop.orders.selectors import order_get, order_list
from shop.orders.services import order_cancel, order_payment_collect, order_place
from shop.payments.models import PaymentStatus

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
_SANE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, 1..255


class OrderItemOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderItem
        fields = ["id", "product_id", "sku", "name", "unit_price", "quantity", "line_total"]


PAYMENT_MESSAGES = {
    PaymentStatus.PENDING: (
        "Payment not collected yet: the payment service is unavailable or not set up. The order is kept and "
        "will be charged automatically later (never twice); check back on this order."
    ),
    PaymentStatus.SUCCEEDED: "Paid.",
    PaymentStatus.DECLINED: "The payment was declined; the order will not be fulfilled.",
    PaymentStatus.CANCELLED: "No payment: the order was cancelled.",
}


class OrderPaymentOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=PaymentStatus.choices)
    message = serializers.CharField()


class OrderOutputSerializer(serializers.ModelSerializer):
    items = OrderItemOutputSerializer(many=True)
    payment = serializers.SerializerMethodField()

    class Meta:
        model = Order
        fields = ["id", "status", "items", "total", "currency", "created_at", "updated_at", "payment"]

    @extend_schema_field(OrderPaymentOutputSerializer(allow_null=True))
    def get_payment(self, order: Order) -> dict[str, str] | None:
        payments = list(order.payments.all())  # newest first; prefetched by the selectors
        if not payments:
            return None
        payment = payments[0]
        message = PAYMENT_MESSAGES[PaymentStatus(payment.status)]
        if payment.status == PaymentStatus.DECLINED and payment.last_error:
            message = f"The payment was declined ({payment.last_error}); the order will not be fulfilled."
        return {"status": payment.status, "message": message}


class OrderCheckoutInputSerializer(StrictInputSerializer):
    """Checkout takes no fields today: the order is the cart."""


class OrderListCreateApi(APIView):
    # Read by drf-spectacular too: the schema then documents the page, not a bare array.
    pagination_class = StrictPageNumberPagination
    ratelimit_scopes = {"POST": ("checkout",)}

    @extend_schema(
        responses={200: OrderOutputSerializer(many=True), **error_responses(400, 401, 404)},
        parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
        tags=["orders"],
        summary="Your orders, newest first",
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(order_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(OrderOutputSerializer(page, many=True).data)

    @extend_schema(
        request=OrderCheckoutInputSerializer,
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                str,
                OpenApiParameter.HEADER,
                description=(
                    "Optional, recommended. A retry with the same key (kept 24 h, per user) returns the first "
                    "response with `Idempotent-Replayed: true`; the same key with another body is a 422."
                ),
            )
        ],
        responses={
            201: OpenApiResponse(
                OrderOutputSerializer,
                description="The order: paid, payment_failed (declined), or pending_payment (collected later)",
            ),
            **error_responses(
                400,
                401,
                409,
                422,
                429,
                s400=("cart_empty", "validation_error", "parse_error"),
                s409=("out_of_stock",),
            ),
        },
        tags=["orders"],
        summary="Check out the cart",
    )
    def post(self, request: Request) -> Response:
        body = request.data
        key = request.headers.get(IDEMPOTENCY_HEADER)

        def place() -> tuple[int, dict]:
            OrderCheckoutInputSerializer(data=body).is_valid(raise_exception=True)
            return status.HTTP_201_CREATED, OrderOutputSerializer(order_place(user=request.user)).data

        def collect(http_status: int, placed: dict) -> tuple[int, Any]:
            return http_status, _collect_payment(user=request.user, placed=placed)

        if key is None:
            http_status, data = collect(*place())
            return Response(data, status=http_status)
        if not _SANE_KEY.match(key):
            raise FieldValidationError({IDEMPOTENCY_HEADER: ["Use 1 to 255 visible ASCII characters."]})
        # The key is checked before the body: a used key with another body is a 422 even if that body is invalid.
        result = idempotent_call(
            user=request.user,
            scope="orders.create",
            key=key,
            request_body=body,
            handler=place,
            finish=collect,
            finish_wait=sum(settings.SHOP_PAYMENT_GATEWAY_TIMEOUTS) + 5,
        )
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


def _collect_payment(*, user: AbstractBaseUser, placed: dict) -> Any:
    """After the order committed: charge it, then the order as it stands (``placed`` if the database fails now)."""
    try:
        order_payment_collect(order_id=placed["id"])
        return OrderOutputSerializer(order_get(user=user, order_id=placed["id"])).data
    except DatabaseError as exc:
        # The order is committed and its payment stays collectable (same key): answer with the order as placed.
        logger.warning(
            "order %s placed; recording its payment failed: %s",
            placed["id"],
            exc,
            extra={"event": "checkout_payment_record_failed", "order": placed["id"]},
        )
        return placed


class OrderDetailApi(APIView):
    @extend_schema(
        responses={200: OrderOutputSerializer, **error_responses(401, 404)},
        tags=["orders"],
        summary="One of your orders",
    )
    def get(self, request: Request, order_id: int) -> Response:
        return Response(OrderOutputSerializer(order_get(user=request.user, order_id=order_id)).data)


class OrderCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: OrderOutputSerializer,
            **error_responses(401, 404, 409, s409=("order_not_cancellable",)),
        },
        tags=["orders"],
        summary="Cancel an order pending payment (its stock is returned)",
    )
    def post(self, request: Request, order_id: int) -> Response:
        order_cancel(user=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order_get(user=request.user, order_id=order_id)).data)
