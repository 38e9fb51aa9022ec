from csp.decorators import csp_exempt
from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog import seed_apis as catalog_seed
from search import seed_apis as search_seed
from search import views as search_views
from signatures import seed_apis as signature_seed
from signatures import views as signature_views
from simsite import apis, views

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
    path("search", search_views.catalog_search, name="catalog-search-post"),
    path("api/findSignatureSimilarity", signature_seed.SeedSignatureSimilarityApi.as_view()),
]

urlpatterns = [
    path("", search_views.catalog_search, name="catalog-search"),
    path("catalog/", search_views.catalog_page, name="catalog-page"),
    path("catalog/<int:pk>/", search_views.product_page, name="product-page"),
    path("gallery/", search_views.gallery_page, name="gallery-page"),
    path("search/", search_views.search_page, name="search-page"),
    path("jobs/", search_views.jobs_page, name="jobs-page"),
    path("duplicates/", search_views.duplicates_page, name="duplicates-page"),
    path("signatures/", signature_views.signatures_page, name="signatures-page"),
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
