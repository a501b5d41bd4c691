from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.schema import MAX_ID, error_responses, id_parameter
from core.api.serializers import StrictInputSerializer, query_params_validate
from shop.cart.models import MAX_LINE_QUANTITY
from shop.cart.selectors import cart_view
from shop.cart.services import cart_add_item, cart_remove_item, cart_update_item


class CartProductSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    name = serializers.CharField()
    slug = serializers.CharField()
    price = serializers.DecimalField(max_digits=12, decimal_places=2)
    currency = serializers.CharField()


class CartItemOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    product = CartProductSerializer()
    quantity = serializers.IntegerField()
    line_total = serializers.DecimalField(max_digits=14, decimal_places=2)


class CartOutputSerializer(serializers.Serializer):
    items = CartItemOutputSerializer(many=True)
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    currency = serializers.CharField()


def _cart_response(request: Request, http_status: int = status.HTTP_200_OK) -> Response:
    return Response(CartOutputSerializer(cart_view(user=request.user)).data, status=http_status)


_QUANTITY = {"min_value": 1, "max_value": MAX_LINE_QUANTITY}
_ITEM_ID = id_parameter("item_id", "A line of your cart (the `items[].id` of the cart); another is a 404.")


class CartApi(APIView):
    @extend_schema(
        responses={200: CartOutputSerializer},
        tags=["cart"],
        summary="The cart with line and cart totals",
    )
    def get(self, request: Request) -> Response:
        query_params_validate(request)
        return _cart_response(request)


class CartItemAddApi(APIView):
    class InputSerializer(StrictInputSerializer):
        product_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
        quantity = serializers.IntegerField(**_QUANTITY)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: CartOutputSerializer,
            # Beyond the schema: a product that is not for sale is a validation_error naming product_id.
            **error_responses(400, 409, s400=("validation_error",), s409=("out_of_stock",)),
        },
        tags=["cart"],
        summary="Add a product (the same product merges quantity)",
    )
    def post(self, request: Request) -> Response:
        query_params_validate(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cart_add_item(user=request.user, **data.validated_data)
        return _cart_response(request, status.HTTP_201_CREATED)


class CartItemApi(APIView):
    class InputSerializer(StrictInputSerializer):
        quantity = serializers.IntegerField(**_QUANTITY)

    @extend_schema(
        request=InputSerializer,
        parameters=[_ITEM_ID],
        responses={
            200: CartOutputSerializer,
            **error_responses(400, 404, 409, s400=("validation_error",), s409=("out_of_stock",)),
        },
        tags=["cart"],
        summary="Change a line's quantity",
    )
    def patch(self, request: Request, item_id: int) -> Response:
        query_params_validate(request)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cart_update_item(user=request.user, item_id=item_id, **data.validated_data)
        return _cart_response(request)

    @extend_schema(
        parameters=[_ITEM_ID], responses={204: None, **error_responses(404)}, tags=["cart"], summary="Remove a line"
    )
    def delete(self, request: Request, item_id: int) -> Response:
        query_params_validate(request)
        cart_remove_item(user=request.user, item_id=item_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
