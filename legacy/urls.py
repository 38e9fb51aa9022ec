"""Routes of the earlier Flask tools (README, "Routes of the earlier tools"), at their old
paths so their clients work unchanged."""

from django.urls import path

from legacy import gallery, search, signatures
from web.views.catalog import catalog_search

urlpatterns = [
    path("api/images", gallery.SeedImageListApi.as_view()),
    path("api/upload-image", gallery.SeedImageUploadApi.as_view()),
    path("api/delete-image/<path:filename>", gallery.SeedImageDeleteApi.as_view()),
    path("images/thumb/<path:filename>", gallery.SeedThumbnailApi.as_view()),
    path("images/<path:filename>", gallery.SeedImageFileApi.as_view()),
    path("api/search", search.SeedSearchApi.as_view()),
    path("api/generate-features", search.SeedGenerateFeaturesApi.as_view()),
    path("api/check-features", search.SeedCheckFeaturesApi.as_view()),
    # The catalog search tool's form posted here: the home page answers it (web/views/catalog.py).
    path("search", catalog_search, name="catalog-search-post"),
    path("api/findSignatureSimilarity", signatures.SeedSignatureSimilarityApi.as_view()),
]
