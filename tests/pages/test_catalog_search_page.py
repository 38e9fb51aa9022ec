"""The catalog search page in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import pytest

from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, wait_for
from tests.search.helpers import add_product, index_now

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def products():
    """Made before the browser starts: Playwright's sync API switches contexts, and ORM work
    done inside it would open a second connection that nothing closes."""
    made = [
        add_product(images.jpeg_bytes(256, 256, seed=i), f"SKU{i}", category="shoes" if i % 2 else "bags",
                    name=f"Product {i}")
        for i in range(4)
    ]  # fmt: skip
    index_now(product_ids=[p.pk for p in made])
    return made


def test_find_similar_products_by_photo(products, live_server, browser_page, tmp_path):
    query = tmp_path / "query.jpg"
    query.write_bytes(images.jpeg_bytes(256, 256, seed=1))
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(images.TEXT)

    page = browser_page
    page.goto(live_server.url + "/")
    assert page.input_value("#threshold") == "70"
    page.set_input_files("#file", str(query))
    page.click("button[type=submit]")
    page.wait_for_selector("#results")
    cards = page.locator(".card.result")
    assert cards.count() >= 1
    first = cards.nth(0)
    assert "Product 1" in first.inner_text() and "SKU1" in first.inner_text()
    assert "% similar" in first.locator(".similarity").inner_text()
    width = first.locator(".bar > span").evaluate("e => e.getBoundingClientRect().width")
    assert width > 0
    thumbnail = first.locator("img")
    # The thumbnail is made on its first request: wait for it to arrive (or fail) before measuring.
    wait_for(page, "img => img.complete", arg=thumbnail.element_handle(), timeout=15_000)
    assert thumbnail.evaluate("img => img.complete && img.naturalWidth") == 200
    page.screenshot(path=str(tmp_path / "results.png"), full_page=True)

    page.select_option("#category", "bags")
    page.set_input_files("#file", str(query))
    page.click("button[type=submit]")
    page.wait_for_selector("#results")
    assert "SKU1" not in page.locator("#results").inner_text()

    page.set_input_files("#file", str(bad))
    page.click("button[type=submit]")
    page.wait_for_selector("#search-error")
    assert "not a PNG, JPEG" in page.locator("#search-error").inner_text()


@pytest.fixture
def gallery():
    from tests.search.helpers import add_gallery_image

    made = [add_gallery_image(images.jpeg_bytes(160, 120, seed=20 + i), f"holiday{i}.jpg") for i in range(3)]
    index_now(gallery_ids=[image.pk for image in made])
    return made


def test_the_home_page_shows_the_image_library_and_leads_to_search(gallery, live_server, browser_page, screenshots):
    page = browser_page
    page.goto(live_server.url + "/")
    screenshots(page, "home")
    library = page.locator("#library")
    assert "3 images in the gallery" in library.inner_text()
    assert library.locator("a.card").count() == 3
    library.locator(f"a[title='{gallery[0].original_filename}']").click()
    page.wait_for_url(f"**/search/?gallery_image={gallery[0].pk}")
    page.wait_for_selector(".result")
    assert "holiday" in page.inner_text("main")
