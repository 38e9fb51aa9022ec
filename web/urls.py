"""The server-rendered pages. Route names are unnamespaced: the templates and the pages'
modules reverse them as they are (``{% url 'catalog-page' %}``)."""

from django.urls import path

from web.views import catalog, duplicates, gallery, jobs, search, signatures

urlpatterns = [
    path("", catalog.catalog_search, name="catalog-search"),
    path("catalog/", catalog.catalog_page, name="catalog-page"),
    path("catalog/<int:pk>/", catalog.product_page, name="product-page"),
    path("gallery/", gallery.gallery_page, name="gallery-page"),
    path("search/", search.search_page, name="search-page"),
    path("jobs/", jobs.jobs_page, name="jobs-page"),
    path("duplicates/", duplicates.duplicates_page, name="duplicates-page"),
    path("signatures/", signatures.signatures_page, name="signatures-page"),
]
