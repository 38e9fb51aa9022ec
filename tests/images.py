"""Real image files (and hostile ones) written by the tests."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw

SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data"


def picture(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """An asymmetric RGB picture: a different one for each seed, top-left always dark red."""
    image = Image.new("RGB", (width, height), ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, width // 4, height // 4], fill=(128, 0, 0))
    draw.ellipse([width // 3, height // 3, width - 2, height - 2], fill=(255 - seed % 256, 200, seed % 200))
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    return encode(picture(width, height, seed), "PNG")


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0, quality: int = 90) -> bytes:
    return encode(picture(width, height, seed), "JPEG", quality=quality)


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height zeros: tiny on disk, huge when decoded."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(400, 300)
    return data[: len(data) // 2]


def cmyk_jpeg() -> bytes:
    return encode(picture(80, 60, 3).convert("CMYK"), "JPEG", quality=95)


def png_16bit() -> bytes:
    """A 16-bit greyscale PNG: a horizontal ramp from 0 to 65535."""
    image = Image.new("I;16", (256, 32))
    image.putdata([x * 257 for _ in range(32) for x in range(256)])
    return encode(image, "PNG")


def exif_rotated_jpeg(source: Image.Image | None = None, orientation: int = 6) -> bytes:
    """A JPEG whose pixels are stored sideways with an EXIF orientation tag, as phones write them."""
    image = source or picture(120, 80, 5)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=92, exif=exif)


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>'
HTML = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
TEXT = b"this is a text file, not a picture\n"
