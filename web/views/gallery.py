"""The image library's page; it reads and writes through the API."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from accounts.access import needs, read
from accounts.pages import page_access

GALLERY_PAGE_SIZE = 60  # thumbnails per page: a page of a 50,000-image library stays light

# Who may change the library from its page: upload, delete, generate features.
GALLERY_EDIT = needs("catalog.add_galleryimage", "catalog.delete_galleryimage", "search.add_indexjob")


@ensure_csrf_cookie  # the page's writes go to the API with the session and its CSRF token
@page_access(read("gallery"))
def gallery_page(request: HttpRequest) -> HttpResponse:
    """The image library: upload, browse, preview, select and delete, embed, search by image.
    The page reads and writes through the API (``/api/v1/gallery/``, ``/api/v1/search/``...)."""
    return render(request, "search/gallery.html", {"can_edit": GALLERY_EDIT.allows(request.user),
                                                   "page_size": GALLERY_PAGE_SIZE})  # fmt: skip
