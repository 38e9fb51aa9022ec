from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import GalleryImage, Product
from tests import images

# transaction=True: files are removed on commit, which must really happen here.
pytestmark = pytest.mark.django_db(transaction=True)


def upload(name: str, data: bytes, content_type: str = "image/png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def stored_files(media_root: Path) -> list[Path]:
    return sorted(p for p in media_root.rglob("*") if p.is_file()) if media_root.exists() else []


def create_product(client, sku="SKU-1", seed=0, **extra):
    data = {"sku": sku, "name": f"Product {sku}", "category": "shoes", "price": "19.99"}
    data.update(extra)
    if "image_url" not in data:
        data["image"] = upload(f"{sku}.png", images.png_bytes(seed=seed))
    return client.post("/api/v1/products/", data, format="multipart")


def test_product_create_get_list_patch_delete(staff_client, media_root):
    response = create_product(staff_client)
    assert response.status_code == 201, response.json()
    product = response.json()
    assert product["sku"] == "SKU-1" and product["price"] == "19.99" and product["embedded"] is False
    assert product["image_url"].startswith("http://testserver/media/images/")
    assert len(stored_files(media_root)) == 1

    assert staff_client.get(f"/api/v1/products/{product['id']}/").json()["name"] == "Product SKU-1"
    listing = staff_client.get("/api/v1/products/").json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == product["id"]

    patched = staff_client.patch(
        f"/api/v1/products/{product['id']}/",
        {"price": "5.00", "image": upload("new.png", images.png_bytes(seed=9))},
        format="multipart",
    )
    assert patched.status_code == 200 and patched.json()["price"] == "5.00"
    assert len(stored_files(media_root)) == 1  # the old image file went with the change

    assert staff_client.delete(f"/api/v1/products/{product['id']}/").status_code == 204
    assert Product.objects.count() == 0
    assert stored_files(media_root) == []


def test_product_filters(staff_client):
    create_product(staff_client, "A", 1, category="shoes", price="10.00", name="Red shoe")
    create_product(staff_client, "B", 2, category="bags", price="50.00", name="Blue bag")
    create_product(staff_client, "C", 3, category="shoes", price="90.00", name="Blue shoe")

    def skus(query: str) -> list[str]:
        return [p["sku"] for p in staff_client.get(f"/api/v1/products/?{query}").json()["results"]]

    assert skus("category=shoes") == ["A", "C"]
    assert skus("category=shoes&category=bags") == ["A", "B", "C"]
    assert skus("min_price=20&max_price=60") == ["B"]
    assert skus("q=blue") == ["B", "C"]
    assert skus("page_size=1&page=2") == ["B"]
    categories = staff_client.get("/api/v1/categories/").json()
    assert categories["results"] == [{"category": "bags", "count": 1}, {"category": "shoes", "count": 2}]
    assert categories["count"] == 2
    bad = staff_client.get("/api/v1/products/?min_price=cheap")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "min_price"


def test_product_by_url(staff_client, local_server):
    response = create_product(staff_client, image_url=local_server.url("/image.png"))
    assert response.status_code == 201, response.json()
    assert response.json()["source_url"] == local_server.url("/image.png")


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("bomb.png", images.png_bomb(20000, 20000), "decompression_bomb"),
        ("cut.jpg", images.truncated_jpeg(), "truncated_image"),
        ("notes.jpg", images.TEXT, "not_an_image"),
        ("logo.png", images.SVG, "markup_not_allowed"),
        ("logo.svg", images.SVG, "unsupported_extension"),
    ],
)
def test_product_image_refusals_store_nothing(staff_client, media_root, name, data, code):
    response = staff_client.post(
        "/api/v1/products/",
        {"sku": "X", "name": "x", "category": "c", "price": "1", "image": upload(name, data)},
        format="multipart",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert Product.objects.count() == 0
    assert stored_files(media_root) == []


def test_product_validation_errors(staff_client, media_root, local_server):
    missing = staff_client.post("/api/v1/products/", {"sku": "X"}, format="multipart")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "name"
    no_image = staff_client.post(
        "/api/v1/products/", {"sku": "X", "name": "x", "category": "c", "price": "1"}, format="multipart"
    )
    assert no_image.json()["error"]["code"] == "image_required"
    negative = create_product(staff_client, price="-1")
    assert negative.status_code == 400 and negative.json()["error"]["field"] == "price"
    private = create_product(staff_client, image_url="http://10.0.0.1/a.png")
    assert private.status_code == 400 and private.json()["error"]["code"] == "url_host_not_allowed"
    assert create_product(staff_client).status_code == 201
    duplicate = create_product(staff_client, seed=4)
    assert duplicate.status_code == 409 and duplicate.json()["error"]["code"] == "duplicate_sku"
    assert len(stored_files(media_root)) == 1
    assert staff_client.get("/api/v1/products/999999/").status_code == 404


def test_gallery_upload_list_thumbnail_delete(staff_client, media_root):
    files = [upload(f"img{i}.png", images.png_bytes(300, 200, seed=i)) for i in range(3)]
    files.append(upload("bad.jpg", images.TEXT, "image/jpeg"))
    files.append(upload("phone.jpg", images.exif_rotated_jpeg(), "image/jpeg"))
    response = staff_client.post("/api/v1/gallery/", {"files": files}, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert [item["filename"] for item in body["created"]] == ["img0.png", "img1.png", "img2.png", "phone.jpg"]
    assert body["rejected"] == [{"filename": "bad.jpg", "code": "not_an_image", "error": body["rejected"][0]["error"]}]
    phone = body["created"][3]
    assert (phone["width"], phone["height"]) == (80, 120)

    listing = staff_client.get("/api/v1/gallery/").json()
    assert listing["count"] == 4

    first = body["created"][0]
    thumb = staff_client.get(f"/api/v1/gallery/{first['id']}/thumbnail/")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    assert "max-age" in thumb["Cache-Control"]
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(b"".join(thumb.streaming_content))).size == (200, 200)
    again = staff_client.get(f"/api/v1/gallery/{first['id']}/thumbnail/", HTTP_IF_NONE_MATCH=thumb["ETag"])
    assert again.status_code == 304

    assert staff_client.delete(f"/api/v1/gallery/{first['id']}/").status_code == 204
    assert not any(first["id"] == image.pk for image in GalleryImage.objects.all())
    selected = staff_client.post("/api/v1/gallery/delete/", {"ids": [body["created"][1]["id"]]}, format="json")
    assert selected.json() == {"deleted": 1}
    everything = staff_client.post("/api/v1/gallery/delete/", {"all": True}, format="json")
    assert everything.json() == {"deleted": 2}
    assert stored_files(media_root) == []


def test_gallery_same_file_twice_is_kept_until_last_copy_goes(staff_client, media_root):
    data = images.png_bytes(seed=3)
    staff_client.post("/api/v1/gallery/", {"files": [upload("a.png", data)]}, format="multipart")
    second = staff_client.post("/api/v1/gallery/", {"files": [upload("b.png", data)]}, format="multipart")
    ids = list(GalleryImage.objects.values_list("pk", flat=True))
    staff_client.delete(f"/api/v1/gallery/{second.json()['created'][0]['id']}/")
    assert len([p for p in stored_files(media_root) if "images" in p.parts]) == 1
    staff_client.post("/api/v1/gallery/delete/", {"ids": ids}, format="json")
    assert stored_files(media_root) == []


def test_gallery_refusals(staff_client, media_root):
    nothing = staff_client.post("/api/v1/gallery/", {}, format="multipart")
    assert nothing.status_code == 400 and nothing.json()["error"]["code"] == "files_required"
    only_bad = staff_client.post(
        "/api/v1/gallery/", {"files": [upload("bomb.png", images.png_bomb())]}, format="multipart"
    )
    assert only_bad.status_code == 400
    assert only_bad.json()["error"]["code"] == "decompression_bomb"
    assert only_bad.json()["rejected"][0]["filename"] == "bomb.png"
    ambiguous = staff_client.post("/api/v1/gallery/delete/", {"ids": [1], "all": True}, format="json")
    assert ambiguous.status_code == 400
    assert staff_client.post("/api/v1/gallery/delete/", {}, format="json").status_code == 400
    assert stored_files(media_root) == []


def test_anonymous_can_read_but_not_write(api_client, staff_client):
    create_product(staff_client)
    assert api_client.get("/api/v1/products/").status_code == 200
    assert api_client.get("/api/v1/gallery/").status_code == 200
    denied = create_product(api_client, sku="NEW")
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "not_authenticated"
    product_id = Product.objects.get().pk
    assert api_client.delete(f"/api/v1/products/{product_id}/").status_code == 401
    assert api_client.post("/api/v1/gallery/delete/", {"all": True}, format="json").status_code == 401
    assert Product.objects.count() == 1


def test_non_staff_user_cannot_write(api_client, django_user_model):
    user = django_user_model.objects.create_user(username="shopper", password="pw-shopper-123")
    api_client.force_authenticate(user)
    response = create_product(api_client)
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


def test_token_auth(api_client, staff_user):
    bad = api_client.post("/api/v1/auth/token/", {"username": "staff", "password": "wrong"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"]
    token = api_client.post("/api/v1/auth/token/", {"username": "staff", "password": "pw-staff-123"}, format="json")
    assert token.status_code == 200
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    assert create_product(api_client).status_code == 201


def test_session_writes_need_csrf(staff_user):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = client.post("/api/v1/gallery/delete/", {"all": True}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


def test_unknown_api_route_is_json_404(api_client):
    response = api_client.get("/api/v1/nope/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_openapi_schema_and_docs(api_client):
    schema = api_client.get("/api/v1/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ["/api/v1/products/", "/api/v1/gallery/", "/api/v1/products/import/", "/api/v1/health/"]:
        assert path in paths
    assert api_client.get("/api/v1/docs/").status_code == 200


def test_media_is_served(staff_client, api_client):
    product = create_product(staff_client).json()
    response = api_client.get(product["image_url"].replace("http://testserver", ""))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == images.png_bytes(seed=0)


def test_a_file_that_cannot_be_deleted_neither_fails_the_delete_nor_keeps_the_others(staff_client, media_root):
    first, second = (GalleryImage.objects.get(pk=item["id"]) for item in staff_client.post(
        "/api/v1/gallery/", {"files": [upload(f"{i}.png", images.png_bytes(seed=40 + i)) for i in range(2)]},
        format="multipart").json()["created"])  # fmt: skip
    stuck = media_root / first.file.name  # a non-empty folder where the file was: the storage cannot delete it
    stuck.unlink()
    (stuck / "inside").mkdir(parents=True)
    response = staff_client.post("/api/v1/gallery/delete/", {"ids": [first.pk, second.pk]}, format="json")
    assert response.status_code == 200 and response.json() == {"deleted": 2}  # the delete committed
    assert not GalleryImage.objects.exists()
    assert stuck.is_dir() and not (media_root / second.file.name).exists()  # the other file still went
