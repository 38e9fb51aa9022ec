"""Inputs that used to end in a 500: each now gets a specific 4xx with the JSON error body."""

from __future__ import annotations

import json

import pytest
from django.core.files.storage import default_storage

from tests import images
from tests.search.helpers import add_gallery_image, add_product

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_a_search_body_that_is_not_an_object(staff_client, body):
    response = staff_client.post("/api/v1/search/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("invalid_body", "parse_error", "invalid")


def test_stored_files_gone_behind_the_database(api_client, staff_client):
    product = add_product(images.jpeg_bytes(64, 64, seed=1), "S1")
    image = add_gallery_image(images.png_bytes(seed=3), "g.png")
    default_storage.delete(product.image.name)
    default_storage.delete(image.file.name)
    for path in (f"/api/v1/products/{product.pk}/thumbnail/", f"/api/v1/gallery/{image.pk}/thumbnail/"):
        response = api_client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "file_missing"
    assert api_client.get("/images/g.png").status_code == 404
    assert api_client.get("/images/thumb/g.png").status_code == 404
    assert staff_client.post("/api/v1/search/", {"gallery_image": image.pk}).status_code < 500


def test_django_level_refusals_answer_json_on_api_paths(api_client, settings):
    response = api_client.get("/api/v1/categories/", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_host"
    page = api_client.get("/catalog/", HTTP_HOST="evil.example")
    assert page.status_code == 400 and page["Content-Type"].startswith("text/html")
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    fields = "&".join(f"f{i}=1" for i in range(20))
    response = api_client.generic("POST", "/api/v1/auth/token/", fields, "application/x-www-form-urlencoded")
    assert response.status_code == 400 and response.json()["error"]["code"] == "too_many_fields"


def test_failure_reasons_shown_to_users_name_no_server_paths(staff_client, monkeypatch, settings):
    from search.models import IndexJob
    from simsite.errors import failure_reason
    from tests.search.helpers import FakeEmbedder, index_now

    monkeypatch.setattr("search.embedders.get_embedder", lambda spec: FakeEmbedder())
    image = add_gallery_image(images.png_bytes(seed=4), "gone.png")
    default_storage.delete(image.file.name)
    index_now(gallery_ids=[image.pk])
    job = IndexJob.objects.get()
    failures = staff_client.get(f"/api/v1/index/jobs/{job.pk}/").json()["failures"]
    assert len(failures) == 1 and str(settings.MEDIA_ROOT) not in json.dumps(failures)
    assert "No such file" in failures[0]["error"]
    assert failure_reason(RuntimeError("cannot open /srv/media/a.png")) == "RuntimeError: cannot open <path>"
