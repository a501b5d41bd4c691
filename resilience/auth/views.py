"""``/.well-known/jwks.json``: the public keys of the asymmetric keys a verifier may meet.

Served from this process's ring (no database round trip per request): NEXT keys, so verifiers' caches know
a key before it signs; the ACTIVE key; PREVIOUS keys until they retire. HS256 keys are never published:
only their holder can verify them. Nothing private is written: ``to_jwk`` of a public key has no ``d``.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from jwt.algorithms import OKPAlgorithm

from core.api.responses import error_response
from core.api.views import method_not_allowed
from resilience.auth.crypto import public_key_load
from resilience.auth.ring import RingUnavailableError, key_ring

logger = logging.getLogger("resilience.auth")


def jwks_document() -> dict[str, list[dict[str, str]]]:
    keys = []
    for key in key_ring().published(timezone.now()):
        try:
            jwk = OKPAlgorithm.to_jwk(public_key_load(key.public_pem), as_dict=True)
        except ValueError as exc:  # a damaged row: leave it out, never fail the whole document
            logger.error("public key of %s not publishable: %s", key.kid, exc, extra={"event": "jwks_key_skipped"})
            continue
        keys.append({**jwk, "kid": key.kid, "alg": key.algorithm, "use": "sig"})
    return {"keys": sorted(keys, key=lambda jwk: jwk["kid"])}


@csrf_exempt  # a POST must get the JSON 405, not Django's HTML CSRF page
def jwks(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request, allowed=("GET", "HEAD"))
    try:
        document = jwks_document()
    except RingUnavailableError as exc:
        return error_response(request, exc)
    response = HttpResponse(json.dumps(document), content_type="application/json")
    response["Cache-Control"] = f"public, max-age={settings.BULWARK_JWT['JWKS_MAX_AGE']}"
    return response
