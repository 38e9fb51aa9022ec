"""POST /api/v1/search/, batch, CSV export and duplicates, with the real default model."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from tests import images
from tests.search.helpers import add_gallery_image, add_product, index_now

pytestmark = pytest.mark.django_db


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    return images.encode(image, "JPEG", quality=quality)


@pytest.fixture
def catalog():
    """Six products in two categories and three gallery images, all embedded."""
    products = [
        add_product(images.jpeg_bytes(256, 256, seed=i), f"SKU{i}", category="shoes" if i < 3 else "bags",
                    price=f"{10 * (i + 1)}.00", name=f"=HYPERLINK(\"x\") {i}" if i == 5 else f"Item {i}")
        for i in range(6)
    ]  # fmt: skip
    gallery = [add_gallery_image(images.png_bytes(256, 256, seed=20 + i), f"g{i}.png") for i in range(3)]
    index_now(product_ids=[p.pk for p in products], gallery_ids=[g.pk for g in gallery])
    return {"products": products, "gallery": gallery}


def search(client, **data):
    return client.post("/api/v1/search/", data, format="multipart")


def test_search_by_uploaded_photo_finds_the_product(api_client, catalog):
    photo = images.picture(256, 256, seed=2).crop((20, 20, 236, 236))
    response = search(api_client, image=SimpleUploadedFile("q.jpg", jpeg(photo), "image/jpeg"), k=3)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["model"] == "efficientnet_lite0" and body["took_ms"] > 0
    first = body["results"][0]
    assert (first["type"], first["sku"]) == ("product", "SKU2")
    assert first["similarity"] > 0.8 and first["thumbnail_url"].endswith("/thumbnail/")
    assert len(body["results"]) == 3
    assert [r["similarity"] for r in body["results"]] == sorted(
        (r["similarity"] for r in body["results"]), reverse=True
    )


def test_search_by_url_item_and_filters(api_client, catalog, local_server):
    url = local_server.add_bytes("/q.jpg", images.jpeg_bytes(256, 256, seed=4), "image/jpeg")
    by_url = search(api_client, image_url=url, k=1).json()["results"]
    assert by_url[0]["sku"] == "SKU4"

    product = catalog["products"][0]
    by_item = search(api_client, product=product.pk, k=10).json()["results"]
    assert product.pk not in [r["id"] for r in by_item if r["type"] == "product"]
    assert len(by_item) == 8  # everything but the query itself

    gallery_only = search(api_client, product=product.pk, collection="gallery").json()["results"]
    assert {r["type"] for r in gallery_only} == {"gallery_image"} and len(gallery_only) == 3
    shoes = api_client.post(
        "/api/v1/search/",
        {"product": catalog["products"][4].pk, "category": ["shoes"], "max_price": "20"},
        format="multipart",
    ).json()["results"]
    assert [r["sku"] for r in sorted(shoes, key=lambda r: r["sku"])] == ["SKU0", "SKU1"]
    high = search(api_client, product=product.pk, threshold=0.999).json()["results"]
    assert high == []
    exact = search(api_client, product=product.pk, k=10, exact="true").json()["results"]
    assert [r["id"] for r in exact] == [r["id"] for r in by_item]


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        ({}, "query_required", 400),
        ({"product": 1, "gallery_image": 2}, "query_required", 400),
        ({"product": 999999}, "not_found", 404),
        ({"product": 1, "k": 0}, "min_value", 400),
        ({"product": 1, "k": 101}, "max_value", 400),
        ({"product": 1, "threshold": 2}, "max_value", 400),
        ({"product": 1, "collection": "x"}, "invalid_choice", 400),
        ({"product": 1, "model": "vgg"}, "unknown_model", 400),
        ({"image_url": "http://169.254.169.254/latest"}, "url_host_not_allowed", 400),
    ],
)
def test_search_refusals(api_client, catalog, data, code, status):
    if data.get("product") == 1:
        data["product"] = catalog["products"][0].pk
    response = search(api_client, **data)
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code


def test_search_refuses_bad_upload(api_client, catalog):
    bomb = SimpleUploadedFile("bomb.png", images.png_bomb(), "image/png")
    response = search(api_client, image=bomb)
    assert response.status_code == 400 and response.json()["error"]["code"] == "decompression_bomb"


def test_csv_export_neutralises_formulas(api_client, catalog):
    response = api_client.post(
        "/api/v1/search/?format=csv", {"product": catalog["products"][0].pk, "k": 8}, format="multipart"
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 8 and rows[0]["rank"] == "1"
    names = {row["name"] for row in rows if row["type"] == "product"}
    assert '\'=HYPERLINK("x") 5' in names
    assert not any(value.startswith(("=", "+", "@")) for row in rows for value in row.values())
    error = api_client.post("/api/v1/search/?format=csv", {}, format="multipart")
    assert error.status_code == 400 and error.content.decode().startswith("code,message,field")


def test_batch_search(api_client, catalog):
    files = [
        SimpleUploadedFile("a.jpg", images.jpeg_bytes(256, 256, seed=1), "image/jpeg"),
        SimpleUploadedFile("b.png", images.png_bytes(256, 256, seed=21), "image/png"),
    ]
    response = api_client.post("/api/v1/search/batch/", {"images": files, "k": 2}, format="multipart")
    assert response.status_code == 200, response.json()
    queries = response.json()["queries"]
    assert [q["filename"] for q in queries] == ["a.jpg", "b.png"]
    assert queries[0]["results"][0]["sku"] == "SKU1"
    assert queries[1]["results"][0]["filename"] == "g1.png"
    assert all(len(q["results"]) == 2 for q in queries)
    none = api_client.post("/api/v1/search/batch/", {"k": 2}, format="multipart")
    assert none.status_code == 400 and none.json()["error"]["field"] == "images"


def test_duplicates_groups_near_copies(staff_client, catalog):
    original = images.picture(256, 256, seed=21)
    copies = [
        add_gallery_image(jpeg(original, quality=60), "copy-jpeg.jpg"),
        add_gallery_image(jpeg(original.resize((128, 128))), "copy-small.jpg"),
    ]
    index_now(gallery_ids=[c.pk for c in copies])
    response = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.9")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    group = body["results"][0]
    assert sorted(item["filename"] for item in group["items"]) == ["copy-jpeg.jpg", "copy-small.jpg", "g1.png"]
    assert 0.9 <= group["similarity"] <= 1
    strict = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.9999").json()
    assert strict["count"] == 0
    bad = staff_client.get("/api/v1/duplicates/?threshold=3")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "threshold"


def test_search_command(catalog, tmp_path):
    from django.core.management import call_command

    query = tmp_path / "q.jpg"
    query.write_bytes(images.jpeg_bytes(256, 256, seed=3))
    out = io.StringIO()
    call_command("search", str(query), "--k", "2", "--collection", "products", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == ["rank", "similarity"]
    assert "SKU3" in lines[1] and len(lines) == 3


def test_query_item_whose_file_is_gone_is_a_409(api_client, catalog, media_root):
    orphan = add_product(images.jpeg_bytes(64, 64, seed=99), "GONE")  # not embedded yet
    (media_root / orphan.image.name).unlink()
    response = search(api_client, product=orphan.pk)
    assert response.status_code == 409 and response.json()["error"]["code"] == "image_missing"


def test_searches_by_image_keep_a_sample_of_their_query_vectors(api_client, catalog, settings):
    """The queries ef_search is tuned on (search.services.tuning.search_tune): vectors of searches by
    image, never of searches from a stored item (those are in the index already)."""
    from search.models import Embedding, SearchQuerySample

    settings.SEARCH_TUNE_SAMPLE_PERCENT = 100
    photo = SimpleUploadedFile("q.jpg", jpeg(images.picture(256, 256, seed=2).crop((20, 20, 236, 236))))
    assert search(api_client, image=photo, k=3).status_code == 200
    kept = SearchQuerySample.objects.get()
    stored = Embedding.objects.get(product=catalog["products"][2], model="efficientnet_lite0")
    assert kept.model == "efficientnet_lite0" and float(np.asarray(kept.vector) @ np.asarray(stored.vector)) > 0.8
    assert search(api_client, product=catalog["products"][0].pk, k=3).status_code == 200
    assert SearchQuerySample.objects.count() == 1
    files = [SimpleUploadedFile(f"{i}.jpg", images.jpeg_bytes(256, 256, seed=i), "image/jpeg") for i in range(2)]
    assert api_client.post("/api/v1/search/batch/", {"images": files}, format="multipart").status_code == 200
    assert SearchQuerySample.objects.count() == 3
    settings.SEARCH_TUNE_SAMPLE_PERCENT = 0
    assert search(api_client, image=SimpleUploadedFile("q.jpg", jpeg(images.picture(64, 64))), k=3).status_code == 200
    assert SearchQuerySample.objects.count() == 3
