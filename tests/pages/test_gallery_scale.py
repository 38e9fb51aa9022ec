"""The gallery at 50,000 images in a real browser: pages of light thumbnails, and no
main-thread task over 100 ms while scrolling and paging.

A task's length is read from Chromium's own trace of the page's main thread: its CPU time
(``tdur``), the work the page asked of the browser. Its wall-clock length (``dur``, what a
PerformanceObserver's long tasks report) is printed beside it but not asserted: on a shared
two-core CI machine it also counts the time the OS gave PostgreSQL and the live server (the
longest task is about 20 ms by the clock and 7-12 ms of CPU here; the observer once saw 106 ms
on a busy CI machine)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from catalog.models import GalleryImage
from tests import images
from tests.pages.conftest import NEEDS_CHROMIUM, wait_for
from tests.search.helpers import add_gallery_image

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]

COUNT = 50_000
TRACE_CATEGORIES = ["toplevel", "devtools.timeline", "disabled-by-default-devtools.timeline", "__metadata"]


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


def main_thread_tasks(trace: bytes) -> list[tuple[float, float]]:
    """(wall ms, CPU ms) of every task the renderer's main thread ran while tracing. A task
    the trace gives no CPU time (a few of a few thousand, of microseconds) counts its wall-clock."""
    events = json.loads(trace)
    events = events["traceEvents"] if isinstance(events, dict) else events
    main = {(e["pid"], e["tid"]) for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"
            and e["args"]["name"] == "CrRendererMain"}  # fmt: skip
    tasks = [e for e in events if e.get("ph") == "X" and e["name"] == "RunTask" and (e["pid"], e["tid"]) in main]
    assert tasks, "the trace shows no task of the page's main thread"
    return [(e["dur"] / 1000, e.get("tdur", e["dur"]) / 1000) for e in tasks]


def traced(page: object, action: Callable[[], None]) -> list[tuple[float, float]]:
    browser = page.context.browser
    browser.start_tracing(page=page, categories=TRACE_CATEGORIES)
    try:
        action()
    finally:
        trace = browser.stop_tracing()
    return main_thread_tasks(trace)


def test_fifty_thousand_images_scroll_and_page_without_long_tasks(live_server, library, browser_page):
    page = browser_page
    page.goto(live_server.url + "/gallery/")
    page.wait_for_selector("#thumbs .thumb")
    assert "Page 1 of 834 · 50000 images" in page.inner_text("#page-label")
    page.wait_for_load_state("networkidle")

    # The measurement sees a long task: 400 ms of busy JavaScript by the clock, of which a busy
    # machine gives the page less (two thirds with three processes spinning on two cores).
    busy = traced(
        page,
        lambda: page.evaluate("(() => { const end = performance.now() + 400; while (performance.now() < end); })()"),
    )
    assert max(cpu for _, cpu in busy) > 100, busy

    def scroll_and_page():
        for number in range(2, 5):
            for _ in range(12):
                page.mouse.wheel(0, 600)
                page.wait_for_timeout(40)
            page.click("#next")
            wait_for(page, f"document.getElementById('page-label').textContent.startsWith('Page {number} of')")
        page.fill("#page-jump", "834")
        page.click("#jump button")
        wait_for(page, "document.getElementById('page-label').textContent.startsWith('Page 834 of 834')")
        assert page.locator("#thumbs .thumb").count() == COUNT - 833 * 60
        for _ in range(8):
            page.mouse.wheel(0, -600)
            page.wait_for_timeout(40)
        page.wait_for_load_state("networkidle")

    tasks = traced(page, scroll_and_page)
    wall, cpu = max(wall for wall, _ in tasks), max(cpu for _, cpu in tasks)
    print(f"\n[gallery at {COUNT} images] {len(tasks)} main-thread tasks while scrolling and paging: "
          f"longest {cpu:.1f} ms of CPU, {wall:.1f} ms wall-clock")  # fmt: skip
    assert cpu <= 100, sorted(tasks, key=lambda task: -task[1])[:5]
