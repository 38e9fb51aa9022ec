"""Content-addressed image files and their cached thumbnails, through Django's storage API."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import IO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage
from django.db import transaction
from PIL import Image

from catalog.images import IntakeImage, image_open_rgb
from catalog.models import GalleryImage, Product
from simsite.errors import ServiceError
from simsite.stored_files import content_lock  # writers here and in signatures take it from this module


def image_name_for(*, sha256: str, extension: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.{extension}"


def thumbnail_name_for(*, sha256: str) -> str:
    return f"thumbs/{sha256[:2]}/{sha256}.jpg"


def content_save(*, name: str, data: bytes, storage: Storage | None = None) -> str:
    """Store content-addressed bytes under ``name`` once (a second copy is never made), in
    ``storage`` (default: the media storage).

    Call it under ``content_lock`` in the transaction that saves the row using the file.
    """
    storage = storage or default_storage
    if not storage.exists(name):
        saved = storage.save(name, ContentFile(data))
        if saved != name:  # a concurrent writer stored the same content first
            storage.delete(saved)
    return name


def content_discard(*, names: Iterable[str], sha256: str, in_use: Callable[[], bool],
                    storage: Storage | None = None) -> None:  # fmt: skip
    """Delete the files of one content hash unless ``in_use()`` says a row still needs them
    (asked under ``content_lock``, so a row being created with the same bytes is seen)."""
    storage = storage or default_storage
    with transaction.atomic():
        content_lock(sha256=sha256)
        if in_use():
            return
        for path in names:
            if storage.exists(path):
                storage.delete(path)


def image_store(*, image: IntakeImage) -> str:
    """Store a catalog image under its sha256 and return the storage name (see ``content_save``)."""
    return content_save(name=image_name_for(sha256=image.sha256, extension=image.extension), data=image.data)


def image_discard(*, name: str, sha256: str) -> None:
    """Delete a stored image and its thumbnail unless another row still uses them."""
    content_discard(
        names=[name, thumbnail_name_for(sha256=sha256)],
        sha256=sha256,
        in_use=lambda: Product.objects.filter(image=name).exists() or GalleryImage.objects.filter(file=name).exists(),
    )


def stored_open(*, name: str) -> IO[bytes]:
    """A stored image, open for reading; 404 ``file_missing`` if the file went from the storage
    behind the database's back (a restored backup, a disk cleaned by hand)."""
    try:
        return default_storage.open(name, "rb")
    except FileNotFoundError:
        raise ServiceError("file_missing", "The stored image file is missing from the media storage; upload the "
                           "image again.", status_code=404) from None  # fmt: skip


def stored_read(*, name: str) -> bytes:
    with stored_open(name=name) as handle:
        return handle.read()


def thumbnail_get(*, name: str, sha256: str) -> str:
    """Return the storage name of the 200x200 JPEG thumbnail, making it on first use."""
    thumb_name = thumbnail_name_for(sha256=sha256)
    if default_storage.exists(thumb_name):
        return thumb_name
    picture = image_open_rgb(stored_read(name=name))
    size = settings.THUMBNAIL_SIZE
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(picture, ((size - picture.width) // 2, (size - picture.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=settings.THUMBNAIL_QUALITY, optimize=True)
    saved = default_storage.save(thumb_name, ContentFile(buffer.getvalue()))
    if saved != thumb_name:
        default_storage.delete(saved)
    return thumb_name
