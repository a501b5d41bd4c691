"""The health endpoints, on django-health-check's view and the eight area checks (:mod:`resilience.health.matrix`).

- ``/health/live``: 200 while this process can run Python and answer HTTP; it touches no dependency.
- ``/health/ready``: ``application/health+json``; 200 for ``pass`` and ``warn``, 503 for ``fail`` (no database
  node answers at all).
- ``/health``: the seed's body (``success``, ``score``, ``spofs``), 503 exactly when readiness fails.
- ``/health/checks/``: django-health-check's own page (HTML, or JSON/text/OpenMetrics by ``?format=``), for
  staff only: it names internals.

Each answers within ``CHECK_TIMEOUT`` + 1 s, also while a dependency hangs: every check reads state a monitor
keeps, and a check that does not finish in time is reported failed with output ``timeout``.
"""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from health_check.views import HealthCheckView

from core.api.views import method_not_allowed
from resilience.health.matrix import AREA_CHECKS, Matrix, matrix_gather, per_request_executor

HEALTH_CONTENT_TYPE = "application/health+json"


@csrf_exempt  # a POST must get the JSON 405, not Django's HTML CSRF page
def live(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, allowed=("GET", "HEAD"))
    body = {"status": "pass", "description": "the process is serving requests"}
    response = HttpResponse(json.dumps(body), content_type=HEALTH_CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response


class AreaChecksView(HealthCheckView):
    """django-health-check's view over the eight area checks, each run with a pool of its own."""

    checks = AREA_CHECKS
    http_method_names = ["get", "head"]

    def get_executor(self) -> Any:
        return per_request_executor()

    async def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return method_not_allowed(request, allowed=("GET", "HEAD"))

    async def matrix(self) -> Matrix:
        with self.get_executor() as executor:
            return await matrix_gather(list(self.get_checks()), executor)


class SpofHealthView(AreaChecksView):
    """``GET /health``: the seed's SPOF body."""

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        matrix = await self.matrix()
        return JsonResponse(matrix.health_body(), status=503 if matrix.status == "fail" else 200)


class ReadinessView(AreaChecksView):
    """``GET /health/ready``: ``application/health+json``."""

    async def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        matrix = await self.matrix()
        return HttpResponse(
            json.dumps(matrix.ready_body()),
            content_type=HEALTH_CONTENT_TYPE,
            status=503 if matrix.status == "fail" else 200,
        )


health = csrf_exempt(SpofHealthView.as_view())
ready = csrf_exempt(ReadinessView.as_view())
checks_page = AreaChecksView.as_view()
