"""Request bodies are bounded while they arrive: nothing over the limits is buffered or stored."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import GalleryImage
from tests import images

pytestmark = pytest.mark.django_db


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(staff_client, settings):
    settings.REQUEST_MAX_BYTES = 1024 * 1024
    response = staff_client.generic("POST", "/api/v1/gallery/", b"x" * 10, "multipart/form-data; boundary=b",
                                    CONTENT_LENGTH=str(100 * 1024 * 1024))  # fmt: skip
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    page = staff_client.generic("POST", "/admin/login/", b"x", "application/x-www-form-urlencoded",
                                CONTENT_LENGTH=str(100 * 1024 * 1024))  # fmt: skip
    assert page.status_code == 413


def test_a_file_over_the_limit_stops_the_parse(staff_client, settings):
    settings.UPLOAD_MAX_FILE_BYTES = 50_000
    small = SimpleUploadedFile("small.png", images.png_bytes(seed=1), "image/png")
    big = SimpleUploadedFile("big.bmp", b"BM" + b"\0" * 60_000, "image/bmp")
    response = staff_client.post("/api/v1/gallery/", {"files": [small, big]}, format="multipart")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "big.bmp" in error["message"]
    assert not GalleryImage.objects.exists()  # the request is refused whole: nothing half-stored


def test_batch_search_caps_its_files(api_client, settings):
    files = [SimpleUploadedFile(f"{i}.png", images.png_bytes(seed=i), "image/png") for i in range(33)]
    response = api_client.post("/api/v1/search/batch/", {"images": files}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["field"] == "images"
