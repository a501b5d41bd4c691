"""Liveness: 200 while this process can run Python and answer HTTP. It touches no dependency."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe

HEALTH_CONTENT_TYPE = "application/health+json"


@require_safe
def live(request: HttpRequest) -> HttpResponse:
    body = {"status": "pass", "description": "the process is serving requests"}
    response = HttpResponse(json.dumps(body), content_type=HEALTH_CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
