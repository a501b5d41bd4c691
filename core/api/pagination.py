"""Page-number pagination that rejects bad ``page``/``page_size`` with a 400 instead of guessing."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.views import APIView

MAX_PAGE_SIZE = 100


class _PageParams(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, required=False, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, required=False)


class StrictPageNumberPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: APIView | None = None) -> list[Any] | None:
        params = _PageParams(
            data={key: request.query_params[key] for key in ("page", "page_size") if key in request.query_params}
        )
        params.is_valid(raise_exception=True)
        return super().paginate_queryset(queryset, request, view)
