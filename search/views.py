"""Server-rendered search pages; they use the same selectors as the API."""

from __future__ import annotations

from decimal import Decimal

from csp.decorators import csp_update
from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from django.views.decorators.http import require_http_methods

from accounts.access import needs, read, readable_areas
from accounts.models import AuditEntry
from accounts.pages import page_access, page_refusal, page_throttle
from accounts.services import audit_record
from catalog.models import Product
from catalog.selectors import category_list, gallery_image_list, product_import_list, product_list
from catalog.services import image_from_source
from search.items import KINDS, PRODUCT, ItemRef
from search.models import Collection
from search.querying import item_vector, query_decode_side, query_vectors
from search.selectors.duplicates import KEEP_RULES, duplicate_groups, duplicate_groups_detailed, duplicate_scan_latest
from search.selectors.embedding_models import active_model_key, model_coverage
from search.selectors.embeddings import embedding_stamp, products_with_embedded_flag
from search.selectors.neighbours import items_similar_to
from search.services.duplicates import duplicates_dismiss, duplicates_keep, duplicates_scan_refresh
from search.services.tuning import search_queries_record
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica

DEFAULT_THRESHOLD_PERCENT = 70
RESULT_LIMIT = 24
HOME_GALLERY_SHOWN = 12
GALLERY_PAGE_SIZE = 60  # thumbnails per page: a page of a 50,000-image library stays light
COLLECTION_AREAS = {Collection.PRODUCTS: "catalog", Collection.GALLERY: "gallery"}


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


# Who may change the library from its page: upload, delete, generate features.
GALLERY_EDIT = needs("catalog.add_galleryimage", "catalog.delete_galleryimage", "search.add_indexjob")


@ensure_csrf_cookie  # the page's writes go to the API with the session and its CSRF token
@page_access(read("gallery"))
def gallery_page(request: HttpRequest) -> HttpResponse:
    """The image library: upload, browse, preview, select and delete, embed, search by image.
    The page reads and writes through the API (``/api/v1/gallery/``, ``/api/v1/search/``...)."""
    return render(request, "search/gallery.html", {"can_edit": GALLERY_EDIT.allows(request.user),
                                                   "page_size": GALLERY_PAGE_SIZE})  # fmt: skip


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
    rows = [row for row in model_coverage(model=model) if COLLECTION_AREAS[row["collection"]] in areas]
    categories = category_list() if "catalog" in areas else []
    return render(request, "search/search.html", {"categories": categories, "coverage": {"model": model, "rows": rows}})


@ensure_csrf_cookie
@page_access(needs("search.view_indexjob"))
def jobs_page(request: HttpRequest) -> HttpResponse:
    """Index and import jobs with progress, rate and ETA; embedding models with their coverage
    (the index jobs and models are read live from the API)."""
    user = request.user
    context = {
        "imports": product_import_list() if user.has_perm("catalog.view_productimport") else [],
        "can_index": user.has_perm("search.add_indexjob") and user.has_perm("search.change_indexjob"),
        "can_activate": user.has_perm("search.change_activemodel"),
        "can_cancel_import": user.has_perm("catalog.change_productimport"),
    }
    return render(request, "search/jobs.html", context)


CATALOG_PAGE_SIZE = 24
SIMILAR_SHOWN = 8


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


DUPLICATES_PAGE_SIZE = 20
KEEP_RULE_LABELS = {"resolution": "Largest resolution", "size": "Largest file", "oldest": "Oldest", "newest": "Newest"}
DUPLICATES_DEFAULT_PERCENT = 95


def _duplicates_options(query: object) -> tuple[dict[str, object], str | None]:
    """The review's collection, threshold (percent), keep rule and page from the query string;
    a bad value falls back to its default with a message naming it."""
    options: dict[str, object] = {
        "collection": query.get("collection") or Collection.GALLERY,
        "threshold": DUPLICATES_DEFAULT_PERCENT,
        "keep": query.get("keep") or settings.DUPLICATES_KEEP_RULE,
        "page": query.get("page") or 1,
    }
    problems = []
    if options["collection"] not in Collection.values:
        problems.append(f"collection must be one of {', '.join(Collection.values)}")
        options["collection"] = Collection.GALLERY
    if options["keep"] not in KEEP_RULES:
        problems.append(f"keep must be one of {', '.join(KEEP_RULES)}")
        options["keep"] = settings.DUPLICATES_KEEP_RULE
    try:
        percent = float(query.get("threshold") or DUPLICATES_DEFAULT_PERCENT)
        if not 50 <= percent <= 100:
            raise ValueError
        options["threshold"] = percent
    except ValueError:
        problems.append("threshold must be a percent between 50 and 100")
    return options, ("; ".join(problems).capitalize() + ".") if problems else None


def _ref(value: str) -> ItemRef:
    kind, _, pk = value.partition(":")
    if kind not in KINDS or not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
        raise ServiceError("invalid", f"Not an item: {value[:40]!r}.", field="groups")
    return ItemRef(kind, int(pk))


