"""Schemathesis hooks for ``python -m bench.schema``: ``st run`` loads them through ``SCHEMATHESIS_HOOKS``.

What they supply is test data a schema cannot describe (:mod:`bench.schema.data`): a fresh username and e-mail
for each schema-valid sign-up, and one unit of a product in the cart before each checkout (with the token the
case itself carries; the runner made that product's stock large). Negative cases are sent as generated.
"""

from __future__ import annotations

import os
from typing import Any

import requests
import schemathesis

from bench.schema.data import CHECKOUT, REGISTER, registration_made_unique


def _is_positive(case: Any) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    operation = (case.method.upper(), case.operation.path)
    if operation == REGISTER and _is_positive(case):
        case.body = registration_made_unique(case.body)
    elif operation == CHECKOUT:
        authorization = (case.headers or {}).get("Authorization")
        if authorization:  # an unauthenticated case is left alone: its 401 is what is under test
            requests.post(
                f"{os.environ['BULWARK_SCHEMA_URL']}/api/cart/items/",
                json={"product_id": int(os.environ["BULWARK_SCHEMA_PRODUCT_ID"]), "quantity": 1},
                headers={"Authorization": authorization},
                timeout=10,
            )
