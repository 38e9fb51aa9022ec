"""A corpus of hostile files, made in code: each is what an attacker or a broken client sends
as an image, with the refusal code intake must answer. Nothing here is stored in the repo."""

from __future__ import annotations

import gzip
import io
import zipfile

from tests import images


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.bin", b"\0" * (20 * 1024 * 1024))
    return buffer.getvalue()


def _jpeg_with_zip() -> bytes:
    return images.jpeg_bytes(64, 64, seed=9) + _zip_bomb()


def _png_with_html() -> bytes:
    return images.png_bytes(seed=9) + b"<html><script>alert(document.cookie)</script></html>"


def _gif_with_script() -> bytes:
    return images.encode(images.picture(16, 16, seed=1), "GIF") + b"<script>alert(1)</script>"


# (name, filename, bytes, the refusal codes that are right for it)
CORPUS: list[tuple[str, str, bytes, set[str]]] = [
    ("empty", "empty.png", b"", {"empty_file", "files_required", "file_required"}),
    ("zip bomb named as an image", "photo.jpg", _zip_bomb(), {"not_an_image"}),
    ("gzip bomb named as an image", "photo.png", gzip.compress(b"\0" * (20 * 1024 * 1024)), {"not_an_image"}),
    ("pixel bomb", "huge.png", images.png_bomb(), {"decompression_bomb"}),
    ("truncated jpeg", "cut.jpg", images.truncated_jpeg(), {"truncated_image", "corrupt_image"}),
    ("jpeg with a zip behind it", "poly.jpg", _jpeg_with_zip(), {"polyglot_file"}),
    ("png with html behind it", "poly.png", _png_with_html(), {"polyglot_file"}),
    ("gif with a script", "poly.gif", _gif_with_script(), {"polyglot_file"}),
    (
        "svg",
        "vector.png",
        b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        {"markup_not_allowed"},
    ),
    ("html named as an image", "page.jpg", b"<!DOCTYPE html><html><body>hi</body></html>", {"markup_not_allowed"}),
    ("binary garbage", "noise.jpg", bytes(range(256)) * 64, {"not_an_image"}),
    ("executable", "setup.png", b"MZ\x90\x00" + b"\0" * 2000, {"not_an_image"}),
    ("unsupported extension", "script.php", images.png_bytes(seed=5), {"unsupported_extension"}),
]
