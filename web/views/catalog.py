"""The catalog's pages: the home page (search by photo or image URL, with the latest gallery
images), the product grid and a product with its most similar products. They use the same
selectors as the API."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from accounts.access import read, readable_areas
from accounts.pages import page_access, page_throttle
from catalog.models import Product
from catalog.selectors import category_list, gallery_image_list, product_list
from catalog.services import image_from_source
from search.items import PRODUCT, ItemRef
from search.models import Collection
from search.querying import item_vector, query_decode_side, query_vectors
from search.selectors.embedding_models import active_model_key
from search.selectors.embeddings import products_with_embedded_flag
from search.selectors.neighbours import items_similar_to
from search.services.tuning import search_queries_record
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica

DEFAULT_THRESHOLD_PERCENT = 70
RESULT_LIMIT = 24
HOME_GALLERY_SHOWN = 12
CATALOG_PAGE_SIZE = 24
SIMILAR_SHOWN = 8


def _decimal(value: str | None, name: str) -> Decimal | None:
    """A price filter, held to what a product's price can be (as the API's serializers do):
    "1e200000", "NaN" or "-1" are refused, not sent to the database."""
    price = Product._meta.get_field("price")
    field = forms.DecimalField(max_digits=price.max_digits, decimal_places=price.decimal_places, min_value=0,
                               required=False)  # fmt: skip
    try:
        return field.clean(value)
    except ValidationError as error:
        raise ServiceError("invalid", f"{name} must be a number: {' '.join(error.messages)}", field=name) from None


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
@page_access(read("catalog"))
@page_throttle("search", methods=("POST",))  # a model pass or a URL fetch, as the API's search
@reads_from_replica
def catalog_search(request: HttpRequest) -> HttpResponse:
    """Find similar products by photo or image URL, above a threshold (percent, default 70)."""
    context: dict[str, object] = {
        "categories": category_list(),
        "threshold": DEFAULT_THRESHOLD_PERCENT,
        "form": request.POST if request.method == "POST" else {},
    }
    if "gallery" in readable_areas(request.user):
        # The home page also shows the image library and search, as the earlier gallery tool did.
        images = gallery_image_list()
        context["gallery"] = {"count": images.count(), "latest": images[:HOME_GALLERY_SHOWN]}
    if request.method == "GET":
        return render(request, "search/catalog_search.html", context)
    try:
        threshold = _threshold(request.POST.get("threshold"))
        categories = [c for c in request.POST.getlist("category") if c]
        min_price = _decimal(request.POST.get("min_price"), "min_price")
        max_price = _decimal(request.POST.get("max_price"), "max_price")
        model = active_model_key(recent=True)
        image = image_from_source(
            file=request.FILES.get("file"), url=(request.POST.get("image_url") or "").strip() or None, field="file",
            decode_min_side=query_decode_side(model=model),
        )  # fmt: skip
        vector = query_vectors(model=model, images=[image])[0]
        search_queries_record(model=model, vectors=[vector])
    except ServiceError as error:
        context["error"] = error.message
        return render(request, "search/catalog_search.html", context, status=error.status_code)
    matches = items_similar_to(
        vector=vector, model=model, collection=Collection.PRODUCTS, k=RESULT_LIMIT, threshold=threshold / 100,
        categories=categories, min_price=min_price, max_price=max_price, with_items=True,
    )  # fmt: skip
    context.update(
        threshold=threshold,
        searched=True,
        results=[
            {"product": m.item, "similarity": m.similarity, "percent": round(m.similarity * 100, 1)} for m in matches
        ],
    )
    return render(request, "search/catalog_search.html", context)


@page_access(read("catalog"))
@reads_from_replica
def catalog_page(request: HttpRequest) -> HttpResponse:
    """The product grid: name search, category and price filters, pages."""
    context: dict[str, object] = {"categories": category_list(), "form": request.GET}
    try:
        min_price = _decimal(request.GET.get("min_price"), "min_price")
        max_price = _decimal(request.GET.get("max_price"), "max_price")
    except ServiceError as error:
        context["error"] = error.message
        min_price = max_price = None
    chosen = [c for c in request.GET.getlist("category") if c]
    products = products_with_embedded_flag(
        product_list(category=chosen, min_price=min_price, max_price=max_price, q=request.GET.get("q") or None)
    ).order_by("name", "pk")
    page = Paginator(products, CATALOG_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context.update(page=page, chosen=chosen, query=query.urlencode())
    return render(request, "search/catalog.html", context, status=400 if "error" in context else 200)


@page_access(read("catalog"))
@page_throttle("search")  # it may embed the product's image to find its neighbours
@reads_from_replica
def product_page(request: HttpRequest, pk: int) -> HttpResponse:
    """One product: its image and details, and the products most similar to it."""
    product = get_object_or_404(products_with_embedded_flag(product_list()), pk=pk)
    context: dict[str, object] = {"product": product, "similar": []}
    model = active_model_key()
    try:
        vector = item_vector(model=model, ref=ItemRef(PRODUCT.name, product.pk))
    except ServiceError as error:
        context["similar_error"] = error.message
    else:
        matches = items_similar_to(vector=vector, model=model, collection=Collection.PRODUCTS, k=SIMILAR_SHOWN,
                                   exclude=ItemRef(PRODUCT.name, product.pk), with_items=True)  # fmt: skip
        context["similar"] = [{"product": m.item, "percent": round(m.similarity * 100, 1)} for m in matches]
    context["model"] = model
    return render(request, "search/product.html", context)
