"""Serving stored media through the storage API (any Django storage backend)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse

from accounts.access import AREAS, needs, read, readable_areas
from accounts.pages import page_refusal
from catalog.models import GalleryImage, Product
from simsite.files import resolve_under_root

# What the pages and the API link to. Not served: CSV imports (imports/: whatever a back
# office uploaded), model weights, anything else that lands in the media folder. Signatures
# are not in this storage at all (simsite.files).
_IMAGES = ("images/", "thumbs/")
_PLOTS = ("models/", "evaluations/")


def _inside_root(path: str) -> bool:
    """For files on disk: the file itself, symlinks resolved, is inside MEDIA_ROOT."""
    if not isinstance(default_storage, FileSystemStorage):
        return True
    return resolve_under_root(Path(settings.MEDIA_ROOT), path) is not None


def _image_areas(path: str) -> set[str]:
    """The collections whose items use this image or its thumbnail (names are content hashes)."""
    sha256 = Path(path).stem
    areas = set()
    if Product.objects.filter(sha256=sha256).exists():
        areas.add("catalog")
    if GalleryImage.objects.filter(sha256=sha256).exists():
        areas.add("gallery")
    return areas


def _refusal(request: HttpRequest, path: str) -> HttpResponse | None:
    """Images follow their collections' rules; training plots need a login that may see models."""
    if path.startswith(_PLOTS):
        if not path.endswith(".png"):
            raise Http404("No such file.")
        user = request.user
        if user.has_perm("search.view_trainedmodel") or user.has_perm("signatures.view_signatureencoder"):
            return None
        return page_refusal(request, needs("search.view_trainedmodel"))
    if not path.startswith(_IMAGES):
        raise Http404("No such file.")
    if set(AREAS) <= settings.PUBLIC_READ:
        return None
    areas = _image_areas(path)
    if areas & readable_areas(request.user):
        return None
    if not areas:
        raise Http404("No such file.")
    return page_refusal(request, read(sorted(areas)[0]))


def media_serve(request: HttpRequest, path: str) -> HttpResponse:
    if not path or "\x00" in path:
        raise Http404("No such file.")
    refused = _refusal(request, path)
    if refused is not None:
        return refused
    try:
        if not _inside_root(path) or not default_storage.exists(path):
            raise Http404("No such file.")
        handle = default_storage.open(path, "rb")
    except (SuspiciousFileOperation, ValueError, OSError):
        raise Http404("No such file.") from None
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    # Names are content hashes: a name never changes content. Shared caches keep only what
    # everyone may see.
    public = path.startswith(_IMAGES) and set(AREAS) <= settings.PUBLIC_READ
    response["Cache-Control"] = f"{'public' if public else 'private'}, max-age=31536000, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    return response
