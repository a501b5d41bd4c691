from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from resilience.api.views import api_route_not_found
from resilience.auth.views import jwks
from resilience.health import views as health

handler400 = "resilience.api.views.bad_request"
handler403 = "resilience.api.views.permission_denied"
handler404 = "resilience.api.views.not_found"
handler500 = "resilience.api.views.server_error"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("shop.urls")),
    re_path(r"^api/(?P<path>.*)$", api_route_not_found),
    re_path(r"^health/live/?$", health.live, name="health-live"),
    path(".well-known/jwks.json", jwks, name="jwks"),
]
