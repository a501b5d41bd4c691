"""The URL -> traffic class table."""

from __future__ import annotations

import pytest

from resilience.serving.classes import ROUTES, TRAFFIC_CLASSES, traffic_class_for


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/products/", "catalog"),
        ("/api/products/12/", "catalog"),
        ("/api/categories/", "catalog"),
        ("/api/schema/", "catalog"),
        ("/api/docs/", "catalog"),
        ("/static/admin/css/base.css", "catalog"),
        ("/", "catalog"),
        ("/no/such/page", "catalog"),
        ("/api/nothing-here/", "catalog"),
        ("/api/auth/token/", "auth"),
        ("/api/auth/register/", "auth"),
        ("/api/auth/me/", "auth"),
        ("/api/auth", "auth"),
        ("/api/cart/", "checkout"),
        ("/api/cart/items/3/", "checkout"),
        ("/api/orders/", "checkout"),
        ("/api/orders/7/cancel/", "checkout"),
        ("/admin/", "admin"),
        ("/admin/resilience/", "admin"),
        ("/admin", "admin"),
        ("/health", "ops"),
        ("/health/", "ops"),
        ("/health/ready", "ops"),
        ("/health/live/", "ops"),
        ("/metrics", "ops"),
        ("/metrics/", "ops"),
        ("/.well-known/jwks.json", "ops"),
    ],
)
def test_each_path_has_its_class(path, expected):
    assert traffic_class_for(path) == expected


@pytest.mark.parametrize(
    "path", ["/healthz", "/metricsx", "/api/authx/", "/api/cartoon/", "/administrator/", "/ADMIN/"]
)
def test_a_lookalike_path_is_not_the_class_it_resembles(path):
    assert traffic_class_for(path) == "catalog"


def test_every_class_has_a_route():
    assert {route.traffic_class for route in ROUTES} == set(TRAFFIC_CLASSES)
