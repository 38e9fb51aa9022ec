"""The gallery page in a real browser with a real Celery worker: upload through the file
chooser, generate features with live progress across a reload, search with a crop, preview,
shift-select and delete."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, log_in, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def staff(django_user_model):
    django_user_model.objects.create_superuser("curator", password="s3cret-pass")
    return "curator", "s3cret-pass"


def photos(tmp_path, count: int) -> list[str]:
    """Real photos from ../shared/data when present, else generated pictures."""
    found = sorted((images.SHARED_DATA / "vehicles").rglob("*.jpg"))[: count * 40 : 40]
    paths = []
    for i in range(count):
        data = found[i].read_bytes() if len(found) == count else images.jpeg_bytes(320, 240, seed=100 + i)
        path = tmp_path / f"photo{i}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def crop(path, tmp_path) -> str:
    with Image.open(path) as image:
        width, height = image.size
        part = image.convert("RGB").crop((width // 10, height // 10, width * 9 // 10, height * 9 // 10))
        buffer = io.BytesIO()
        part.save(buffer, "JPEG", quality=90)
    out = tmp_path / "crop.jpg"
    out.write_bytes(buffer.getvalue())
    return str(out)


def test_upload_embed_search_preview_and_delete(live_server, staff, workers, browser_page, tmp_path, screenshots):
    files = photos(tmp_path, 6)
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmations
    log_in(page, live_server.url, *staff, "/gallery/")
    page.set_input_files("#files", [str(path) for path in files])
    page.wait_for_selector(".toast:has-text('6 image(s) uploaded')")
    wait_for(page, "document.querySelectorAll('#thumbs .thumb').length === 6")
    assert "6 images" in page.inner_text("#page-label")
    assert page.locator("#thumbs .badge").count() == 6  # no worker yet: nothing embedded
    page.wait_for_selector("#coverage:has-text('0 of 6 images embedded')")

    page.click("#generate")
    page.wait_for_selector("#job:not([hidden])")
    page.reload()  # the progress is picked up again after a reload
    page.wait_for_selector("#job:not([hidden])")
    workers.start()
    # Its images may have been embedded by the uploads' own jobs first: then it had nothing to do.
    wait_for(page, "/^Features(: every| succeeded)/.test(document.getElementById('job-label').textContent)",
                           timeout=180_000)  # fmt: skip
    assert page.locator("#job-progress").evaluate("bar => bar.value") == 100
    wait_for(page, "document.querySelectorAll('#thumbs .badge').length === 0", timeout=60_000)
    page.wait_for_selector("#coverage:has-text('All 6 images embedded')")

    page.set_input_files("#query", crop(files[2], tmp_path))
    page.click("#search-form button[type=submit]")
    page.wait_for_selector("#results .result")
    first = page.locator("#results .result").nth(0)
    assert "photo2.jpg" in first.inner_text() and "% similar" in first.inner_text()

    page.click("#thumbs .thumb >> nth=0 >> button.open")
    page.wait_for_selector("#preview[open]")
    name = page.inner_text("#preview-name")
    page.keyboard.press("ArrowRight")
    assert page.inner_text("#preview-name") != name
    screenshots(page, "gallery-preview")
    page.keyboard.press("Escape")
    page.wait_for_selector("#preview[open]", state="detached")

    page.click("#thumbs .thumb >> nth=0 >> input.check")
    page.click("#thumbs .thumb >> nth=2 >> input.check", modifiers=["Shift"])
    assert page.inner_text("#delete-selected") == "Delete selected (3)"
    page.click("#delete-selected")
    page.wait_for_selector(".toast:has-text('3 image(s) deleted')")
    wait_for(page, "document.querySelectorAll('#thumbs .thumb').length === 3")
    assert page.locator("#results .result").count() == 3  # the deleted ones left the results too
    screenshots(page, "gallery")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= 390")
