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