def _duplicates_resolve(request: HttpRequest) -> str:
    """Apply the review form's action to the groups it names; returns what was done."""
    if request.POST.get("group"):  # one group's own button: "keep:3"
        action, _, number = request.POST["group"].partition(":")
        chosen = [number]
    else:  # a bulk button, for the selected groups
        action, chosen = request.POST.get("action", ""), request.POST.getlist("selected")
    if not chosen:
        raise ServiceError("invalid", "Select at least one group.", field="groups")
    groups = []
    for number in chosen[:500]:
        members = [_ref(value) for value in request.POST.get(f"members-{number}", "").split(",") if value]
        keep = request.POST.get(f"keep-{number}")
        groups.append((_ref(keep) if keep else None, members))
    if action == "dismiss":
        remembered = duplicates_dismiss(groups=[members for _, members in groups], user=request.user)
        audit_record(user=request.user, action=AuditEntry.Action.DUPLICATES_DISMISS, target=f"{len(groups)} groups",
                     detail={"remembered": remembered}, request=request)  # fmt: skip
        return f"{remembered} group{'s' if remembered != 1 else ''} marked as not duplicates."
    if action == "keep":
        if not DUPLICATES_KEEP.allows(request.user):
            raise ServiceError("permission_denied", "You may not delete the copies (catalog_editor role).")
        if any(keep is None or keep not in members for keep, members in groups):
            raise ServiceError("invalid", "Choose the copy to keep in each group.", field="groups")
        chosen = [(keep, [ref for ref in members if ref != keep]) for keep, members in groups]
        deleted = duplicates_keep(groups=chosen)
        audit_record(user=request.user, action=AuditEntry.Action.DUPLICATES_KEEP, target=f"{len(groups)} groups",
                     detail={"deleted": deleted, "groups": [{"keep": str(keep), "delete": [str(ref) for ref in refs]}
                                                            for keep, refs in chosen[:100]]},
                     request=request)  # fmt: skip
        return f"Kept one copy of {len(groups)} group{'s' if len(groups) != 1 else ''}; deleted {deleted}."
    raise ServiceError("invalid", "Unknown action.", field="action")


# Resolving duplicates from the page: marking them as not duplicates, and keeping one copy
# (deleting the others).
DUPLICATES_RESOLVE = needs("search.add_duplicatedismissal")
DUPLICATES_KEEP = needs("search.add_duplicatedismissal", "catalog.delete_product", "catalog.delete_galleryimage")


@require_http_methods(["GET", "POST"])
@page_access(needs("search.view_duplicatepair"))
@page_throttle("duplicates", methods=("GET",))  # finding the groups runs statements of up to 20 s
def duplicates_page(request: HttpRequest) -> HttpResponse:
    """Near-duplicate groups, a page at a time, the copy to keep pre-selected by a rule; editors
    keep one copy (deleting the others) or mark a group as not duplicates, per group or for
    every selected group. Posts back here and redirects to the same page (no resubmission)."""
    if request.method == "POST":
        if refused := page_refusal(request, DUPLICATES_RESOLVE):
            return refused
        try:
            messages.success(request, _duplicates_resolve(request))
        except ServiceError as error:
            messages.error(request, error.message)
        return redirect(request.get_full_path())
    return reads_from_replica(_duplicates_show)(request)


def _duplicates_show(request: HttpRequest) -> HttpResponse:
    options, problem = _duplicates_options(request.GET)
    model = active_model_key()
    context: dict[str, object] = {"options": options, "rules": KEEP_RULE_LABELS, "collections": Collection.choices,
                                  "rule_text": KEEP_RULES[options["keep"]], "model": model, "error": problem,
                                  "staff": DUPLICATES_RESOLVE.allows(request.user)}  # fmt: skip
    try:
        stamp = embedding_stamp(model=model)
        running = duplicates_scan_refresh(model=model, stamp=stamp)  # large libraries: found in the background
        if stamp["count"] > settings.DUPLICATES_SYNC_MAX_VECTORS:
            context["scan"] = {"running": running, "finished": duplicate_scan_latest(model=model, finished=True)}
        groups = duplicate_groups(model=model, collection=options["collection"], threshold=options["threshold"] / 100,
                                  stamp=stamp)  # fmt: skip
    except ServiceError as error:
        context["error"] = error.message
        return render(request, "search/duplicates.html", context, status=error.status_code)
    page = Paginator(groups, DUPLICATES_PAGE_SIZE).get_page(options["page"])
    query = request.GET.copy()
    query.pop("page", None)
    context.update(page=page, groups=duplicate_groups_detailed(page.object_list, rule=options["keep"]),
                   query=query.urlencode(), coverage=model_coverage(model=model))  # fmt: skip
    return render(request, "search/duplicates.html", context, status=400 if problem else 200)
