"""Image intake: the one gate every image passes, whatever the entry point.

`image_validate` decides whether bytes are an acceptable image (and says why not);
`image_open_rgb` turns accepted bytes into the upright RGB picture models and thumbnails use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO

import numpy as np
from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from simsite.errors import ServiceError

# Pillow format name -> the extension a stored file gets.
FORMAT_EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "BMP": "bmp", "WEBP": "webp"}
ALLOWED_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "bmp", "webp"}
_MARKUP_PREFIXES = (b"<", b"\xef\xbb\xbf<")


class ImageRejected(ServiceError):
    """Bytes that are not an acceptable image; nothing has been stored."""


@dataclass(frozen=True)
class IntakeImage:
    data: bytes
    sha256: str
    format: str
    width: int
    height: int
    # With ``decode_min_side``: the image as the models read it (upright RGB, a JPEG decoded
    # at reduced scale), kept from validation so that a query is decoded once.
    decoded: Image.Image | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def extension(self) -> str:
        return FORMAT_EXTENSIONS[self.format]


def read_limited(stream: IO[bytes], *, field: str = "image") -> bytes:
    """Read at most the upload limit from a stream, refusing anything larger."""
    limit = settings.IMAGE_MAX_UPLOAD_BYTES
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImageRejected("file_too_large", f"Image is larger than {limit // (1024 * 1024)} MB.", field=field)
    return data


def image_validate(
    *, data: bytes, filename: str | None = None, field: str = "image", decode_min_side: int | None = None
) -> IntakeImage:
    """Check that ``data`` is a complete, acceptable raster image; raise ImageRejected if not.

    Refuses: empty or over-size files, extensions outside the allowed list, SVG/HTML and
    other markup, anything Pillow cannot identify as PNG/JPEG/GIF/BMP/WebP, pixel counts over
    ``IMAGE_MAX_PIXELS`` (decompression bombs, checked before decoding) and files that do not
    decode fully (truncated or corrupt).
    """
    name = PurePath(filename).name if filename else None
    label = f"'{name}'" if name else "The file"
    if name is not None:
        extension = PurePath(name).suffix.lower().lstrip(".")
        if extension not in ALLOWED_EXTENSIONS:
            raise ImageRejected(
                "unsupported_extension",
                f"{label} has extension '.{extension}'; allowed: {', '.join(sorted(ALLOWED_EXTENSIONS))}.",
                field=field,
            )
    if not data:
        raise ImageRejected("empty_file", f"{label} is empty.", field=field)
    limit = settings.IMAGE_MAX_UPLOAD_BYTES
    if len(data) > limit:
        raise ImageRejected("file_too_large", f"{label} is larger than {limit // (1024 * 1024)} MB.", field=field)
    if data.lstrip().startswith(_MARKUP_PREFIXES):
        raise ImageRejected("markup_not_allowed", f"{label} is SVG/HTML/XML markup, not a raster image.", field=field)
    max_pixels = settings.IMAGE_MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(FORMAT_EXTENSIONS))
    except Image.DecompressionBombError:
        raise ImageRejected(
            "decompression_bomb", f"{label} has more than {max_pixels:,} pixels.", field=field
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRejected(
            "not_an_image", f"{label} is not a PNG, JPEG, GIF, BMP or WebP image.", field=field
        ) from None
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                "decompression_bomb",
                f"{label} is {width}x{height} pixels; the limit is {max_pixels:,} pixels.",
                field=field,
            )
        if width == 0 or height == 0:
            raise ImageRejected("not_an_image", f"{label} has no pixels.", field=field)
        image_format = image.format
        if decode_min_side and image_format == "JPEG":
            # Every coefficient is still decoded (truncation and corruption are found), at the
            # scale the model needs (image_open_rgb does the same for indexing).
            image.draft(image.mode, (decode_min_side, decode_min_side))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            truncated = "truncated" in str(exc).lower() or "broken data stream" in str(exc).lower()
            raise ImageRejected(
                "truncated_image" if truncated else "corrupt_image",
                f"{label} is {'truncated' if truncated else 'corrupt'}: it does not decode completely.",
                field=field,
            ) from None
        orientation = image.getexif().get(0x0112, 1)
        decoded = _upright_rgb(image) if decode_min_side else None
    if _hides_another_file(data, image_format):
        raise ImageRejected(
            "polyglot_file",
            f"{label} carries another file (an archive, a program or markup) after the image; send the image alone.",
            field=field,
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return IntakeImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        format=image_format,
        width=width,
        height=height,
        decoded=decoded,
    )


# Files that must not ride behind an image's data (a polyglot: one file, two meanings).
_HIDDEN_BINARY = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b\x08", b"%PDF", b"\x7fELF", b"MZ\x90", b"Rar!", b"7z\xbc\xaf")
_HIDDEN_TEXT = (b"<html", b"<script", b"<svg", b"<!doctype", b"<?xml", b"<?php", b"#!/", b"<iframe", b"javascript:")


def _image_end(data: bytes, image_format: str) -> int:
    """Where the image's own bytes end (len(data) when the format does not say)."""
    if image_format == "PNG":
        end = data.rfind(b"IEND")
        return end + 8 if end >= 0 else len(data)
    if image_format == "JPEG":
        end = data.rfind(b"\xff\xd9")
        return end + 2 if end >= 0 else len(data)
    if image_format == "BMP" and len(data) >= 6:
        return min(len(data), int.from_bytes(data[2:6], "little"))
    if image_format == "WEBP" and len(data) >= 8:
        return min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    return len(data)


def _hides_another_file(data: bytes, image_format: str) -> bool:
    """Bytes after the image's end (or, for GIF, anywhere) that start another kind of file.
    Other trailing bytes - padding, a phone's motion-photo video - are left alone."""
    if image_format == "GIF":  # no reliable end: look for markup anywhere (long markers, no false alarms)
        return any(marker in data.lower() for marker in _HIDDEN_TEXT)
    tail = data[_image_end(data, image_format) :]
    if not tail.strip(b"\x00 \r\n\t"):
        return False
    lowered = tail.lower()
    return any(marker in tail for marker in _HIDDEN_BINARY) or any(marker in lowered for marker in _HIDDEN_TEXT)


def image_open_rgb(data: bytes, *, min_side: int | None = None) -> Image.Image:
    """Decode accepted image bytes into an upright 8-bit RGB image.

    EXIF orientation is applied; 16-bit and 32-bit greyscale are scaled (not clipped) to
    8 bits; CMYK, palette and alpha images become RGB, transparency composited on white.
    With ``min_side``, a JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps
    both sides at least that long (much faster for photos that will be shrunk anyway).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=list(FORMAT_EXTENSIONS))
        if min_side and image.format == "JPEG":
            image.draft(image.mode, (min_side, min_side))
        image.load()
    return _upright_rgb(image)


def _upright_rgb(image: Image.Image) -> Image.Image:
    """A loaded image, upright, in 8-bit RGB (see ``image_open_rgb``); always a new image
    (the caller may close the one it passed)."""
    image = ImageOps.exif_transpose(image)  # a copy, even when already upright
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            scale = 65535.0
        else:
            scale = float(array.max()) if array.size and array.max() > 0 else 1.0
        image = Image.fromarray(np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")  # no second copy of an RGB photo
