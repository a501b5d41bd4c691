"""The step-up page, ``/admin/otp/verify/``: a signed-in staff member verifies their session with a code later
(logged in before they were enrolled, or their verification was lost), without logging in again. The code goes
through :func:`resilience.staff.otp.otp_verify` (limited per user; works with the primary or Redis down)."""

from __future__ import annotations

import django_otp
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from resilience.staff.forms import OTPVerifyForm
from resilience.staff.otp import user_has_confirmed_device


class OTPVerifyView(View):
    site: admin.AdminSite | None = None
    http_method_names = ["get", "post"]

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._page(request, OTPVerifyForm(request=request))

    def post(self, request: HttpRequest) -> HttpResponse:
        form = OTPVerifyForm(request.POST, request=request)
        if not form.is_valid():
            return self._page(request, form)
        request.session.cycle_key()  # more rights from here on: a new session cookie
        django_otp.login(request, form.device)
        messages.success(request, "Second factor verified: this session may operate the controls.")
        return redirect(self._next(request))

    def _page(self, request: HttpRequest, form: OTPVerifyForm) -> HttpResponse:
        assert self.site is not None
        context = {
            **self.site.each_context(request),
            "title": "Verify your second factor",
            "form": form,
            "next": self._next(request),
            "verified": request.user.is_verified(),
            "has_device": user_has_confirmed_device(request.user),
        }
        return TemplateResponse(request, "resilience/otp_verify.html", context)

    def _next(self, request: HttpRequest) -> str:
        assert self.site is not None
        wanted = request.POST.get("next") or request.GET.get("next") or ""
        if wanted and url_has_allowed_host_and_scheme(wanted, {request.get_host()}, request.is_secure()):
            return wanted
        return reverse(f"{self.site.name}:resilience_dashboard")
