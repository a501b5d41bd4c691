from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.pagination import PageQuerySerializer, StrictPageNumberPagination
from core.api.schema import error_responses, id_parameter
from core.api.serializers import query_params_validate
from shop.catalog.models import Category, Product
from shop.catalog.selectors import category_get_by_ref, category_list, product_get, product_list


class CategoryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "slug", "name"]


class ProductOutputSerializer(serializers.ModelSerializer):
    category = CategoryOutputSerializer()

    class Meta:
        model = Product
        fields = ["id", "sku", "name", "slug", "description", "price", "currency", "stock", "category"]


class PublicApi(APIView):
    permission_classes = [AllowAny]


class CategoryListApi(PublicApi):
    # Read by drf-spectacular too: the schema then documents the page, not a bare array.
    pagination_class = StrictPageNumberPagination

    @extend_schema(
        responses={200: CategoryOutputSerializer(many=True), **error_responses(400, 404, s400=("validation_error",))},
        parameters=[PageQuerySerializer],
        tags=["catalog"],
        summary="List categories",
    )
    def get(self, request: Request) -> Response:
        query_params_validate(request, PageQuerySerializer)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(category_list(), request, view=self)
        return paginator.get_paginated_response(CategoryOutputSerializer(page, many=True).data)


class ProductListApi(PublicApi):
    pagination_class = StrictPageNumberPagination

    class FilterSerializer(PageQuerySerializer):
        # Not trimmed: the limits below are on the parameter as sent, and a slug or id never holds whitespace.
        category = serializers.RegexField(
            r"^[-a-zA-Z0-9_]*\Z",
            required=False,
            allow_blank=True,
            max_length=120,
            trim_whitespace=False,
            help_text="Category id or slug (ASCII letters, digits, - and _); empty is no filter, one that does not "
            "exist is a 400.",
            error_messages={"invalid": "A category id or slug: letters, digits, - and _ only."},
        )
        q = serializers.CharField(
            required=False,
            max_length=200,
            allow_blank=True,
            trim_whitespace=False,
            help_text="Search in name, description and SKU (case-insensitive), at most 200 characters.",
        )

        def validate_q(self, value: str) -> str:
            return value.strip()  # searched trimmed; its length is checked as sent

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: ProductOutputSerializer(many=True), **error_responses(400, 404, s400=("validation_error",))},
        tags=["catalog"],
        summary="List products for sale, ordered by name then id",
    )
    def get(self, request: Request) -> Response:
        filters = query_params_validate(request, self.FilterSerializer)
        ref = filters.get("category")
        category = category_get_by_ref(ref=ref) if ref else None
        products = product_list(category=category, query=filters.get("q"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(products, request, view=self)
        return paginator.get_paginated_response(ProductOutputSerializer(page, many=True).data)


class ProductDetailApi(PublicApi):
    @extend_schema(
        parameters=[id_parameter("product_id", "A product for sale (an inactive or unknown one is a 404).")],
        responses={200: ProductOutputSerializer, **error_responses(404)},
        tags=["catalog"],
        summary="One product for sale",
    )
    def get(self, request: Request, product_id: int) -> Response:
        query_params_validate(request)
        return Response(ProductOutputSerializer(product_get(product_id=product_id)).data)
