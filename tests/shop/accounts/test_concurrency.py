"""Concurrent sign-ups: the database, not a check-then-insert, decides who gets a name or an e-mail."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from core.exceptions import FieldValidationError
from shop.accounts.services import user_register
from tests.helpers import run_together

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]
PASSWORD = "correct horse battery staple"


def test_same_email_in_parallel_creates_one_account() -> None:
    outcomes = run_together(
        [
            lambda i=i: user_register(
                username=f"racer{i}", email="Same@Example.com" if i % 2 else "same@example.com", password=PASSWORD
            )
            for i in range(10)
        ]
    )
    refused = [value for kind, value in outcomes if kind == "error"]
    assert get_user_model().objects.filter(email__iexact="same@example.com").count() == 1
    assert len(refused) == 9 and all(isinstance(exc, FieldValidationError) for exc in refused), refused


def test_same_username_in_any_case_in_parallel_creates_one_account() -> None:
    names = ["Dup", "dUp", "duP", "DUP", "dup", "DuP"]
    outcomes = run_together(
        [
            lambda name=name, i=i: user_register(username=name, email=f"{name}{i}@example.com", password=PASSWORD)
            for i, name in enumerate(names)
        ]
    )
    assert get_user_model().objects.filter(username__iexact="dup").count() == 1
    assert sum(kind == "ok" for kind, _ in outcomes) == 1
