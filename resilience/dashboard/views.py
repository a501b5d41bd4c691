"""The dashboard's views. GETs write nothing (their reads go through the router: a replica while the primary is
down); the one POST applies a control after CSRF, the operate permission, a reason, and — for the dangerous
ones — a confirmation page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views import View

from resilience.dashboard.controls import Control, ControlForm, ControlRefused, control_apply
from resilience.dashboard.permissions import may_operate
from resilience.dashboard.selectors import dashboard_state

REFRESH_SECONDS = 2


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


class DashboardView(View):
    site: admin.AdminSite | None = None
    http_method_names = ["get", "head"]

    def get(self, request: HttpRequest) -> HttpResponse:
        assert self.site is not None
        context = {
            **self.site.each_context(request),
            "title": "Resilience",
            "state": dashboard_state(),
            "may_operate": may_operate(request),
            "refresh_seconds": REFRESH_SECONDS,
            "records": self.site.get_app_list(request, "resilience"),
        }
        return _no_store(TemplateResponse(request, "resilience/dashboard.html", context))


def panels(request: HttpRequest) -> HttpResponse:
    """The live part of the page, re-rendered every few seconds by the dashboard's script."""
    context = {"state": dashboard_state(), "may_operate": may_operate(request)}
    return _no_store(TemplateResponse(request, "resilience/_panels.html", context))


def state_json(request: HttpRequest) -> HttpResponse:
    return _no_store(JsonResponse(dashboard_state()))


class ControlView(View):
    """POST a control: refused without the permission; confirmed first when dangerous; audited by the service."""

    site: admin.AdminSite | None = None
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        assert self.site is not None
        if not may_operate(request):
            raise PermissionDenied(
                "operating the resilience controls needs the resilience.operate_controls permission and a session "
                "verified with a second factor"
            )
        dashboard = reverse(f"{self.site.name}:resilience_dashboard")
        form = ControlForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(f"{field}: {' '.join(errs)}" for field, errs in form.errors.items())
            messages.error(request, f"Nothing changed: {errors}")
            return redirect(dashboard)
        control = Control.from_form(form)
        if control.dangerous and not form.cleaned_data["confirmed"]:
            context = {**self.site.each_context(request), "title": "Confirm", "control": control}
            return TemplateResponse(request, "resilience/confirm.html", context)
        try:
            done = control_apply(control, actor=request.user)
        except ControlRefused as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, done)
        return redirect(dashboard)

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        assert self.site is not None
        return redirect(reverse(f"{self.site.name}:resilience_dashboard"))
