"""The one way limits reach the API: a DRF throttle, installed for every view by ``DEFAULT_THROTTLE_CLASSES``.

Every DRF view is counted against the global per-client scope ``api``; a view adds its own scopes per HTTP
method with ``ratelimit_scopes = {"POST": ("login", "login_user")}``. DRF runs throttles after authentication
and permissions, so ``request.user`` is known. Over a limit the throttle raises ``RateLimitedError`` (429,
rendered by the one exception handler); an allowed request gets the ``RateLimit-*`` headers through the
view's response headers, on success and error responses alike.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from resilience.ratelimit.policy import enforce

GLOBAL_SCOPE = "api"


class RateLimitThrottle(BaseThrottle):
    def allow_request(self, request: Request, view: Any) -> bool:
        scopes = [GLOBAL_SCOPE, *getattr(view, "ratelimit_scopes", {}).get(request.method, ())]
        headers = enforce(request, scopes)
        if headers:
            view.headers.update(headers)  # applied by APIView.finalize_response
        return True
