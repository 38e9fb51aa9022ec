"""The jobs page: index and import jobs, embedding models and their coverage."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts.access import needs
from accounts.pages import page_access
from catalog.selectors import product_import_list


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
