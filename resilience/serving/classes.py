"""Traffic classes: the one URL -> class table.

Every request belongs to one class, named on its response in ``X-Traffic-Class``, on its log records and in
the serving metrics. Each class has its own bulkhead, time budget and body limit in every worker
(:mod:`resilience.serving.wsgi`), can be served by its own gunicorn pool (``SERVING_POOL``), sits behind its
own HAProxy backend (:mod:`resilience.serving.haproxy` renders the routing from this table) and has its own
Lambda handler (``settings/lambda_handlers.py``).

The first route that matches wins; a path no route names is ``catalog`` (unknown paths are answered by the
catalog pool: a 404 costs as little as a product read). Paths are matched as the WSGI server gives them, which
is percent-decoded (HAProxy decodes with ``url_dec`` before it matches, so both agree). No dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

CATALOG, AUTH, CHECKOUT, ADMIN, OPS = "catalog", "auth", "checkout", "admin", "ops"
TRAFFIC_CLASSES: tuple[str, ...] = (CATALOG, AUTH, CHECKOUT, ADMIN, OPS)
DEFAULT_CLASS = CATALOG
HEADER = "X-Traffic-Class"

CLASS_DESCRIPTIONS = {
    CATALOG: "product and category reads, the API schema and docs, static files and unknown paths",
    AUTH: "sign-up, log-in, token refresh, log-out, me",
    CHECKOUT: "the cart and orders (checkout, payment, cancel)",
    ADMIN: "the Django admin and the resilience dashboard",
    OPS: "health probes, Prometheus scrapes and the JWKS",
}


@dataclass(frozen=True)
class Route:
    traffic_class: str
    exact: tuple[str, ...] = ()  # these paths
    prefixes: tuple[str, ...] = ()  # and every path that starts with one of these


ROUTES: tuple[Route, ...] = (
    Route(OPS, exact=("/health", "/metrics", "/.well-known/jwks.json"), prefixes=("/health/", "/metrics/")),
    Route(AUTH, exact=("/api/auth",), prefixes=("/api/auth/",)),
    Route(CHECKOUT, exact=("/api/cart", "/api/orders"), prefixes=("/api/cart/", "/api/orders/")),
    Route(ADMIN, exact=("/admin",), prefixes=("/admin/",)),
    Route(
        CATALOG,
        exact=("/api/products", "/api/categories"),
        prefixes=("/api/products/", "/api/categories/", "/api/schema/", "/api/docs/", "/static/"),
    ),
)


def traffic_class_for(path: str) -> str:
    """The class of a request to ``path`` (``catalog`` when no route names it)."""
    for route in ROUTES:
        if path in route.exact or path.startswith(route.prefixes):
            return route.traffic_class
    return DEFAULT_CLASS
