from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from catalog.images import ImageRejected, image_open_rgb, image_validate
from tests import images


def refusal(data: bytes, filename: str | None = "upload.png") -> str:
    with pytest.raises(ImageRejected) as caught:
        image_validate(data=data, filename=filename)
    return caught.value.code


def test_accepts_every_allowed_format():
    picture = images.picture(50, 40)
    for fmt, name in [("PNG", "a.png"), ("JPEG", "a.jpeg"), ("GIF", "a.gif"), ("BMP", "a.bmp"), ("WEBP", "a.webp")]:
        accepted = image_validate(data=images.encode(picture, fmt), filename=name)
        assert (accepted.format, accepted.width, accepted.height) == (fmt, 50, 40)
        assert len(accepted.sha256) == 64


def test_refuses_decompression_bomb_before_decoding():
    bomb = images.png_bomb(20000, 20000)
    assert len(bomb) < 2_000_000  # small file, 400 megapixels
    assert refusal(bomb) == "decompression_bomb"


def test_refuses_truncated_jpeg():
    assert refusal(images.truncated_jpeg(), "photo.jpg") == "truncated_image"


def test_refuses_text_file_named_jpg():
    assert refusal(images.TEXT, "holiday.jpg") == "not_an_image"


@pytest.mark.parametrize("markup", [images.SVG, images.HTML, b"  \n" + images.SVG])
def test_refuses_svg_and_html_even_with_an_image_extension(markup):
    assert refusal(markup, "logo.png") == "markup_not_allowed"


def test_refuses_svg_extension():
    assert refusal(images.SVG, "logo.svg") == "unsupported_extension"


def test_refuses_other_raster_formats():
    tiff = images.encode(images.picture(), "TIFF")
    assert refusal(tiff, "scan.png") == "not_an_image"


def test_refuses_empty_and_oversize(settings):
    assert refusal(b"") == "empty_file"
    settings.IMAGE_MAX_UPLOAD_BYTES = 1000
    assert refusal(images.png_bytes(200, 200, seed=1) + b"\0" * 1000) == "file_too_large"


def test_cmyk_jpeg_is_accepted_and_becomes_rgb():
    data = images.cmyk_jpeg()
    assert Image.open(__import__("io").BytesIO(data)).mode == "CMYK"
    accepted = image_validate(data=data, filename="print.jpg")
    rgb = image_open_rgb(accepted.data)
    assert rgb.mode == "RGB"
    expected = np.asarray(images.picture(80, 60, 3), dtype=float)
    assert np.abs(np.asarray(rgb, dtype=float) - expected).mean() < 12


def test_16bit_png_is_scaled_not_clipped():
    accepted = image_validate(data=images.png_16bit(), filename="depth.png")
    rgb = np.asarray(image_open_rgb(accepted.data))
    ramp = rgb[0, :, 0].astype(int)
    assert ramp[0] == 0 and ramp[-1] == 255
    assert abs(ramp[128] - 128) <= 1  # mid-grey stays mid-grey


def test_alpha_and_palette_composite_on_white():
    transparent = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    rgb = image_open_rgb(images.encode(transparent, "PNG"))
    assert rgb.mode == "RGB" and rgb.getpixel((5, 5)) == (255, 255, 255)
    palette = images.picture().convert("P")
    assert image_open_rgb(images.encode(palette, "GIF")).mode == "RGB"


def test_exif_orientation_is_applied():
    stored = images.picture(120, 80, 5)  # landscape as stored, dark red block top-left
    accepted = image_validate(data=images.exif_rotated_jpeg(stored, orientation=6), filename="phone.jpg")
    assert (accepted.width, accepted.height) == (80, 120)
    upright = image_open_rgb(accepted.data)
    assert upright.size == (80, 120)
    # Orientation 6 means "rotate 90° clockwise to display": the top-left block moves top-right.
    red, green, _ = upright.getpixel((75, 5))
    assert red > 100 and green < 40


def test_exif_orientation_on_a_real_photo():
    photos = sorted((images.SHARED_DATA / "vehicles").rglob("*.jpg"))[:1]
    if not photos:
        pytest.skip("../shared/data/vehicles is not present")
    photo = Image.open(photos[0]).convert("RGB")
    accepted = image_validate(data=images.exif_rotated_jpeg(photo, orientation=8), filename="car.jpg")
    assert (accepted.width, accepted.height) == (photo.height, photo.width)
    assert image_open_rgb(accepted.data).size == (photo.height, photo.width)
