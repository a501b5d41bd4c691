"""Shared fixtures: API clients, a logged-in customer, products."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from resilience.auth.tokens import tokens_for_user
from tests.factories import ProductFactory, UserFactory


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_for_user(user)['access']}")
    return client


@pytest.fixture
def auth_client(user) -> APIClient:
    return client_for(user)


@pytest.fixture
def product(db):
    return ProductFactory(stock=10)


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def other_client(other_user) -> APIClient:
    return client_for(other_user)


@pytest.fixture(autouse=True)
def _reads_on_the_primary_by_default(request):
    """Unit tests read from the primary: committed writes reach a physical replica asynchronously.

    The router's own tests (marked ``replica_routing``) turn this off and route for real.
    """
    from resilience.auth.ring import ring_cache
    from resilience.controls.state import PRIMARY_ONLY_READS, controls_replace
    from resilience.db.nodes import reset_registry

    reset_registry()
    ring_cache.reset()  # a key made (and rolled back) by another test must not sign here
    controls_replace([] if request.node.get_closest_marker("replica_routing") else [(PRIMARY_ONLY_READS, True)])
    yield
    controls_replace([])
    reset_registry()


@pytest.fixture
def fresh_circuits():
    """Redis circuits of this process forgotten before and after the test (use with ``usefixtures``)."""
    from resilience.cache.circuit import reset_circuits

    reset_circuits()
    yield
    reset_circuits()
