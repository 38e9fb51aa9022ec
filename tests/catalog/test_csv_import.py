from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from catalog.csv_import import product_import_run
from catalog.models import Product
from tests import images

pytestmark = pytest.mark.django_db(transaction=True)


def import_csv(client, content: bytes | str, name: str = "products.csv") -> dict:
    """POST a CSV (202 at once), run its job here as a worker would, return the report."""
    data = content.encode() if isinstance(content, str) else content
    response = client.post("/api/v1/products/import/", {"file": SimpleUploadedFile(name, data, "text/csv")},
                           format="multipart")  # fmt: skip
    assert response.status_code == 202, response.json()
    job = response.json()
    assert job["state"] == "queued"
    product_import_run(import_id=job["id"])
    report = client.get(f"/api/v1/products/imports/{job['id']}/").json()
    assert report["state"] == "succeeded", report
    return report


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
    body = import_csv(staff_client, mixed_csv(local_server))
    assert (body["created"], body["updated"], body["total"], body["done"], body["percent"]) == (3, 0, 13, 13, 100.0)
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
    stored = {p.name for p in (media_root / "images").rglob("*.*")}
    assert len(stored) == 3  # the three good images; nothing from the bad rows


def test_import_upserts_by_sku(staff_client, import_root):
    first = "id,name,category,price,image_url\nP1,Shoe,shoes,10.00,photos/shoe.png\n"
    second = "id,name,category,price,image_url\nP1,Shoe v2,shoes,12.00,photos/bag.jpg\nP2,Bag,bags,5,photos/bag.jpg\n"
    import_csv(staff_client, first)
    report = import_csv(staff_client, second)
    assert report["created"] == 1 and report["updated"] == 1
    product = Product.objects.get(sku="P1")
    assert (product.name, str(product.price), product.image.name.endswith(".jpg")) == ("Shoe v2", "12.00", True)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"sku,title\nA,B\n", "csv_bad_header"),
        (b"\xff\xfe\x00bad", "csv_encoding"),
        (b"id,name,category,price,image_url\nP1,caf\xe9,x,1,a.png\n", "csv_encoding"),
        (b"", "empty"),
    ],
)
def test_whole_file_refusals(staff_client, media_root, content, code):
    upload = SimpleUploadedFile("p.csv", content, content_type="text/csv")
    response = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert not (media_root / "imports").exists() or not any((media_root / "imports").iterdir())


def test_oversize_file_is_refused_before_it_is_read(staff_client, settings):
    settings.CSV_IMPORT_MAX_BYTES = 100
    content = b"id,name,category,price,image_url\n" + b"P1,Shoe,shoes,10.00,photos/shoe.png\n" * 10
    upload = SimpleUploadedFile("p.csv", content, content_type="text/csv")
    response = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart")
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"


def test_local_paths_refused_without_import_root(staff_client, settings):
    settings.CATALOG_IMPORT_ROOT = None
    body = import_csv(staff_client, b"id,name,category,price,image_url\nP1,Shoe,shoes,10.00,/etc/passwd\n")
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
    assert response.status_code == 302
    job_page = response["Location"]
    assert "/admin/catalog/productimport/" in job_page
    product_import_run(import_id=int(job_page.rstrip("/").split("/")[-2]))
    page = client.get(job_page).content.decode()
    assert "2 / 2 rows (100.0%)" in page and "succeeded" in page
    assert "csv_row_invalid" in page and "&#x27;name&#x27; is missing" in page
    changelist = client.get("/admin/catalog/product/?category=shoes&q=Shoe")
    assert changelist.status_code == 200 and b"/thumbnail/" in changelist.content


def test_every_bad_row_kind_fails_alone_with_record_numbers(staff_client, import_root, local_server):
    """Rows that used to end the whole import with a 500 are failed rows now; numbers are
    CSV record numbers, right after a multi-line cell."""
    rows = [
        "id,name,category,price,image_url",
        'P1,"Shoe with a',  # record 2 spans two lines
        'long name",shoes,1.00,photos/shoe.png',
        "P2,Huge,x,1.00," + "y" * 140_000,  # record 3: a cell over the csv module's limit
        "P3,Long path,x,1.00,photos/" + "x" * 300 + ".png",  # record 4: a name the file system refuses
        "P4,Nul,x,1.00,photos/\x00shoe.png",  # record 5: a NUL byte in the path
        "P5,Bad URL,x,1.00,http://[x/",  # record 6: an invalid URL
        "P6,Too many,x,1.00,photos/shoe.png,extra",  # record 7
        "P7,Bag,bags,2.00,photos/bag.jpg",  # record 8: good
    ]
    report = import_csv(staff_client, "\n".join(rows) + "\n")
    failed = {item["row"]: item["code"] for item in report["failed"]}
    assert failed == {3: "csv_row_unreadable", 4: "path_invalid", 5: "path_invalid", 6: "url_invalid",
                      7: "csv_row_invalid"}  # fmt: skip
    assert (report["created"], report["total"], report["done"]) == (2, 7, 7)
    assert Product.objects.get(sku="P1").name == "Shoe with a\nlong name"
    assert all("/" + "tmp" not in item["error"] and str(import_root) not in item["error"] for item in report["failed"])


def test_formula_cells_fail_their_rows(staff_client, import_root):
    rows = [
        "id,name,category,price,image_url",
        'F1,"=HYPERLINK(""http://evil.example"",""click"")",shoes,1.00,photos/shoe.png',
        "F2,Shoe,@SUM(A1:A9),1.00,photos/shoe.png",
        "+F3,Shoe,shoes,1.00,photos/shoe.png",
        "F4,-20% sale,shoes,1.00,photos/shoe.png",  # a name, not a formula
    ]
    report = import_csv(staff_client, "\n".join(rows) + "\n")
    assert {item["row"]: item["code"] for item in report["failed"]} == {2: "csv_formula_cell", 3: "csv_formula_cell",
                                                                       4: "csv_formula_cell"}  # fmt: skip
    assert list(Product.objects.values_list("sku", flat=True)) == ["F4"]


