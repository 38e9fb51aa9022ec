from django.urls import path

from search.apis import catalog as apis

# The catalog's API, named as the catalog's (see search/apis/catalog.py for why it lives here).
app_name = "catalog"
urlpatterns = [
    path("products/", apis.ProductListApi.as_view(), name="product-list"),
    path("products/import/", apis.ProductImportApi.as_view(), name="product-import"),
    path("products/imports/<int:pk>/", apis.ProductImportDetailApi.as_view(), name="product-import-detail"),
    path("products/imports/<int:pk>/events/", apis.ProductImportEventsApi.as_view(), name="product-import-events"),
    path("products/imports/<int:pk>/cancel/", apis.ProductImportCancelApi.as_view(), name="product-import-cancel"),
    path("products/<int:pk>/", apis.ProductDetailApi.as_view(), name="product-detail"),
    path("products/<int:pk>/thumbnail/", apis.ProductThumbnailApi.as_view(), name="product-thumbnail"),
    path("categories/", apis.CategoryListApi.as_view(), name="category-list"),
    path("gallery/", apis.GalleryListApi.as_view(), name="gallery-list"),
    path("gallery/delete/", apis.GalleryDeleteApi.as_view(), name="gallery-delete"),
    path("gallery/<int:pk>/", apis.GalleryDetailApi.as_view(), name="gallery-detail"),
    path("gallery/<int:pk>/thumbnail/", apis.GalleryThumbnailApi.as_view(), name="gallery-thumbnail"),
]
