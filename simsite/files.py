"""Private files: stored apart from MEDIA_ROOT and served only by views that check who asks.

Signatures (references, questioned images) are biometric data: they are never under a URL a
front server or Django serves to anyone (``/media/``). ``PrivateStorage`` keeps them under
``PRIVATE_MEDIA_ROOT``; ``private_file_response`` answers an authorised request with the file,
streamed by Django or handed to the front server (``PRIVATE_MEDIA_ACCEL``).
"""

from __future__ import annotations

import mimetypes
from functools import cached_property
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.http import FileResponse, Http404, HttpResponse


class PrivateStorage(FileSystemStorage):
    """A file system storage under ``PRIVATE_MEDIA_ROOT``, with no public URL."""

    @cached_property
    def base_location(self) -> str:
        return self._value_or_setting(self._location, settings.PRIVATE_MEDIA_ROOT)

    def _clear_cached_properties(self, setting: str, **kwargs: Any) -> None:
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "PRIVATE_MEDIA_ROOT":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)

    def url(self, name: str | None) -> str:
        raise ValueError("Private files have no public URL: serve them with private_file_response.")


MAX_NAME_LENGTH = 1024


def resolve_under_root(root: Path, name: str | Path) -> Path | None:
    """``root / name`` with ``..`` and symlinks resolved, or None when that is not inside ``root``
    (itself resolved), or the name cannot be a path (empty, a NUL byte, over 1,024 characters,
    one the file system refuses). The one rule for every folder clients or admins may name a file
    or folder in: a symlink inside the root that leads out of it is outside."""
    text = str(name)
    if not text or "\x00" in text or len(text) > MAX_NAME_LENGTH:
        return None
    try:
        base = Path(root).resolve()
        resolved = (base / text).resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    return resolved if resolved.is_relative_to(base) else None


def shown_path(path: str | Path, *, roots: list[Path | None]) -> str:
    """A server folder as users may see it: relative to the first of ``roots`` that holds it
    ("<root>/..." shown as its relative path), else only its own name. Server paths are never
    shown: they tell an attacker the layout of the machine."""
    folder = Path(path)
    for root in roots:
        if root is not None and folder.is_relative_to(root):
            return str(folder.relative_to(root)) or "."
    return folder.name or "."


def private_storage() -> Storage:
    """The storage of private files (``STORAGES["private"]``); a callable, for model fields."""
    return storages["private"]


def private_file_response(*, name: str) -> HttpResponse:
    """The private file ``name``, for a request already authorised. Never cached by shared caches."""
    storage = private_storage()
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    try:
        if not name or not storage.exists(name):
            raise Http404("No such file.")
        accel = settings.PRIVATE_MEDIA_ACCEL
        if accel:
            response = HttpResponse(content_type=content_type)
            if accel == "x-sendfile":  # Apache mod_xsendfile: the file's path on the server
                response["X-Sendfile"] = str(Path(storage.path(name)))
            else:  # nginx: an internal location that aliases PRIVATE_MEDIA_ROOT
                response["X-Accel-Redirect"] = accel.removeprefix("x-accel-redirect:") + name
        else:
            response = FileResponse(storage.open(name, "rb"), content_type=content_type)
    except (SuspiciousFileOperation, ValueError, OSError):
        raise Http404("No such file.") from None
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
