"""Orders API: validate -> service -> serialize. Checkout is :func:`shop.orders.checkout.order_checkout`; the
order's ``payment.status`` and ``payment.message`` say whether it was paid, declined or is collected later.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.pagination import PageQuerySerializer, StrictPageNumberPagination
from core.api.schema import error_responses, header_parameter, id_parameter
from core.api.serializers import StrictInputSerializer, query_params_validate
from core.exceptions import FieldValidationError
from shop.orders.checkout import order_checkout
from shop.orders.models import Order, OrderItem
from shop.orders.selectors import order_get, order_list
from shop.orders.services import order_cancel
from shop.payments.models import PaymentStatus

IDEMPOTENCY_HEADER = "Idempotency-Key"
_SANE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, 1..255
_ORDER_ID = id_parameter("order_id", "One of your orders (another user's, or an unknown one, is a 404).")


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


# drf-spectacular leaves out a body without fields; this one is optional, and `{}` if sent (415 if not JSON).
_CHECKOUT_BODY = {
    "application/json": {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
        "description": "Optional: checkout takes no fields today (the order is the cart); send nothing or `{}`.",
    }
}


class OrderListCreateApi(APIView):
    # Read by drf-spectacular too: the schema then documents the page, not a bare array.
    pagination_class = StrictPageNumberPagination
    ratelimit_scopes = {"POST": ("checkout",)}

    @extend_schema(
        responses={
            200: OrderOutputSerializer(many=True),
            **error_responses(400, 404, s400=("validation_error",)),
        },
        parameters=[PageQuerySerializer],
        tags=["orders"],
        summary="Your orders, newest first",
    )
    def get(self, request: Request) -> Response:
        query_params_validate(request, PageQuerySerializer)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(order_list(user=request.user), request, view=self)
        return paginator.get_paginated_response(OrderOutputSerializer(page, many=True).data)

    @extend_schema(
        request=_CHECKOUT_BODY,
        parameters=[
            header_parameter(
                IDEMPOTENCY_HEADER,
                pattern=r"^[!-~]{1,255}$",
                max_length=255,
                description=(
                    "Optional, recommended: 1 to 255 visible ASCII characters (another shape is a 400 naming "
                    "the header). A retry with the same key (kept 24 h, per user) returns the first response "
                    "with `Idempotent-Replayed: true`; the same key with another body is a 422."
                ),
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                str,
                OpenApiParameter.HEADER,
                response=[201],
                enum=["true"],
                description="Present on a replay: this is the first response to this `Idempotency-Key`.",
            ),
        ],
        responses={
            201: OpenApiResponse(
                OrderOutputSerializer,
                description="The order: paid, payment_failed (declined), or pending_payment (collected later)",
            ),
            **error_responses(
                400,
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
        query_params_validate(request)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and not _SANE_KEY.match(key):
            raise FieldValidationError({IDEMPOTENCY_HEADER: ["Use 1 to 255 visible ASCII characters."]})
        result = order_checkout(
            user=request.user,
            request_body=request.data,
            idempotency_key=key,
            validate=lambda body: OrderCheckoutInputSerializer(data=body).is_valid(raise_exception=True),
            present=lambda order: OrderOutputSerializer(order).data,
        )
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class OrderDetailApi(APIView):
    @extend_schema(
        parameters=[_ORDER_ID],
        responses={200: OrderOutputSerializer, **error_responses(404)},
        tags=["orders"],
        summary="One of your orders",
    )
    def get(self, request: Request, order_id: int) -> Response:
        query_params_validate(request)
        return Response(OrderOutputSerializer(order_get(user=request.user, order_id=order_id)).data)


class OrderCancelApi(APIView):
    @extend_schema(
        request=None,
        parameters=[_ORDER_ID],
        responses={
            200: OrderOutputSerializer,
            **error_responses(404, 409, s409=("order_not_cancellable",)),
        },
        tags=["orders"],
        summary="Cancel an order pending payment (its stock is returned)",
    )
    def post(self, request: Request, order_id: int) -> Response:
        query_params_validate(request)
        order_cancel(user=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order_get(user=request.user, order_id=order_id)).data)
