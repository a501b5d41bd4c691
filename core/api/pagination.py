"""Page-number pagination that rejects bad ``page``/``page_size`` with a 400 instead of guessing.

A list view's query serializer extends :class:`PageQuerySerializer` (and names it in its ``extend_schema``
``parameters``), so the schema states the same ranges the pagination enforces: ``page`` ≥ 1 (past the last
page is a 404), ``page_size`` 1 to :data:`MAX_PAGE_SIZE` (default :data:`DEFAULT_PAGE_SIZE`).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.views import APIView

from core.api.serializers import StrictQuerySerializer

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
PAGE_PARAMETERS = ("page", "page_size")


class PageQuerySerializer(StrictQuerySerializer):
    page = serializers.IntegerField(
        min_value=1, required=False, default=1, help_text="1-based; a page past the last one is a 404."
    )
    page_size = serializers.IntegerField(
        min_value=1,
        max_value=MAX_PAGE_SIZE,
        required=False,
        help_text=f"Results per page, 1 to {MAX_PAGE_SIZE} (default {DEFAULT_PAGE_SIZE}).",
    )


class StrictPageNumberPagination(PageNumberPagination):
    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = MAX_PAGE_SIZE

    def paginate_queryset(self, queryset: QuerySet, request: Request, view: APIView | None = None) -> list[Any] | None:
        # The view has validated its whole query string already; this keeps the pagination safe on its own.
        params = PageQuerySerializer(
            data={key: request.query_params[key] for key in PAGE_PARAMETERS if key in request.query_params}
        )
        params.is_valid(raise_exception=True)
        return super().paginate_queryset(queryset, request, view)
