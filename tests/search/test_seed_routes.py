"""The earlier Flask tools' routes, called the way their clients call them."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import GalleryImage
from search.models import Embedding
from tests import images
from tests.conftest import wait_for
from tests.search.helpers import add_product, index_now


def upload(client, name: str, data: bytes):
    return client.post("/api/upload-image", {"file": SimpleUploadedFile(name, data, "image/png")}, format="multipart")


@pytest.mark.django_db
def test_gallery_routes(staff_client, api_client):
    assert upload(staff_client, "cat.png", images.png_bytes(seed=1)).json() == {"success": True, "filename": "cat.png"}
    upload(staff_client, "dog.png", images.png_bytes(seed=2))
    assert api_client.get("/api/images").json() == {"images": ["cat.png", "dog.png"]}

    replaced = upload(staff_client, "cat.png", images.png_bytes(seed=3))
    assert replaced.json()["success"] is True
    assert GalleryImage.objects.filter(original_filename="cat.png").count() == 1
    served = api_client.get("/images/cat.png")
    assert served.status_code == 200 and b"".join(served.streaming_content) == images.png_bytes(seed=3)
    thumb = api_client.get("/images/thumb/cat.png")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"

    # Errors keep the old tools' shape, which their pages display ("Error uploading notes.png: <text>").
    bad = upload(staff_client, "notes.png", images.TEXT)
    assert bad.status_code == 400
    assert bad.json() == {"success": False, "error": bad.json()["error"], "code": "not_an_image"}
    assert isinstance(bad.json()["error"], str) and bad.json()["error"]
    anonymous = api_client.delete("/api/delete-image/dog.png")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
    assert isinstance(anonymous.json()["error"], str) and anonymous.json()["success"] is False
    assert staff_client.delete("/api/delete-image/dog.png").json()["success"] is True
    gone = staff_client.delete("/api/delete-image/dog.png")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found" and isinstance(gone.json()["error"], str)
    assert api_client.get("/images/../../etc/passwd").status_code == 404
    assert api_client.get("/api/images").json() == {"images": ["cat.png"]}


@pytest.mark.django_db
def test_open_writes_setting(api_client, settings):
    assert upload(api_client, "a.png", images.png_bytes()).status_code == 401
    settings.SEED_ROUTES_OPEN_WRITES = True
    assert upload(api_client, "a.png", images.png_bytes()).json()["success"] is True


@pytest.mark.django_db
def test_search_and_check_features(staff_client, api_client):
    for seed in range(3):
        upload(staff_client, f"img{seed}.png", images.png_bytes(200, 200, seed=seed))
    assert api_client.get("/api/check-features").json() == {"exists": False}
    early = api_client.post("/api/search", {"file": SimpleUploadedFile("q.png", images.png_bytes(), "image/png")},
                            format="multipart")  # fmt: skip
    assert early.status_code == 400 and early.json()["code"] == "no_features"
    assert "generate features" in early.json()["error"]
    index_now(gallery_ids=list(GalleryImage.objects.values_list("pk", flat=True)))
    assert api_client.get("/api/check-features").json() == {"exists": True}
    query = SimpleUploadedFile("q.png", images.png_bytes(200, 200, seed=1), "image/png")
    results = api_client.post("/api/search", {"file": query}, format="multipart").json()["results"]
    assert results[0]["filename"] == "img1.png" and results[0]["similarity"] >= 0.999
    assert results[0]["image_url"] == "http://testserver/images/img1.png"
    assert set(results[0]) == {"filename", "similarity", "image_url"}
    missing = api_client.post("/api/search", {}, format="multipart")
    assert missing.status_code == 400 and missing.json() == {"error": "Send the query image as 'file'.",
                                                             "code": "file_required"}  # fmt: skip


@pytest.mark.django_db
def test_an_empty_library_says_what_to_do_first(staff_client, api_client):
    query = SimpleUploadedFile("q.png", images.png_bytes(), "image/png")
    searched = api_client.post("/api/search", {"file": query}, format="multipart")
    assert searched.status_code == 400 and searched.json()["code"] == "no_images"
    assert "upload images" in searched.json()["error"]
    generated = staff_client.post("/api/generate-features")
    assert generated.status_code == 400 and generated.json()["code"] == "no_images"


@pytest.mark.django_db(transaction=True)
def test_generate_features_streams_progress(staff_client, workers):
    for seed in range(5):
        upload(staff_client, f"img{seed}.png", images.png_bytes(120, 120, seed=seed))
    from simsite.celery import app

    app.control.purge()
    Embedding.objects.all().delete()  # as if nothing had been generated yet
    workers.start()
    response = staff_client.post("/api/generate-features")
    assert response["Content-Type"] == "text/event-stream"
    events = [json.loads(c.decode()[6:]) for c in response.streaming_content if c.startswith(b"data: ")]
    assert events[-1] == {"complete": True, "count": 5}
    assert all(set(e) == {"progress", "current", "total"} for e in events[:-1])
    assert events[-2]["current"] == events[-2]["total"] == 5 and events[-2]["progress"] == 100.0
    wait_for(lambda: staff_client.get("/api/check-features").json()["exists"])


@pytest.mark.django_db
def test_catalog_search_page(client):
    products = [add_product(images.jpeg_bytes(256, 256, seed=i), f"SKU{i}", category="shoes") for i in range(3)]
    index_now(product_ids=[p.pk for p in products])
    page = client.get("/")
    assert page.status_code == 200 and b'name="threshold"' in page.content and b'value="70"' in page.content
    photo = SimpleUploadedFile("q.jpg", images.jpeg_bytes(256, 256, seed=1), "image/jpeg")
    response = client.post("/search", {"file": photo})  # no CSRF token, as the old clients send it
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="card result') >= 1 and "SKU1" in html
    assert "at least 70% similar" in html
    strict = client.post("/search", {"file": SimpleUploadedFile("q.jpg", images.jpeg_bytes(256, 256, seed=1)),
                                     "threshold": "100"})  # fmt: skip
    assert strict.status_code == 200
    bad = client.post("/search", {"file": SimpleUploadedFile("q.jpg", images.TEXT)})
    assert bad.status_code == 400 and "not a PNG, JPEG" in bad.content.decode()
    bad_threshold = client.post("/search", {"image_url": "https://example.com/a.jpg", "threshold": "170"})
    assert bad_threshold.status_code == 400 and "between 0 and 100" in bad_threshold.content.decode()
