"""The duplicates review in a real browser: groups paged on the server, the copy to keep
pre-selected by the rule, keep one / not duplicates per group and for selected groups, and
the keyboard shortcuts."""

from __future__ import annotations

import numpy as np
import pytest

from tests.pages.conftest import NEEDS_CHROMIUM, log_in
from tests.search.helpers import gallery_images_with_vectors, vectors_near

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def library(django_user_model, role_user, monkeypatch):
    """Four groups of copies (the largest copy is the second of each group) and a loner; two
    groups to a page."""
    monkeypatch.setattr("web.views.duplicates.DUPLICATES_PAGE_SIZE", 2)
    django_user_model.objects.create_superuser("ops", password="s3cret-pass")
    role_user("reader", "viewer")
    rng = np.random.default_rng(1)
    bases = rng.standard_normal((5, 1280))
    groups = [
        gallery_images_with_vectors(
            [(60, 40), (120, 80), (30, 20)][: 3 - g % 2], vectors_near(bases[g], 3 - g % 2, rng), name=f"g{g}-"
        )  # fmt: skip
        for g in range(4)
    ]
    gallery_images_with_vectors([(50, 50)], vectors_near(bases[4], 1, rng), name="loner")
    return groups


def _names(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        ".group", "gs => gs.map(g => [...g.querySelectorAll('.copy label > span:not(.keep-tag):not(.muted)')]"
        ".map(s => s.textContent))",
    )  # fmt: skip


def test_viewers_see_the_groups_without_controls(live_server, library, browser_page):
    page = browser_page
    page.goto(live_server.url + "/duplicates/")
    page.wait_for_url("**/accounts/login/?next=/duplicates/")  # the review needs a login whatever PUBLIC_READ says
    log_in(page, live_server.url, "reader", "s3cret-pass", "/duplicates/")
    assert "4 groups · page 1 of 2" in page.inner_text("#review")
    assert page.locator(".group").count() == 2
    assert page.locator("#review button, #review input[type=radio]").count() == 0
    page.click("a[rel=next]")
    assert page.locator(".group").count() == 2 and "page 2 of 2" in page.inner_text("#review")


def test_staff_keep_one_copy_and_dismiss_groups_with_the_mouse_and_the_keyboard(
    live_server, library, browser_page, screenshots
):
    page = browser_page
    log_in(page, live_server.url, "ops", "s3cret-pass", "/duplicates/")
    groups = _names(page)
    assert len(groups) == 2
    # The largest resolution is pre-selected and listed first.
    first = page.locator(".group").nth(0)
    checked = first.locator("input[type=radio]:checked")
    assert checked.count() == 1
    assert "120×80" in first.locator(".copy").nth(0).inner_text()
    screenshots(page, "duplicates")

    # Keyboard: j to the first group, 2 to keep its second copy, d to delete the others.
    kept = groups[0][1]
    page.locator("body").press("j")
    page.keyboard.press("2")
    assert first.locator("input[type=radio]").nth(1).is_checked()
    with page.expect_navigation():
        page.keyboard.press("d")
    assert "Kept one copy of 1 group; deleted" in page.inner_text("[role=status]")
    remaining = _names(page)
    assert len(remaining) == 2 and all(kept not in group for group in remaining)
    assert "3 groups" in page.inner_text("#review")

    # n on the focused group: not duplicates, remembered after a reload.
    dismissed = remaining[0]
    page.locator("body").press("j")
    with page.expect_navigation():
        page.keyboard.press("n")
    assert "1 group marked as not duplicates." in page.inner_text("[role=status]")
    page.reload()
    assert dismissed not in _names(page) and "2 groups" in page.inner_text("#review")

    # The rest: select all on the page, keep one in each (confirmed).
    page.check("#select-all")
    assert page.inner_text("#selected-count") == "2 selected"
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("#bulk-keep")
    assert "Kept one copy of 2 groups" in page.inner_text("[role=status]")
    assert "No near-duplicates" in page.inner_text("main")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= 390")


def test_the_keep_rule_and_threshold_are_chosen_on_the_page(live_server, library, browser_page):
    page = browser_page
    log_in(page, live_server.url, "ops", "s3cret-pass", "/duplicates/")
    page.goto(live_server.url + "/duplicates/?collection=products&threshold=99")
    assert "No near-duplicates at 99.0%" in page.inner_text("main")
    page.goto(live_server.url + "/duplicates/?keep=oldest")
    assert "the first added" in page.inner_text("main")
    assert "60×40" in page.locator(".group").nth(0).locator(".copy").nth(0).inner_text()
    page.goto(live_server.url + "/duplicates/?keep=biggest")
    assert "Keep must be one of" in page.inner_text("[role=alert]")
