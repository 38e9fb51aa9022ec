"""The search page: by an image file, an image URL, a product or a gallery image."""

from __future__ import annotations

from csp.decorators import csp_update
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts.access import read, readable_areas
from accounts.pages import page_refusal
from catalog.selectors import category_list
from search.items import areas_of
from search.selectors.embedding_models import active_model_key, model_coverage
from simsite.replicas import reads_from_replica


@ensure_csrf_cookie
@csp_update({"img-src": ["http:", "https:"]})  # the preview of a pasted image URL, before the search
@reads_from_replica
def search_page(request: HttpRequest) -> HttpResponse:
    """Search by an image file, an image URL, or a product or gallery image (``?product=ID``,
    ``?gallery_image=ID``), with k, a minimum similarity, the collection and product filters;
    says how much of the collection is embedded (the page calls ``POST /api/v1/search/``)."""
    areas = readable_areas(request.user)
    if not areas:
        return page_refusal(request, read("catalog"))
    model = active_model_key()
    rows = [row for row in model_coverage(model=model) if areas_of(row["collection"]) <= areas]
    categories = category_list() if "catalog" in areas else []
    return render(request, "search/search.html", {"categories": categories, "coverage": {"model": model, "rows": rows}})
