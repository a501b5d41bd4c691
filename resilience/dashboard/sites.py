"""Bulwark's admin site: Django's, branded, with the resilience dashboard in front of the ``resilience`` app
index (``/admin/resilience/``) and its live-refresh, state and control endpoints beside it."""

from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, path


class BulwarkAdminSite(admin.AdminSite):
    site_header = "Bulwark administration"
    site_title = "Bulwark admin"
    index_title = "Operations"

    def get_urls(self) -> list[URLResolver | URLPattern]:
        from resilience.dashboard import views  # they import ModelAdmins, which register on this very site

        dashboard = [
            path("resilience/", self.admin_view(views.DashboardView.as_view(site=self)), name="resilience_dashboard"),
            path("resilience/panels/", self.admin_view(views.panels), name="resilience_panels"),
            path("resilience/state.json", self.admin_view(views.state_json), name="resilience_state"),
            path(
                "resilience/control/",
                self.admin_view(views.ControlView.as_view(site=self)),
                name="resilience_control",
            ),
        ]
        return dashboard + super().get_urls()  # first: it takes the place of the app index for "resilience"
