from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from catalog.models import Product
from tests import images

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def import_root(settings, tmp_path) -> Path:
    root = tmp_path / "imports"
    (root / "photos").mkdir(parents=True)
    (root / "photos" / "shoe.png").write_bytes(images.png_bytes(seed=11))
    (root / "photos" / "bag.jpg").write_bytes(images.jpeg_bytes(seed=12))
    (root / "photos" / "broken.jpg").write_bytes(images.truncated_jpeg())
    (tmp_path / "outside.png").write_bytes(images.png_bytes(seed=13))
    settings.CATALOG_IMPORT_ROOT = root.resolve()
    return root


def mixed_csv(server) -> str:
    good_url = server.url("/image.png")
    page = server.add_bytes("/page.html", b"<html>no</html>", "text/html")
    return "\n".join(
        [
            "id,name,category,price,image_url",
            f"P1,Red shoe,shoes,19.99,{good_url}",  # row 2: good (URL)
            "P2,Blue bag,bags,49.50,photos/bag.jpg",  # row 3: good (local path)
            "P3,,shoes,10.00,photos/shoe.png",  # row 4: missing name
            "P4,Hat,hats,cheap,photos/shoe.png",  # row 5: bad price
            f"P5,Scarf,scarves,5.00,{server.url('/missing.png')}",  # row 6: unreachable URL
            f"P6,Belt,belts,5.00,{page}",  # row 7: not an image
            "P7,Sock,socks,1.00,../outside.png",  # row 8: outside the import root
            "P8,Cap,hats,2.00,http://10.0.0.5/cap.png",  # row 9: private address
            "P9,Glove,gloves,3.00,photos/broken.jpg",  # row 10: truncated image
            "P10,Shirt,shirts,-4.00,photos/shoe.png",  # row 11: negative price
            "P11,Boot,shoes,79.999,photos/shoe.png",  # row 12: three decimals
            "P12,Tie,ties,9.00,photos/nope.png",  # row 13: no such file
            "P13,Sandal,shoes,25.00,photos/shoe.png",  # row 14: good
        ]
    )


def test_api_import_reports_bad_rows_and_keeps_good_ones(staff_client, local_server, import_root, media_root):
    upload = SimpleUploadedFile("products.csv", mixed_csv(local_server).encode(), content_type="text/csv")
    response = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["created"], body["updated"]) == (3, 0)
    failed = {item["row"]: item for item in body["failed"]}
    assert sorted(failed) == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    assert "name" in failed[4]["error"]
    assert "price" in failed[5]["error"]
    assert failed[6]["code"] == "url_http_error"
    assert failed[7]["code"] == "url_not_an_image"
    assert failed[8]["code"] == "path_not_allowed"
    assert failed[9]["code"] == "url_host_not_allowed"
    assert failed[10]["code"] == "truncated_image"
    assert failed[13]["code"] == "file_not_found"
    assert sorted(Product.objects.values_list("sku", flat=True)) == ["P1", "P13", "P2"]
    stored = {p.name for p in media_root.rglob("*.*")}
    assert len(stored) == 3  # the three good images; nothing from the bad rows


def test_import_upserts_by_sku(staff_client, import_root):
    first = "id,name,category,price,image_url\nP1,Shoe,shoes,10.00,photos/shoe.png\n"
    second = "id,name,category,price,image_url\nP1,Shoe v2,shoes,12.00,photos/bag.jpg\nP2,Bag,bags,5,photos/bag.jpg\n"
    for content in (first, second):
        upload = SimpleUploadedFile("p.csv", content.encode(), content_type="text/csv")
        response = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart")
    assert response.json()["created"] == 1 and response.json()["updated"] == 1
    product = Product.objects.get(sku="P1")
    assert (product.name, str(product.price), product.image.name.endswith(".jpg")) == ("Shoe v2", "12.00", True)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"sku,title\nA,B\n", "csv_bad_header"),
        (b"\xff\xfe\x00bad", "csv_encoding"),
    ],
)
def test_whole_file_refusals(staff_client, content, code):
    upload = SimpleUploadedFile("p.csv", content, content_type="text/csv")
    response = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == code


def test_local_paths_refused_without_import_root(staff_client, settings):
    settings.CATALOG_IMPORT_ROOT = None
    content = b"id,name,category,price,image_url\nP1,Shoe,shoes,10.00,/etc/passwd\n"
    upload = SimpleUploadedFile("p.csv", content, content_type="text/csv")
    body = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()
    assert body["created"] == 0 and body["failed"][0]["code"] == "path_not_allowed"


def test_anonymous_cannot_import(api_client):
    upload = SimpleUploadedFile("p.csv", b"id,name,category,price,image_url\n", content_type="text/csv")
    assert api_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").status_code == 401


def test_management_command(local_server, import_root, tmp_path):
    csv_file = tmp_path / "products.csv"
    csv_file.write_text(mixed_csv(local_server))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_products", str(csv_file), "--no-progress", stdout=out, stderr=err)
    assert "3 created, 0 updated, 10 failed" in out.getvalue()
    assert "row 4:" in err.getvalue() and "row 13:" in err.getvalue()
    with pytest.raises(CommandError):
        call_command("import_products", str(tmp_path / "missing.csv"))


def test_management_command_draws_a_progress_bar(import_root, tmp_path, child_env):
    csv_file = tmp_path / "products.csv"
    csv_file.write_text("id,name,category,price,image_url\nP1,Shoe,shoes,10.00,photos/shoe.png\n")
    result = subprocess.run(
        [sys.executable, "manage.py", "import_products", str(csv_file)],
        capture_output=True,
        text=True,
        env={**child_env, "CATALOG_IMPORT_ROOT": str(import_root)},
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "1/1" in result.stderr and "row/s" in result.stderr


def test_admin_import_page(client, staff_user, import_root):
    staff_user.is_superuser = True
    staff_user.save()
    client.force_login(staff_user)
    page = client.get("/admin/catalog/product/import/")
    assert page.status_code == 200 and b"id,name,category,price,image_url" in page.content
    content = b"id,name,category,price,image_url\nP1,Shoe,shoes,10.00,photos/shoe.png\nP2,,x,1,photos/shoe.png\n"
    upload = SimpleUploadedFile("p.csv", content, content_type="text/csv")
    response = client.post("/admin/catalog/product/import/", {"file": upload})
    assert b"1 created, 0 updated, 1 failed." in response.content
    assert b"<td>3</td>" in response.content
    changelist = client.get("/admin/catalog/product/?category=shoes&q=Shoe")
    assert changelist.status_code == 200 and b"/thumbnail/" in changelist.content
