"""Schemathesis against the Django app in-process: the OpenAPI schema (/api/schema/) against what the API does.

Every operation gets schema-valid and schema-violating requests (Hypothesis, fixed seed, derandomized, a few
examples each) and every check: no 5xx, only documented statuses, content types and headers, bodies that match
their documented schema, schema-valid data accepted, schema-violating data refused. The configuration is the
one ``python -m bench.schema`` runs against gunicorn (``bench/schema/schemathesis.toml``, less its login: here
the test's own user's token is sent); what a schema cannot describe -- a fresh username per sign-up, a product
in the cart before a checkout -- is supplied as there (:mod:`bench.schema.data`). The full runs (3 seeds,
hundreds of examples per operation, the stateful phase) are ``python -m bench.schema``; see
docs/schema_conformance.md.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from bench.schema.data import CHECKOUT, REGISTER, registration_made_unique
from resilience.auth.tokens import tokens_for_user
from settings.wsgi import application
from shop.cart.services import cart_add_item
from tests.factories import CategoryFactory, ProductFactory, UserFactory

pytestmark = pytest.mark.django_db

CONFIG = Path(__file__).resolve().parents[3] / "bench" / "schema" / "schemathesis.toml"
SEED = 20261201
MAX_EXAMPLES = 30


def _config() -> SchemathesisConfig:
    data = tomllib.loads(CONFIG.read_text())
    data.pop("auth")  # the dynamic login of the bench; the test sends its own user's token
    data["seed"] = SEED
    # The test user's token on every request (as the bench's login does), rather than a generated Authorization.
    data.setdefault("generation", {}).update(
        {"max-examples": MAX_EXAMPLES, "deterministic": True, "with-security-parameters": False}
    )
    return SchemathesisConfig.from_dict(data)


@pytest.fixture(autouse=True)
def _requests_keep_the_test_connection():
    """As Django's test client does: a request must not close the connection the test's transaction is on.

    Schemathesis calls the WSGI application directly, and Django closes old connections at the start and end
    of every request it serves that way.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def shop_data(db):
    """A user with a token, and a catalog whose first product (the one checkouts buy) has plenty of stock."""
    user = UserFactory()
    books = CategoryFactory(slug="books")
    product = ProductFactory(category=books, stock=10**6)
    ProductFactory(category=books, stock=5)
    return {"user": user, "product": product, "token": tokens_for_user(user)["access"]}


# Loaded at collection, through the app itself (no database is touched to serve the schema); the cases are
# generated and sent inside each test, with its database.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=_config())


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, shop_data):
    operation = (case.method.upper(), case.operation.path)
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if operation == REGISTER and positive:
        case.body = registration_made_unique(case.body)
    if operation == CHECKOUT:
        cart_add_item(user=shop_data["user"], product_id=shop_data["product"].id, quantity=1)
    case.call_and_validate(headers={"Authorization": f"Bearer {shop_data['token']}"})
