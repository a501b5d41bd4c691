from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.api.views import api_route_not_found
from resilience.auth.views import jwks
from resilience.health import views as health
from resilience.observability.views import metrics

handler400 = "core.api.views.bad_request"
handler403 = "core.api.views.permission_denied"
handler404 = "core.api.views.not_found"
handler500 = "core.api.views.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("shop.urls")),
    re_path(r"^api/(?P<path>.*)$", api_route_not_found),
    re_path(r"^health/?$", health.health, name="health"),
    re_path(r"^health/live/?$", health.live, name="health-live"),
    re_path(r"^health/ready/?$", health.ready, name="health-ready"),
    re_path(r"^health/checks/?$", staff_member_required(health.checks_page), name="health-checks"),
    re_path(r"^metrics/?$", metrics, name="metrics"),  # loopback, METRICS_ALLOWED_NETWORKS or METRICS_TOKEN
    path(".well-known/jwks.json", jwks, name="jwks"),
]
