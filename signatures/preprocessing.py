"""Signature preprocessing: the one function training, evaluation and the API all use.

Grayscale; a light blur and Otsu's threshold find the ink; ruled lines and specks are left
out of the ink's bounding box; the signature is cropped to it, its background made pure
white, padded to the model's aspect ratio, resized to 170x242 and centre-cropped to
150x220 (the sizes of the SigNet literature); finally inverted so that ink is high.
Encoders trained here see the same framing at 1.5 times the size (``DETAIL_SHAPE``, 225x330):
finer strokes, which is where a skilled forgery shows (README, "Signatures").
No torch here: the result is a float array in [0, 1].
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from PIL import Image, ImageFilter, ImageOps

from catalog.images import image_open_rgb
from simsite.errors import ServiceError

INPUT_SHAPE = (150, 220)  # height, width of the model input
DETAIL_SHAPE = (225, 330)  # the same framing, finer: what encoders trained here see
_CROPPED = (150 / 170, 220 / 242)  # the share of the resized signature kept by the centre crop
_WORK_SIDE = 1600  # larger scans are reduced to this before finding the ink


@dataclass(frozen=True)
class SignatureImage:
    """A preprocessed signature: ``array`` is (150, 220) float32, ink high (1) on 0; ``crop``
    the scan's ink box (8-bit, the page pure white), from which ``at`` frames other sizes."""

    array: np.ndarray
    crop: np.ndarray
    ink_fraction: float
    ink_size: tuple[int, int] = (0, 0)  # height, width of the ink's box in the scan (pixels)

    def at(self, shape: tuple[int, int]) -> np.ndarray:
        """The signature framed as ``array`` is, at ``shape`` (an encoder's ``input_shape``)."""
        return self.array if tuple(shape) == self.array.shape else _fit(self.crop, tuple(shape))

    def preview_png(self) -> bytes:
        """The model's input as a PNG, dark ink on light, for people to look at."""
        picture = Image.fromarray((255 - self.array * 255).round().astype(np.uint8), mode="L")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()


