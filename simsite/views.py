"""Serving stored media through the storage API (any Django storage backend)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import FileResponse, Http404, HttpRequest

# What the pages and the API link to. Not served: CSV imports (imports/: whatever a back
# office uploaded), model weights, anything else that lands in the media folder.
_PUBLIC_PREFIXES = ("images/", "thumbs/", "signatures/")
_PUBLIC_PLOTS = ("models/", "evaluations/")


def _public(path: str) -> bool:
    return path.startswith(_PUBLIC_PREFIXES) or (path.startswith(_PUBLIC_PLOTS) and path.endswith(".png"))


def _inside_root(path: str) -> bool:
    """For files on disk: the file itself, symlinks resolved, is inside MEDIA_ROOT."""
    if not isinstance(default_storage, FileSystemStorage):
        return True
    root = Path(settings.MEDIA_ROOT).resolve()
    return Path(default_storage.path(path)).resolve().is_relative_to(root)


def media_serve(request: HttpRequest, path: str) -> FileResponse:
    try:
        if not path or "\x00" in path or not _public(path) or not _inside_root(path):
            raise Http404("No such file.")
        if not default_storage.exists(path):
            raise Http404("No such file.")
        handle = default_storage.open(path, "rb")
    except (SuspiciousFileOperation, ValueError, OSError):
        raise Http404("No such file.") from None
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    # Names are content hashes: a name never changes content.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    return response
