"""The catalog pages in a real browser: the product grid with filters and pages, a product's
page with its similar products."""

from __future__ import annotations

import pytest

from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM
from tests.search.helpers import add_product, index_now

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def products():
    """Made before the browser starts (no ORM inside Playwright's sync block)."""
    made = [
        add_product(images.jpeg_bytes(256, 256, seed=i), f"SKU{i}", category="shoes" if i % 2 else "bags",
                    name=f"Product {i}", price=f"{10 + i}.00")
        for i in range(30)
    ]  # fmt: skip
    index_now(product_ids=[p.pk for p in made[:6]])
    return made


def test_browse_filter_and_see_similar_products(live_server, products, browser_page, screenshots):
    page = browser_page
    page.goto(live_server.url + "/catalog/")
    assert page.inner_text("#count") == "30 products"
    assert page.locator("#products .product").count() == 24  # first page
    page.click("a[rel=next]")
    assert page.locator("#products .product").count() == 6 and "Page 2 of 2" in page.inner_text("main")

    page.goto(live_server.url + "/catalog/")
    page.select_option("#category", "bags")
    page.fill("#max_price", "20")
    page.click("#catalog-form button[type=submit]")
    assert page.inner_text("#count") == "6 products"  # bags at 10, 12, ... 20
    assert all("bags" in text for text in page.locator("#products .product").all_inner_texts())
    screenshots(page, "catalog")

    page.click("#products .product >> nth=0")
    page.wait_for_selector("#similar .result")
    assert page.locator("#similar .result").count() >= 1
    assert "% similar" in page.locator("#similar .result").nth(0).inner_text()
    assert page.inner_text("#product-name") not in page.inner_text("#similar")  # not itself
    screenshots(page, "product")

    page.goto(live_server.url + "/catalog/?min_price=abc")
    assert "min_price must be a number" in page.inner_text("#catalog-error")
