"""The one preprocessing of signatures, and its refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from signatures.preprocessing import DETAIL_SHAPE, INPUT_SHAPE, signature_preprocess
from signatures.synthetic import synthetic_signature
from simsite.errors import ServiceError
from tests import images
from tests.signatures.conftest import real_or_synthetic


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_signature_is_cropped_centred_and_inverted():
    result = signature_preprocess(real_or_synthetic(1, 1)[0])
    array = result.array
    assert array.shape == INPUT_SHAPE and array.dtype == np.float32
    assert 0 <= array.min() and array.max() <= 1
    assert array.mean() < 0.2  # ink is high and sparse: the background became 0
    rows, cols = np.nonzero(array > 0.5)
    # The ink is centred and fills the canvas in one direction (cropped to its box).
    assert abs((rows.mean() / INPUT_SHAPE[0]) - 0.5) < 0.2 and abs((cols.mean() / INPUT_SHAPE[1]) - 0.5) < 0.2
    assert cols.max() - cols.min() > 0.7 * INPUT_SHAPE[1] or rows.max() - rows.min() > 0.7 * INPUT_SHAPE[0]
    preview = Image.open(io.BytesIO(result.preview_png()))
    assert preview.size == (INPUT_SHAPE[1], INPUT_SHAPE[0])


def test_the_finer_size_frames_the_same_signature_from_the_scan():
    result = signature_preprocess(real_or_synthetic(1, 1)[0])
    assert result.at(INPUT_SHAPE) is result.array
    detail = result.at(DETAIL_SHAPE)
    assert detail.shape == DETAIL_SHAPE and detail.dtype == np.float32 and 0 <= detail.min() and detail.max() <= 1
    # The same framing: brought back to the model's size it is the array, give or take resampling.
    smaller = np.asarray(Image.fromarray(detail, mode="F").resize(INPUT_SHAPE[::-1], Image.Resampling.BILINEAR))
    assert np.corrcoef(smaller.ravel(), result.array.ravel())[0, 1] > 0.8
    # Finer: drawn from the scan itself, not the array enlarged.
    enlarged = np.asarray(Image.fromarray(result.array, mode="F").resize(DETAIL_SHAPE[::-1], Image.Resampling.BICUBIC))
    assert not np.allclose(detail, enlarged, atol=0.05)


def test_specks_ruled_lines_and_position_do_not_change_the_result():
    clean = Image.open(io.BytesIO(synthetic_signature(5, 0))).convert("L")
    page = Image.new("L", (1400, 700), 250)
    page.paste(clean, (500, 250))
    draw = ImageDraw.Draw(page)
    draw.line([(0, 600), (1400, 600)], fill=90, width=2)  # a ruled line under the signature
    for x, y in [(30, 30), (1350, 40), (60, 650)]:
        draw.ellipse([x, y, x + 3, y + 3], fill=0)  # specks in the corners
    moved = signature_preprocess(png(page)).array
    reference = signature_preprocess(png(clean)).array
    assert np.abs(moved - reference).mean() < 0.03


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (png(Image.new("L", (800, 400), 255)), "signature_blank"),
        (png(Image.new("L", (800, 400), 200)), "signature_blank"),
        (images.jpeg_bytes(640, 480, seed=3), "not_a_signature"),
        (images.png_bytes(300, 300, seed=4), "not_a_signature"),
        (b"%PDF-1.4 not an image", "not_an_image"),
    ],
)
def test_refusals_have_specific_codes(data, code):
    from signatures.services.inputs import signature_input

    with pytest.raises(ServiceError) as refusal:
        signature_input(data=data)
    assert refusal.value.code == code


def test_a_real_photograph_is_not_a_signature():
    photos = sorted((images.SHARED_DATA / "vehicles").rglob("*.jpg"))[:1]
    if not photos:
        pytest.skip("../shared/data/vehicles is absent")
    with pytest.raises(ServiceError) as refusal:
        signature_preprocess(photos[0].read_bytes())
    assert refusal.value.code == "not_a_signature"


def test_a_20000_pixel_wide_scan_is_refused():
    scan = Image.new("L", (20_000, 300), 255)
    ImageDraw.Draw(scan).line([(100, 150), (19_000, 160)], fill=0, width=3)
    with pytest.raises(ServiceError) as refusal:
        signature_preprocess(png(scan))
    assert refusal.value.code == "signature_too_large" and refusal.value.status_code == 413


def test_a_tightly_cropped_scan_with_a_broad_pen_is_a_signature():
    """The Dutch scans of writer 003: cropped to the ink, a quarter of the pixels are strokes."""
    scans = sorted((images.SHARED_DATA / "signatures-dutch" / "003" / "genuine").glob("*.jpg"))
    if not scans:
        pytest.skip("../shared/data/signatures-dutch is absent")
    for scan in scans:
        assert signature_preprocess(scan.read_bytes()).array.shape == INPUT_SHAPE, scan.name


def test_a_broad_pen_cropped_tight_is_accepted_and_a_busy_background_is_not():
    pen = Image.new("L", (520, 100), 250)
    draw = ImageDraw.Draw(pen)
    draw.line([(10, 70), (120, 15), (200, 85), (300, 10), (400, 80), (510, 20)], fill=60, width=26)
    assert signature_preprocess(png(pen)).ink_fraction > 0.25  # the old page test refused this
    strokes = np.asarray(pen, dtype=np.float32)
    blotches = np.random.default_rng(0).random((10, 52)).repeat(10, axis=0).repeat(10, axis=1)
    for background in (np.linspace(0, 90, 520)[None, :], 70 * blotches):  # shading, patches: a photograph
        with pytest.raises(ServiceError) as refusal:
            signature_preprocess(png(Image.fromarray((strokes - background).clip(0, 255).astype(np.uint8))))
        assert refusal.value.code == "not_a_signature"
