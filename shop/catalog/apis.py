from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.pagination import StrictPageNumberPagination
from core.api.schema import error_responses
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
        responses={200: CategoryOutputSerializer(many=True), **error_responses(400, 404)},
        parameters=[OpenApiParameter("page", int), OpenApiParameter("page_size", int)],
        tags=["catalog"],
        summary="List categories",
    )
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(category_list(), request, view=self)
        return paginator.get_paginated_response(CategoryOutputSerializer(page, many=True).data)


class ProductListApi(PublicApi):
    pagination_class = StrictPageNumberPagination

    class FilterSerializer(serializers.Serializer):
        category = serializers.CharField(required=False, max_length=120)
        q = serializers.CharField(required=False, max_length=200, allow_blank=True)

    @extend_schema(
        parameters=[
            OpenApiParameter("category", str, description="Category id or slug"),
            OpenApiParameter("q", str, description="Search in name, description and SKU"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int, description="1 to 100, default 20"),
        ],
        responses={200: ProductOutputSerializer(many=True), **error_responses(400, 404)},
        tags=["catalog"],
        summary="List products for sale, ordered by name then id",
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        ref = filters.validated_data.get("category")
        category = category_get_by_ref(ref=ref) if ref else None
        products = product_list(category=category, query=filters.validated_data.get("q"))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(products, request, view=self)
        return paginator.get_paginated_response(ProductOutputSerializer(page, many=True).data)


class ProductDetailApi(PublicApi):
    @extend_schema(
        responses={200: ProductOutputSerializer, **error_responses(404)},
        tags=["catalog"],
        summary="One product for sale",
    )
    def get(self, request: Request, product_id: int) -> Response:
        return Response(ProductOutputSerializer(product_get(product_id=product_id)).data)
