"""The duplicates review: near-duplicate groups, keep one copy or mark them as not duplicates."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.access import needs
from accounts.models import AuditEntry
from accounts.pages import page_access, page_refusal, page_throttle
from accounts.services import audit_record
from search.items import KINDS, ItemRef
from search.models import Collection
from search.selectors.duplicates import KEEP_RULES, duplicate_groups, duplicate_groups_detailed, duplicate_scan_latest
from search.selectors.embedding_models import active_model_key, model_coverage
from search.selectors.embeddings import embedding_stamp
from search.services.duplicates import duplicates_dismiss, duplicates_keep, duplicates_scan_refresh
from simsite.errors import ServiceError
from simsite.replicas import reads_from_replica

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
