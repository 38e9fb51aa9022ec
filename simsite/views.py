"""Serving stored media through the storage API (any Django storage backend)."""

from __future__ import annotations

import mimetypes

from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest


def media_serve(request: HttpRequest, path: str) -> FileResponse:
    try:
        if not path or not default_storage.exists(path):
            raise Http404(path)
        handle = default_storage.open(path, "rb")
    except SuspiciousFileOperation:
        raise Http404(path) from None
    content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    response = FileResponse(handle, content_type=content_type)
    # Names are content hashes: a name never changes content.
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    response["X-Content-Type-Options"] = "nosniff"
    return response
