"""The jobs and models page in a real browser: coverage, a job's progress, Build index and
Cancel for staff (no worker: the jobs stay queued, which is what is looked at)."""

from __future__ import annotations

import pytest

from search.services import items_index
from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, log_in
from tests.search.helpers import add_gallery_image

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def library(django_user_model):
    django_user_model.objects.create_user("ops", password="s3cret-pass", is_staff=True)
    made = [add_gallery_image(images.jpeg_bytes(120, 90, seed=i), f"p{i}.jpg") for i in range(3)]
    items_index(gallery_ids=[image.pk for image in made])
    return "ops", "s3cret-pass"


def test_jobs_and_models(live_server, library, browser_page, screenshots):
    page = browser_page
    page.goto(live_server.url + "/jobs/")
    page.wait_for_selector("#models tr:has-text('efficientnet_lite0')")
    assert "0 of 3 items" in page.inner_text("#models tr:has-text('efficientnet_lite0 (active)')")
    page.wait_for_selector("#jobs tr[data-id]")
    assert page.locator("#jobs button").count() == 0  # anonymous: no controls
    assert "queued" in page.inner_text("#jobs tr[data-id] >> nth=0")

    log_in(page, live_server.url, *library, "/jobs/")
    page.wait_for_selector("#jobs tr[data-id]")
    before = page.locator("#jobs tr[data-id]").count()
    page.click("#models tr:has-text('efficientnet_lite0 (active)') >> button:has-text('Build index')")
    page.wait_for_function(f"document.querySelectorAll('#jobs tr[data-id]').length === {before + 1}")
    newest = page.locator("#jobs tr[data-id]").nth(0)
    assert "efficientnet_lite0" in newest.inner_text() and "all" in newest.inner_text()
    newest.locator("button:has-text('Cancel')").click()
    page.wait_for_selector("#jobs tr[data-id] >> nth=0 >> td.state-cancelled")
    screenshots(page, "jobs")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= 390")
