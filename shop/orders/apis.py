from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from resilience.api.pagination import StrictPageNumberPagination
from resilience.api.schema import error_responses
from resilience.api.serializers import StrictInputSerializer
from resilience.errors import FieldValidationError
from resilience.idempotency.services import idempotent_call
from shop.orders.models import Order, OrderItem
from shop.orders.selectors import order_get, order_list
from shop.orders.services import order_cancel, order_place

IDEMPOTENCY_HEADER = "Idempotency-Key"
_SANE_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # visible ASCII, 1..255


class OrderItemOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderItem
        fields = ["id", "product_id", "sku", "name", "unit_price", "quantity", "line_total"]


class OrderOutputSerializer(serializers.ModelSerializer):
    items = OrderItemOutputSerializer(many=True)

    class Meta:
        model = Order
        fields = ["id", "status", "items", "total", "currency", "created_at", "updated_at"]


class OrderCheckoutInputSerializer(StrictInputSerializer):
    """Checkout takes no fields today: the order is the cart."""


class OrderListCreateApi(APIView):
    # Read by drf-spectacular too: the schema then documents the page, not a bare array.
    pagination_class = StrictPageNumberPagination

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
            201: OpenApiResponse(OrderOutputSerializer, description="The order, pending payment"),
            **error_responses(
                400,
                401,
                409,
                422,
                s400="cart_empty, validation_error or parse_error",
                s409="out_of_stock (detail.items: [{product_id, sku, requested, available}])",
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

        if key is None:
            http_status, data = place()
            return Response(data, status=http_status)
        if not _SANE_KEY.match(key):
            raise FieldValidationError({IDEMPOTENCY_HEADER: ["Use 1 to 255 visible ASCII characters."]})
        # The key is checked before the body: a used key with another body is a 422 even if that body is invalid.
        result = idempotent_call(user=request.user, scope="orders.create", key=key, request_body=body, handler=place)
        response = Response(result.body, status=result.status)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


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
            **error_responses(
                401, 404, 409, s409="order_not_cancellable: only a pending_payment order can be cancelled"
            ),
        },
        tags=["orders"],
        summary="Cancel an order pending payment (its stock is returned)",
    )
    def post(self, request: Request, order_id: int) -> Response:
        order_cancel(user=request.user, order_id=order_id)
        return Response(OrderOutputSerializer(order_get(user=request.user, order_id=order_id)).data)
