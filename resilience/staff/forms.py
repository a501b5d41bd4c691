"""The admin login form: Django's admin form plus django-otp's ``otp_token`` field.

Policy (docs: README "Staff access"):

- An account with a **confirmed second factor** must give a code (TOTP, or one of its backup codes) to log in: a
  correct password alone is refused with "enter the code". The session is then verified (django-otp's
  ``user.otp_device``, persisted by its ``user_logged_in`` receiver) and may operate the controls, given
  ``resilience.operate_controls``.
- An account **without one** logs in with its password, look-only: the dashboard says "enrol a second factor to
  operate", and every path that changes a control or a key refuses it
  (:func:`resilience.dashboard.permissions.may_operate`). A code typed anyway is ignored.

The code is checked after the password (so a wrong password never spends an OTP attempt), through
:func:`resilience.staff.otp.otp_verify`: limited per user, and working with the primary or Redis down.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm

from resilience.staff.audit import staff_login_failure_record
from resilience.staff.otp import OTPRefused, otp_verify, user_has_confirmed_device


def otp_token_field() -> forms.CharField:
    """django-otp's ``otp_token`` field, as its forms declare it (a one-time code: no autofill from history)."""
    return forms.CharField(
        required=False,
        max_length=32,
        label="Second factor",
        help_text="The 6-digit code from your authenticator app, or a backup code. Leave it empty if you have none.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "spellcheck": "false"}),
    )


class StaffAuthenticationForm(AdminAuthenticationForm):
    otp_token = otp_token_field()

    def clean(self) -> dict[str, Any]:
        try:
            data = super().clean()  # the password (and is_staff) first: a wrong password spends no OTP attempt
        except forms.ValidationError:
            if self.user_cache is not None:  # the right password of an account the admin refuses: no signal for it
                staff_login_failure_record(
                    self.request, username=self.user_cache.get_username(), user=self.user_cache, outcome="not_staff"
                )
            raise
        user = self.get_user()
        if user is None:
            return data
        user.otp_device = None
        token = data.get("otp_token") or ""
        if not user_has_confirmed_device(user):
            return data  # look-only: no second factor to check (a code typed anyway is ignored)
        try:
            user.otp_device = otp_verify(self.request, user, token)
        except OTPRefused as exc:
            if exc.code != "token_required":  # a wrong, reused or throttled code; asking for one is not a failure
                staff_login_failure_record(self.request, username=user.get_username(), user=user, outcome=exc.code)
            raise forms.ValidationError(exc.message, code=exc.code) from exc
        return data


class OTPVerifyForm(forms.Form):
    """The step-up page's form: a code for the signed-in user."""

    otp_token = otp_token_field()

    def __init__(self, *args: Any, request: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request = request
        self.device = None
        self.fields["otp_token"].help_text = "The 6-digit code from your authenticator app, or a backup code."

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        try:
            self.device = otp_verify(self.request, self.request.user, data.get("otp_token") or "")
        except OTPRefused as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc
        return data
