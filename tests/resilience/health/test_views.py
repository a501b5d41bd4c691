from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/health/live", "/health/live/"])
def test_live_answers_pass_without_redirect(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/health+json"
    assert response["Cache-Control"] == "no-store"
    assert response.json()["status"] == "pass"
    assert response["X-Request-ID"]


def test_live_touches_no_database(client, django_assert_num_queries, db):
    with django_assert_num_queries(0):
        assert client.get("/health/live").status_code == 200


def test_live_head_is_allowed(client):
    assert client.head("/health/live").status_code == 200


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_live_other_methods_get_json_405(method):
    from django.test import Client

    response = getattr(Client(enforce_csrf_checks=True), method)("/health/live")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD"
