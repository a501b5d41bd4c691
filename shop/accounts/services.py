"""Account writes: register, log in, refresh, log out."""

from __future__ import annotations

import logging

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import FieldValidationError
from resilience.auth.exceptions import InvalidCredentialsError
from resilience.auth.tokens import tokens_for_user
from resilience.db.bookkeeping import best_effort
from resilience.db.context import primary_reads, read_from_replica

logger = logging.getLogger(__name__)


@transaction.atomic
def user_register(*, username: str, email: str, password: str) -> AbstractBaseUser:
    """Create a customer account; a taken username or e-mail, or a weak password, is a validation error."""
    user_model = get_user_model()
    errors: dict[str, list[str]] = {}
    if user_model.objects.filter(username__iexact=username).exists():
        errors["username"] = ["This username is taken."]
    if user_model.objects.filter(email__iexact=email).exists():
        errors["email"] = ["An account with this e-mail already exists."]
    try:
        validate_password(password, user=user_model(username=username, email=email))
    except DjangoValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise FieldValidationError(errors)
    try:
        with transaction.atomic():
            return user_model.objects.create_user(username=username, email=email, password=password)
    except IntegrityError as exc:  # a concurrent sign-up took the name or e-mail between check and insert
        if "email" in str(exc):
            raise FieldValidationError({"email": ["An account with this e-mail already exists."]}) from exc
        raise FieldValidationError({"username": ["This username is taken."]}) from exc


def user_login(*, username: str, password: str) -> dict[str, str]:
    """Check the credentials and issue a token pair; ``last_login`` is bookkeeping and never fails the login."""
    user = authenticate(username=username, password=password)
    if user is None and read_from_replica():
        # An account registered a moment ago may not have reached the replica yet: ask the primary.
        with primary_reads():
            user = authenticate(username=username, password=password)
    if user is None:
        raise InvalidCredentialsError()
    tokens = tokens_for_user(user)
    best_effort("last_login", lambda: type(user).objects.filter(pk=user.pk).update(last_login=timezone.now()))
    return tokens