def test_products_are_queued_for_embedding_chunk_by_chunk(staff_client, import_root, settings):
    from search.models import IndexBatch

    settings.CSV_IMPORT_CHUNK_ROWS = 2
    rows = ["id,name,category,price,image_url"] + [f"P{i},Item {i},x,1.00,photos/shoe.png" for i in range(5)]
    import_csv(staff_client, "\n".join(rows))
    batches = list(IndexBatch.objects.order_by("pk").values_list("product_ids", flat=True))
    assert [len(ids) for ids in batches] == [2, 2, 1]  # one job per chunk, as the chunks landed


def test_a_changed_image_behind_the_same_url_is_fetched_again(staff_client, local_server, media_root):
    url = local_server.add_bytes("/p.png", images.png_bytes(seed=1))
    import_csv(staff_client, f"id,name,category,price,image_url\nP1,Shoe,shoes,1.00,{url}\n")
    first = Product.objects.get(sku="P1").sha256
    local_server.add_bytes("/p.png", images.png_bytes(seed=2))
    report = import_csv(staff_client, f"id,name,category,price,image_url\nP1,Shoe,shoes,1.00,{url}\n")
    assert report["updated"] == 1 and Product.objects.get(sku="P1").sha256 != first


def test_import_events_stream_the_job(staff_client, import_root):
    import json

    upload = SimpleUploadedFile("p.csv", b"id,name,category,price,image_url\nP1,S,x,1,photos/shoe.png\n", "text/csv")
    job = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()
    product_import_run(import_id=job["id"])
    response = staff_client.get(f"/api/v1/products/imports/{job['id']}/events/", HTTP_ACCEPT="text/event-stream")
    assert response["Content-Type"] == "text/event-stream"
    chunks = [chunk.decode() for chunk in response.streaming_content]
    assert chunks[0] == "retry: 3000\n\n"
    events = [json.loads(chunk.removeprefix("data: ")) for chunk in chunks if chunk.startswith("data: ")]
    assert events[-1]["state"] == "succeeded" and events[-1]["created"] == 1
    assert staff_client.get("/api/v1/products/imports/999999/").status_code == 404


def test_a_second_delivery_does_not_run_an_import_twice(staff_client, import_root):
    from catalog.models import ProductImport

    upload = SimpleUploadedFile("p.csv", b"id,name,category,price,image_url\nP1,S,x,1,photos/shoe.png\n", "text/csv")
    job_id = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()["id"]
    product_import_run(import_id=job_id)
    product_import_run(import_id=job_id)  # a redelivered message finds the import finished
    job = ProductImport.objects.get(pk=job_id)
    assert (job.state, job.created, job.updated, job.done) == ("succeeded", 1, 0, 1)


def test_cancelling_an_import_stops_it_after_its_chunk_and_keeps_what_was_imported(staff_client, import_root, settings):
    from catalog.models import ProductImport

    settings.CSV_IMPORT_CHUNK_ROWS = 2
    rows = ["id,name,category,price,image_url"] + [f"C{i},Item {i},x,1.00,photos/shoe.png" for i in range(6)]
    upload = SimpleUploadedFile("c.csv", "\n".join(rows).encode(), "text/csv")
    job_id = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()["id"]

    def cancel_after_the_first_chunk(job) -> None:
        if job.done == 2:
            response = staff_client.post(f"/api/v1/products/imports/{job_id}/cancel/")
            assert response.status_code == 200 and response.json()["state"] == "cancelled"

    product_import_run(import_id=job_id, progress=cancel_after_the_first_chunk)
    job = ProductImport.objects.get(pk=job_id)
    assert (job.state, job.done, job.created) == ("cancelled", 4, 4)  # the chunk under way finished
    assert Product.objects.count() == 4
    product_import_run(import_id=job_id)  # a redelivered message does not resume it
    assert Product.objects.count() == 4
    again = staff_client.post(f"/api/v1/products/imports/{job_id}/cancel/")
    assert again.status_code == 200  # cancelling twice is harmless


def test_a_queued_import_cancelled_never_runs_and_a_finished_one_cannot_be(staff_client, api_client, import_root):
    csv = b"id,name,category,price,image_url\nQ1,S,x,1,photos/shoe.png\n"
    upload = SimpleUploadedFile("q.csv", csv, "text/csv")
    queued = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()["id"]
    assert api_client.post(f"/api/v1/products/imports/{queued}/cancel/").status_code == 401
    assert staff_client.post(f"/api/v1/products/imports/{queued}/cancel/").json()["state"] == "cancelled"
    product_import_run(import_id=queued)
    assert not Product.objects.exists()
    finished = import_csv(staff_client, csv)["id"]
    refused = staff_client.post(f"/api/v1/products/imports/{finished}/cancel/")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "import_finished"
    assert staff_client.post("/api/v1/products/imports/999999/cancel/").status_code == 404


def test_the_admin_cancels_selected_imports(admin_client, staff_client, import_root):
    from catalog.models import ProductImport

    upload = SimpleUploadedFile("a.csv", b"id,name,category,price,image_url\nA1,S,x,1,photos/shoe.png\n", "text/csv")
    job_id = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart").json()["id"]
    response = admin_client.post("/admin/catalog/productimport/", {"action": "cancel", "_selected_action": [job_id]},
                                 follow=True)  # fmt: skip
    assert "1 import cancelled." in response.content.decode()
    assert ProductImport.objects.get(pk=job_id).state == "cancelled"
