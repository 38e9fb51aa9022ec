from csp.decorators import csp_exempt
from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from simsite import apis, views

api_v1 = [
    path("health/", apis.HealthApi.as_view(), name="health"),
    path("auth/token/", apis.TokenApi.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI starts itself with an inline script and style: the one page without the CSP.
    path("docs/", csp_exempt()(SpectacularSwaggerView.as_view(url_name="schema")), name="docs"),
    path("", include("search.catalog_urls")),
    path("", include("search.urls")),
    path("", include("signatures.urls")),
    path("", include("accounts.api_urls")),
]

urlpatterns = [
    path("", include("web.urls")),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("", include("legacy.urls")),  # the earlier tools' routes, at their old paths
]

if settings.SERVE_MEDIA:
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{media_prefix}(?P<path>.+)$", views.media_serve, name="media")]

handler400 = "simsite.drf.json_400"
handler403 = "simsite.drf.json_403"
handler404 = "simsite.drf.json_404"
handler500 = "simsite.drf.json_500"