def _otsu(gray: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold of an 8-bit image, and how well it separates (between-class variance
    over total variance: 1 for two pure tones, low for a photograph)."""
    histogram = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    probabilities = histogram / histogram.sum()
    levels = np.arange(256)
    omega = np.cumsum(probabilities)
    mu = np.cumsum(probabilities * levels)
    mu_total = mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_total * omega - mu) ** 2 / (omega * (1 - omega))
    between = np.nan_to_num(between)
    threshold = int(np.argmax(between))
    total = float(((levels - mu_total) ** 2 * probabilities).sum())
    return float(threshold), float(between[threshold] / total) if total > 0 else 0.0


def _looks_like_ink_on_paper(blurred: np.ndarray, ink: np.ndarray, *, separation: float) -> bool:
    """Is this strokes on a page rather than a photograph?

    A loosely cropped scan: most pixels near the paper's tone, two well-separated tones, little
    ink (on SVC2004, CEDAR and the Dutch scans: page >= 0.83, separation >= 0.77, ink <= 0.12).
    A tightly cropped one with a broad pen can be a quarter ink or more, its page mostly the
    blurred edges of strokes (writer 003 of the Dutch set: ink 0.19-0.29, page 0.64-0.76), so it
    is also accepted when the paper away from the strokes is uniform: at least 99% of it within
    25 grey levels of the paper's tone (every one of the 3,773 signatures of ../shared/data
    >= 0.993; 92% of the vehicle photographs fail one test or the other).
    """
    paper = int(np.bincount(blurred.ravel(), minlength=256).argmax())
    near_paper = np.abs(blurred.astype(np.int16) - paper) < 25
    fraction = float(ink.mean())
    if fraction <= 0.25 and separation >= 0.75 and near_paper.mean() >= 0.75:
        return True
    if fraction > 0.45 or separation < 0.72:
        return False
    reach = 2 * max(2, round(max(blurred.shape) / 200)) + 1  # a few pixels beyond each stroke
    strokes = Image.fromarray(ink.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(reach))
    away = np.asarray(strokes) == 0
    return bool(away.mean() >= 0.2 and near_paper[away].mean() >= 0.99)


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """The rows and columns holding the signature's ink, ignoring ruled lines (rows or
    columns more than half inked) and isolated specks (the outer 0.3% of ink pixels)."""
    ink = ink.copy()
    ink[ink.mean(axis=1) > 0.5, :] = False
    ink[:, ink.mean(axis=0) > 0.5] = False
    rows, cols = np.nonzero(ink)
    if rows.size < 20:
        return None
    top, bottom = np.quantile(rows, [0.003, 0.997]).astype(int)
    left, right = np.quantile(cols, [0.003, 0.997]).astype(int)
    return int(top), int(bottom) + 1, int(left), int(right) + 1


def signature_preprocess(data: bytes, *, field: str = "image") -> SignatureImage:
    """Validated image bytes -> the model's input; refuses blank pages, photographs and scans
    too large to be one signature with specific codes."""
    picture = image_open_rgb(data)
    limit = settings.SIGNATURE_MAX_SIDE
    if max(picture.size) > limit:
        raise ServiceError(
            "signature_too_large",
            f"The image is {picture.width}x{picture.height} pixels; a signature scan must be at most {limit} "
            "pixels on its longer side (crop it to the signature).",
            field=field,
            status_code=413,
        )
    gray = ImageOps.grayscale(picture)
    if max(gray.size) > _WORK_SIDE:
        gray.thumbnail((_WORK_SIDE, _WORK_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(gray, dtype=np.uint8)
    blur = max(1.0, max(gray.size) / 600)
    blurred = np.asarray(gray.filter(ImageFilter.GaussianBlur(blur)), dtype=np.uint8)
    threshold, separation = _otsu(blurred)
    ink = blurred < threshold
    fraction = float(ink.mean())
    if pixels.std() < 3 or fraction < 0.0005 or (pixels.max() - pixels.min()) < 40:
        raise ServiceError("signature_blank", "No signature found: the image is blank.", field=field)
    if not _looks_like_ink_on_paper(blurred, ink, separation=separation):
        raise ServiceError(
            "not_a_signature",
            "This does not look like a signature: expected dark strokes on a light page.",
            field=field,
        )
    box = _ink_box(ink)
    if box is None:
        raise ServiceError("signature_blank", "No signature found: too little ink.", field=field)
    top, bottom, left, right = box
    crop = pixels[top:bottom, left:right].copy()
    crop[crop >= threshold] = 255  # the page becomes pure white: paper texture is not the signature
    return SignatureImage(array=_fit(crop, INPUT_SHAPE), ink_fraction=fraction, ink_size=(bottom - top, right - left),
                          crop=crop)  # fmt: skip


def _fit(crop: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad to the input's aspect (centred, with a small margin), resize, centre-crop, invert."""
    height, width = crop.shape
    out_h, out_w = shape
    target_h, target_w = round(out_h / _CROPPED[0]), round(out_w / _CROPPED[1])
    aspect = target_w / target_h
    margin = 1.16  # the centre crop takes ~6% off each side; keep the ink inside
    canvas_h = int(max(height, width / aspect) * margin) + 2
    canvas_w = int(canvas_h * aspect) + 2
    canvas = np.full((canvas_h, canvas_w), 255, dtype=np.uint8)
    top, left = (canvas_h - height) // 2, (canvas_w - width) // 2
    canvas[top : top + height, left : left + width] = crop
    resized = Image.fromarray(canvas).resize((target_w, target_h), Image.Resampling.LANCZOS)
    array = np.asarray(resized, dtype=np.float32)
    y, x = (target_h - out_h) // 2, (target_w - out_w) // 2
    return ((255.0 - array[y : y + out_h, x : x + out_w]) / 255.0).astype(np.float32)
