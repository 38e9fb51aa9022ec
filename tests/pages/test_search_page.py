"""The search page in a real browser: by file, from a product, preview, find similar, CSV
export, clear, refusals, and an honest word when part of the collection is not embedded."""

from __future__ import annotations

import pytest

from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, wait_for
from tests.search.helpers import add_gallery_image, add_product, index_now

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def collection():
    products = [add_product(images.jpeg_bytes(256, 256, seed=i), f"SKU{i}", category="shoes" if i % 2 else "bags",
                            name=f"Product {i}", price=f"{10 + i}.00") for i in range(4)]  # fmt: skip
    index_now(product_ids=[p.pk for p in products])
    add_gallery_image(images.png_bytes(seed=50), "not-yet.png")  # not embedded: no worker here
    return products


def test_search_by_file_preview_similar_export_and_clear(collection, live_server, browser_page, tmp_path,
                                                         screenshots):  # fmt: skip
    query = tmp_path / "query.jpg"
    query.write_bytes(images.jpeg_bytes(256, 256, seed=1))
    page = browser_page
    page.goto(live_server.url + "/search/")
    assert "4 of 5 images embedded" in page.inner_text("#coverage")
    page.set_input_files("#file", str(query))
    assert page.is_visible("#query-preview")
    page.fill("#k", "3")
    page.click("#go")
    page.wait_for_selector(".card.result")
    cards = page.locator(".card.result")
    assert cards.count() == 3
    assert "Product 1" in cards.nth(0).inner_text() and "100.0% similar" in cards.nth(0).inner_text()
    assert "shoes · 11.00" in cards.nth(0).inner_text()
    assert "1 item(s) not embedded yet" in page.inner_text("#state")

    cards.nth(1).locator("button.open").click()
    assert page.is_visible("#preview")
    page.keyboard.press("Escape")
    assert not page.is_visible("#preview")
    cards.nth(0).locator("button.open").click()
    page.click("#preview-similar")
    wait_for(page, "document.getElementById('from-item').textContent.includes('Product 1')")
    # The new results are in when Product 1 - the query itself - has left them.
    cards_now = "[...document.querySelectorAll('.card.result')]"
    wait_for(page, f"{cards_now}.length > 0 && !{cards_now}.some((c) => c.textContent.includes('Product 1'))")
    first = page.locator(".card.result .title").nth(0).inner_text()  # "Product N"

    with page.expect_download() as download:
        page.click("#export")
    text = open(download.value.path(), encoding="utf-8").read()
    assert text.splitlines()[0].startswith("query,rank,type,id,similarity")
    assert f"SKU{first.split()[-1]},{first}" in text.splitlines()[1] and "SKU1," not in text
    screenshots(page, "search")

    page.click("#clear")
    assert page.locator(".card.result").count() == 0 and page.is_disabled("#export")


def test_search_from_a_product_link_filters_and_refusals(collection, live_server, browser_page):
    page = browser_page
    page.goto(f"{live_server.url}/search/?product={collection[2].pk}")
    page.wait_for_selector(".card.result")
    assert "SKU2" not in page.inner_text("#results")  # the product itself is left out
    page.select_option("#category", "bags")
    page.click("#go")
    wait_for(page, "document.getElementById('state').textContent.includes('result(s)')")
    assert "shoes" not in page.inner_text("#results")
    page.click("#clear")
    page.fill("#image_url", "http://127.0.0.1/private.png")
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    assert "non-public address" in page.inner_text("#error")
    page.click("#clear")
    page.click("#go")
    assert "Choose an image" in page.inner_text("#error")
