from csp.decorators import csp_exempt
from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog import seed_apis as catalog_seed
from search import seed_apis as search_seed
from signatures import seed_apis as signature_seed
from simsite import apis, views
from web.views.catalog import catalog_search

api_v1 = [
    path("health/", apis.HealthApi.as_view(), name="health"),
    path("auth/token/", apis.TokenApi.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI starts itself with an inline script and style: the one page without the CSP.
    path("docs/", csp_exempt()(SpectacularSwaggerView.as_view(url_name="schema")), name="docs"),
    path("", include("catalog.urls")),
    path("", include("search.urls")),
    path("", include("signatures.urls")),
    path("", include("accounts.api_urls")),
]

# Routes of the earlier Flask tools (see API.md, "Seed-compatible routes").
seed_routes = [
    path("api/images", catalog_seed.SeedImageListApi.as_view()),
    path("api/upload-image", catalog_seed.SeedImageUploadApi.as_view()),
    path("api/delete-image/<path:filename>", catalog_seed.SeedImageDeleteApi.as_view()),
    path("images/thumb/<path:filename>", catalog_seed.SeedThumbnailApi.as_view()),
    path("images/<path:filename>", catalog_seed.SeedImageFileApi.as_view()),
    path("api/search", search_seed.SeedSearchApi.as_view()),
    path("api/generate-features", search_seed.SeedGenerateFeaturesApi.as_view()),
    path("api/check-features", search_seed.SeedCheckFeaturesApi.as_view()),
    path("search", catalog_search, name="catalog-search-post"),
    path("api/findSignatureSimilarity", signature_seed.SeedSignatureSimilarityApi.as_view()),
]

urlpatterns = [
    path("", include("web.urls")),
    path("accounts/", include("accounts.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    *seed_routes,
]

if settings.SERVE_MEDIA:
    media_prefix = settings.MEDIA_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{media_prefix}(?P<path>.+)$", views.media_serve, name="media")]

handler400 = "simsite.drf.json_400"
handler403 = "simsite.drf.json_403"
handler404 = "simsite.drf.json_404"
handler500 = "simsite.drf.json_500"
