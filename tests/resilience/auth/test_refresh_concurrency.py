"""Refresh rotation under real concurrency: one token, many simultaneous refreshes."""

from __future__ import annotations

import pytest

from resilience.auth.exceptions import TokenNotValidError
from resilience.auth.tokens import refresh_rotate, tokens_for_user
from tests.factories import UserFactory
from tests.helpers import run_together

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def test_concurrent_refreshes_of_one_token_issue_one_new_pair():
    refresh = tokens_for_user(UserFactory())["refresh"]
    outcomes = run_together([lambda: refresh_rotate(refresh) for _ in range(8)])
    succeeded = [value for kind, value in outcomes if kind == "ok"]
    refused = [value for kind, value in outcomes if kind == "error"]
    assert len(succeeded) == 1, outcomes
    assert all(isinstance(exc, TokenNotValidError) and exc.reason == "blacklisted" for exc in refused), refused
