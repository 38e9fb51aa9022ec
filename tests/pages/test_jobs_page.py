"""The jobs and models page in a real browser: coverage, a job's progress, Build index and
Cancel for staff (no worker: the jobs stay queued, which is what is looked at)."""

from __future__ import annotations

import pytest

from search.models import TrainedModel
from search.services.indexing import items_index
from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, log_in, wait_for
from tests.search.helpers import add_gallery_image

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def library(django_user_model, role_user):
    django_user_model.objects.create_superuser("ops", password="s3cret-pass")
    role_user("reader", "viewer")
    made = [add_gallery_image(images.jpeg_bytes(120, 90, seed=i), f"p{i}.jpg") for i in range(3)]
    items_index(gallery_ids=[image.pk for image in made])
    return "ops", "s3cret-pass"


def test_jobs_and_models(live_server, library, browser_page, screenshots):
    page = browser_page
    page.goto(live_server.url + "/jobs/")
    page.wait_for_url("**/accounts/login/?next=/jobs/")  # jobs need a login whatever PUBLIC_READ says
    log_in(page, live_server.url, "reader", "s3cret-pass", "/jobs/")
    page.wait_for_selector("#models tr:has-text('efficientnet_lite0')")
    assert "0 of 3 items" in page.inner_text("#models tr:has-text('efficientnet_lite0 (active)')")
    page.wait_for_selector("#jobs tr[data-id]")
    assert page.locator("#jobs button").count() == 0  # a viewer: no controls
    assert "queued" in page.inner_text("#jobs tr[data-id] >> nth=0")

    page.context.clear_cookies()
    log_in(page, live_server.url, *library, "/jobs/")
    page.wait_for_selector("#jobs tr[data-id]")
    before = page.locator("#jobs tr[data-id]").count()
    page.click("#models tr:has-text('efficientnet_lite0 (active)') >> button:has-text('Build index')")
    wait_for(page, f"document.querySelectorAll('#jobs tr[data-id]').length === {before + 1}")
    newest = page.locator("#jobs tr[data-id]").nth(0)
    assert "efficientnet_lite0" in newest.inner_text() and "all" in newest.inner_text()
    newest.locator("button:has-text('Cancel')").click()
    page.wait_for_selector("#jobs tr[data-id] >> nth=0 >> td.state-cancelled")
    screenshots(page, "jobs")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= 390")


@pytest.fixture
def trained_model():
    return TrainedModel.objects.create(
        key="fashion", base="efficientnet_lite0", source="catalog", status="succeeded", dim=256,
        classes=["Bag", "Coat"], weights="models/embeddings/fashion/weights.pt",
        metrics={"dataset": "the catalog", "test": {"precision@10": 0.91, "map@10": 0.88},
                 "base_test": {"precision@10": 0.72, "map@10": 0.63}, "test_accuracy": 0.9},
    )  # fmt: skip


def test_a_trained_model_shows_its_test_figures_and_can_be_built_then_activated(
    live_server, library, trained_model, browser_page
):
    page = browser_page
    log_in(page, live_server.url, *library, "/jobs/")
    row = "#models tr:has-text('fashion')"
    page.wait_for_selector(row)
    text = page.inner_text(row)
    assert "precision@10 0.91 (efficientnet_lite0: 0.72)" in text and "accuracy 0.9" in text
    page.click(f"{row} >> button:has-text('Build, then activate')")
    page.wait_for_selector("#jobs tr[data-id]:has-text('fashion')")
    jobs = page.evaluate("fetch('/api/v1/index/jobs/').then((r) => r.json())")
    assert [job["activate_when_done"] for job in jobs["results"] if job["model"] == "fashion"] == [True]


@pytest.fixture
def queued_import():
    from django.core.files.uploadedfile import SimpleUploadedFile

    from catalog.csv_import import product_import_create

    upload = SimpleUploadedFile("spring.csv", b"id,name,category,price,image_url\nS1,S,x,1,a.png\n", "text/csv")
    return product_import_create(upload=upload, dispatch=False)


def test_staff_cancel_a_csv_import(live_server, library, queued_import, browser_page):
    page = browser_page
    log_in(page, live_server.url, "reader", "s3cret-pass", "/jobs/")
    row = f"tr:has-text('#{queued_import.pk}')"
    assert "queued" in page.inner_text(row) and page.locator(f"{row} button").count() == 0
    page.context.clear_cookies()
    log_in(page, live_server.url, *library, "/jobs/")
    with page.expect_navigation():
        page.click(f"{row} >> button:has-text('Cancel')")
    assert "cancelled" in page.inner_text(row) and page.locator(f"{row} button").count() == 0
