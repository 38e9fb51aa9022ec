"""The hostile corpus against every entry point that takes an image: each file gets a
specific 4xx refusal, and nothing is stored (no row, no file)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import GalleryImage, Product
from signatures.models import Reference, Signer
from tests.hostile.corpus import CORPUS

pytestmark = pytest.mark.django_db


def _upload(filename: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(filename, data, "application/octet-stream")


def _content(upload: SimpleUploadedFile) -> bytes:
    data = upload.read()
    upload.seek(0)
    return data


def _error(response) -> tuple[int, str]:
    body = response.json()
    if "rejected" in body and body["rejected"]:
        return response.status_code, body["rejected"][0]["code"]
    error = body["error"]
    return response.status_code, error["code"] if isinstance(error, dict) else body.get("code")


def _stored(media_root) -> list[str]:
    return sorted(str(path.relative_to(media_root)) for path in media_root.rglob("*") if path.is_file())


ENTRY_POINTS = {
    "gallery upload": lambda c, f: c.post("/api/v1/gallery/", {"files": [f]}, format="multipart"),
    "product create": lambda c, f: c.post("/api/v1/products/", {"sku": "H1", "name": "n", "category": "c",
                                                                 "price": "1", "image": f}, format="multipart"),
    "search": lambda c, f: c.post("/api/v1/search/", {"image": f}, format="multipart"),
    "batch search": lambda c, f: c.post("/api/v1/search/batch/", {"images": [f]}, format="multipart"),
    "signature compare": lambda c, f: c.post("/api/v1/signatures/compare/",
                                             {"image1": f, "image2": _upload(f.name, _content(f))},
                                             format="multipart"),
    "references": lambda c, f: c.post(f"/api/v1/signatures/signers/{Signer.objects.get().pk}/references/",
                                      {"files": [f]}, format="multipart"),
    "verify": lambda c, f: c.post(f"/api/v1/signatures/signers/{Signer.objects.get().pk}/verify/", {"image": f},
                                  format="multipart"),
    "earlier tool's upload": lambda c, f: c.post("/api/upload-image", {"file": f}, format="multipart"),
}  # fmt: skip


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize(("name", "filename", "data", "codes"), CORPUS, ids=[item[0] for item in CORPUS])
def test_hostile_files_are_refused_and_leave_nothing(staff_client, media_root, settings, entry, name, filename,
                                                     data, codes):  # fmt: skip
    settings.API_THROTTLE_RATES = {}
    settings.SEED_ROUTES_OPEN_WRITES = True
    Signer.objects.create(name="S")
    before = _stored(media_root)
    response = ENTRY_POINTS[entry](staff_client, _upload(filename, data))
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    status, code = _error(response)
    # DRF's file fields say "empty" for an empty file before intake sees it.
    assert code in codes or (name == "empty" and code == "empty"), code
    assert not GalleryImage.objects.exists() and not Product.objects.exists() and not Reference.objects.exists()
    assert _stored(media_root) == before


def test_the_admin_product_form_refuses_the_corpus(admin_client, media_root):
    before = _stored(media_root)
    for _name, filename, data, _codes in CORPUS:
        response = admin_client.post("/admin/catalog/product/add/", {
            "sku": "H1", "name": "n", "category": "c", "price": "1", "upload": _upload(filename, data)})  # fmt: skip
        assert response.status_code == 200, filename  # the form again, with the error
        assert "errornote" in response.content.decode() or "errorlist" in response.content.decode()
    assert not Product.objects.exists() and _stored(media_root) == before


def test_csv_import_rows_naming_the_corpus_fail_one_by_one(staff_client, settings, tmp_path, media_root):
    from catalog.csv_import import product_import_run

    root = tmp_path / "import-root"
    root.mkdir()
    settings.CATALOG_IMPORT_ROOT = root.resolve()
    rows = ["id,name,category,price,image_url"]
    for index, (_name, filename, data, _codes) in enumerate(CORPUS):
        (root / f"{index}-{filename}").write_bytes(data)
        rows.append(f"H{index},n,c,1,{index}-{filename}")
    upload = SimpleUploadedFile("hostile.csv", "\n".join(rows).encode(), "text/csv")
    job = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()
    product_import_run(import_id=job["id"])
    report = staff_client.get(f"/api/v1/products/imports/{job['id']}/").json()
    assert report["state"] == "succeeded" and report["created"] == 0
    assert report["failed_count"] == len(CORPUS)
    codes = {item["row"]: item["code"] for item in report["failed"]}
    for index, (_name, _filename, _data, expected) in enumerate(CORPUS):
        assert codes[index + 2] in expected | {"path_not_allowed"}, (index, codes[index + 2])
    assert not Product.objects.exists()
    assert not [name for name in _stored(media_root) if name.startswith(("images/", "thumbs/"))]
