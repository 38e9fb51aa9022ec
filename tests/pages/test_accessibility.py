"""Every page through axe-core (the accessibility engine, bundled by axe-playwright-python:
nothing is fetched), anonymous and as staff: no WCAG 2.1 A/AA violation, no violation of the
Content-Security-Policy, no missing static file."""

from __future__ import annotations

import numpy as np
import pytest

from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, csp_violations, log_in
from tests.search.helpers import FakeEmbedder, add_product, gallery_images_with_vectors, index_now, vectors_near

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


@pytest.fixture
def content(django_user_model, monkeypatch):
    """Products, gallery images in a duplicate group and a staff user (made before the browser)."""
    monkeypatch.setattr("search.embedders.get_embedder", lambda key: FakeEmbedder())
    django_user_model.objects.create_superuser("ops", password="s3cret-pass")
    products = [add_product(images.jpeg_bytes(128, 128, seed=i), f"SKU{i}", category="shoes", name=f"Shoe {i}",
                            price=f"{20 + i}.00") for i in range(3)]  # fmt: skip
    index_now(product_ids=[product.pk for product in products])
    rng = np.random.default_rng(0)
    gallery_images_with_vectors([(64, 48), (128, 96)], vectors_near(rng.standard_normal(1280), 2, rng))
    return products


def _pages(products) -> list[str]:
    return ["/", "/search/", "/catalog/", f"/catalog/{products[0].pk}/", "/gallery/", "/duplicates/", "/jobs/",
            "/signatures/"]  # fmt: skip


def _violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    page.wait_for_load_state("networkidle")
    found = Axe().run(page, options=WCAG).response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}" for v in found]


def test_no_page_has_an_accessibility_violation(live_server, content, browser_page):
    page = browser_page
    page.set_content("<html lang=en><title>t</title><main><img src='data:,'><input></main></html>")
    assert {v.split(" ")[0] for v in _violations(page)} >= {"image-alt", "label"}  # the checker checks
    missing = []  # static files and the icon the pages ask for

    def asked(response) -> None:
        if response.status >= 400 and ("/static/" in response.url or "favicon" in response.url):
            missing.append(response.url)

    page.on("response", asked)
    problems = {}
    for path in _pages(content):
        page.goto(live_server.url + path)
        problems[f"anonymous {path}"] = _violations(page) + csp_violations(page)[:]
        page.csp_violations.clear()
    log_in(page, live_server.url, "ops", "s3cret-pass", "/gallery/")
    for path in _pages(content):
        page.goto(live_server.url + path)
        problems[f"staff {path}"] = _violations(page) + csp_violations(page)[:]
        page.csp_violations.clear()
    assert page.evaluate("[...document.styleSheets].some((sheet) => (sheet.href || '').endsWith('/web/css/app.css'))")
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("/web/favicon.svg")
    assert not missing, missing
    problems = {where: found for where, found in problems.items() if found}
    assert not problems, "\n".join(f"{where}: {v}" for where, found in problems.items() for v in found)
