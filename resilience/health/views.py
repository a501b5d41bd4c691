"""Liveness: 200 while this process can run Python and answer HTTP. It touches no dependency."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.api.views import method_not_allowed

HEALTH_CONTENT_TYPE = "application/health+json"


@csrf_exempt  # a POST must get the JSON 405, not Django's HTML CSRF page
def live(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, allowed=("GET", "HEAD"))
    body = {"status": "pass", "description": "the process is serving requests"}
    response = HttpResponse(json.dumps(body), content_type=HEALTH_CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
