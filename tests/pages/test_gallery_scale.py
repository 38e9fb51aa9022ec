"""The gallery at 50,000 images in a real browser: pages of light thumbnails, and no
main-thread task over 100 ms while scrolling and paging (PerformanceObserver long tasks)."""

from __future__ import annotations

import pytest

from catalog.models import GalleryImage
from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM
from tests.search.helpers import add_gallery_image

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]

COUNT = 50_000
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
  .observe({type: "longtask", buffered: true});
"""


@pytest.fixture
def library():
    """50,000 rows sharing one stored photo (one thumbnail), inserted in bulk."""
    first = add_gallery_image(images.jpeg_bytes(640, 480, seed=3), "photo-0.jpg")
    GalleryImage.objects.bulk_create(
        (GalleryImage(file=first.file.name, original_filename=f"photo-{i}.jpg", sha256=first.sha256, width=640,
                      height=480) for i in range(1, COUNT)),
        batch_size=5000,
    )  # fmt: skip
    return COUNT


def test_fifty_thousand_images_scroll_and_page_without_long_tasks(live_server, library, browser_page):
    page = browser_page
    page.add_init_script(LONG_TASKS)
    page.goto(live_server.url + "/gallery/")
    page.wait_for_selector("#thumbs .thumb")
    assert "Page 1 of 834 · 50000 images" in page.inner_text("#page-label")
    page.wait_for_load_state("networkidle")
    page.evaluate("setTimeout(() => { const end = performance.now() + 150; while (performance.now() < end); })")
    page.wait_for_function("window.__longTasks.some((d) => d >= 150)")  # the observer sees long tasks
    page.evaluate("window.__longTasks = []")  # from here on: the user scrolling and paging

    for number in range(2, 5):
        for _ in range(12):
            page.mouse.wheel(0, 600)
            page.wait_for_timeout(40)
        page.click("#next")
        page.wait_for_function(f"document.getElementById('page-label').textContent.startsWith('Page {number} of')")
    page.fill("#page-jump", "834")
    page.click("#jump button")
    page.wait_for_function("document.getElementById('page-label').textContent.startsWith('Page 834 of 834')")
    assert page.locator("#thumbs .thumb").count() == COUNT - 833 * 60
    for _ in range(8):
        page.mouse.wheel(0, -600)
        page.wait_for_timeout(40)
    page.wait_for_load_state("networkidle")
    long_tasks = page.evaluate("window.__longTasks")
    print(f"\n[gallery at {COUNT} images] long tasks while scrolling and paging: {len(long_tasks)}, "
          f"longest {max(long_tasks, default=0):.0f} ms")  # fmt: skip
    assert max(long_tasks, default=0) <= 100, long_tasks
