"""Bulwark's admin site: Django's, branded, with the resilience dashboard in front of the ``resilience`` app
index (``/admin/resilience/``) and its live-refresh, state and control endpoints beside it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, path


class BulwarkAdminSite(admin.AdminSite):
    site_header = "Bulwark administration"
    site_title = "Bulwark admin"
    index_title = "Operations"
    login_template = "resilience/staff_login.html"  # Django's, with the second factor's field

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Django's login, limited like the API's (per IP and per username, before the password is checked) and
        with the second factor's field (resilience/staff)."""
        from resilience.staff.forms import StaffAuthenticationForm
        from resilience.staff.login import admin_login_limited

        if request.method == "POST":
            refused = admin_login_limited(request)
            if refused is not None:
                return refused
        self.login_form = StaffAuthenticationForm
        return super().login(request, extra_context)

    def password_change(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """Django's password change form, limited per IP and per user like the login."""
        from resilience.staff.login import password_change_limited

        if request.method == "POST":
            refused = password_change_limited(request)
            if refused is not None:
                return refused
        return super().password_change(request, extra_context)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        from resilience.dashboard import views  # they import ModelAdmins, which register on this very site
        from resilience.staff import otp_views

        dashboard = [
            path("resilience/", self.admin_view(views.DashboardView.as_view(site=self)), name="resilience_dashboard"),
            path("resilience/panels/", self.admin_view(views.panels), name="resilience_panels"),
            path("resilience/state.json", self.admin_view(views.state_json), name="resilience_state"),
            path(
                "resilience/control/",
                self.admin_view(views.ControlView.as_view(site=self)),
                name="resilience_control",
            ),
            # The step-up page: a signed-in staff member verifies the session with a second-factor code.
            path("otp/verify/", self.admin_view(otp_views.OTPVerifyView.as_view(site=self)), name="staff_otp_verify"),
        ]
        return dashboard + super().get_urls()  # first: it takes the place of the app index for "resilience"
