"""Server-rendered search pages; they use the same selectors as the API."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from catalog.selectors import category_list, product_import_list
from catalog.services import image_from_source
from search.models import Collection
from search.querying import query_vectors
from search.selectors import active_model_key, items_by_ref, items_similar_to
from simsite.errors import ServiceError

DEFAULT_THRESHOLD_PERCENT = 70
RESULT_LIMIT = 24
GALLERY_PAGE_SIZE = 60  # thumbnails per page: a page of a 50,000-image library stays light


def _decimal(value: str | None, name: str) -> Decimal | None:
    if not value:
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ServiceError("invalid", f"{name} must be a number.", field=name) from None


def _threshold(value: str | None) -> float:
    if not value:
        return float(DEFAULT_THRESHOLD_PERCENT)
    try:
        percent = float(value)
    except ValueError:
        raise ServiceError("invalid", "threshold must be a number of percent (0-100).", field="threshold") from None
    if not 0 <= percent <= 100:
        raise ServiceError("invalid", "threshold must be between 0 and 100 percent.", field="threshold")
    return percent


# A read: the old tools' clients post here without a CSRF token, and nothing is written.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def catalog_search(request: HttpRequest) -> HttpResponse:
    """Find similar products by photo or image URL, above a threshold (percent, default 70)."""
    context: dict[str, object] = {
        "categories": category_list(),
        "threshold": DEFAULT_THRESHOLD_PERCENT,
        "form": request.POST if request.method == "POST" else {},
    }
    if request.method == "GET":
        return render(request, "search/catalog_search.html", context)
    try:
        threshold = _threshold(request.POST.get("threshold"))
        categories = [c for c in request.POST.getlist("category") if c]
        min_price = _decimal(request.POST.get("min_price"), "min_price")
        max_price = _decimal(request.POST.get("max_price"), "max_price")
        image = image_from_source(
            file=request.FILES.get("file"), url=(request.POST.get("image_url") or "").strip() or None, field="file"
        )
        model = active_model_key()
        vector = query_vectors(model=model, images=[image.data])[0]
    except ServiceError as error:
        context["error"] = error.message
        return render(request, "search/catalog_search.html", context, status=error.status_code)
    matches = items_similar_to(
        vector=vector, model=model, collection=Collection.PRODUCTS, k=RESULT_LIMIT, threshold=threshold / 100,
        categories=categories, min_price=min_price, max_price=max_price,
    )  # fmt: skip
    products = items_by_ref([match.ref for match in matches], model=model)
    context.update(
        threshold=threshold,
        searched=True,
        results=[
            {"product": products[m.ref], "similarity": m.similarity, "percent": round(m.similarity * 100, 1)}
            for m in matches
            if m.ref in products
        ],
    )
    return render(request, "search/catalog_search.html", context)


@ensure_csrf_cookie  # the page's writes go to the API with the session and its CSRF token
def gallery_page(request: HttpRequest) -> HttpResponse:
    """The image library: upload, browse, preview, select and delete, embed, search by image.
    The page reads and writes through the API (``/api/v1/gallery/``, ``/api/v1/search/``...)."""
    return render(request, "search/gallery.html", {"staff": request.user.is_staff, "page_size": GALLERY_PAGE_SIZE})


@ensure_csrf_cookie
def jobs_page(request: HttpRequest) -> HttpResponse:
    """Index and import jobs with progress, rate and ETA; embedding models with their coverage
    (the index jobs and models are read live from the API)."""
    return render(request, "search/jobs.html", {"staff": request.user.is_staff, "imports": product_import_list()})
