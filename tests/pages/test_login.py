"""Logging in and out from any page: anonymous visitors see no write controls, an administrator does."""

from __future__ import annotations

import pytest

from tests.pages.conftest import NEEDS_CHROMIUM

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


@pytest.fixture
def staff(django_user_model):
    django_user_model.objects.create_superuser("ops", password="s3cret-pass")
    return "ops", "s3cret-pass"


def test_log_in_from_a_page_and_out_again(live_server, staff, browser_page):
    page = browser_page
    page.goto(live_server.url + "/gallery/")
    assert page.locator("header a:has-text('Admin')").count() == 0
    assert page.locator("#drop").count() == 0  # no upload control for anonymous visitors
    page.click("header a:has-text('Log in')")
    page.fill("#id_username", staff[0])
    page.fill("#id_password", staff[1])
    page.click("#login-form button[type=submit]")
    page.wait_for_url(live_server.url + "/gallery/")
    assert "ops" in page.inner_text("header") and page.locator("header a:has-text('Admin')").count() == 1
    assert page.locator("#drop").count() == 1
    page.click("header button:has-text('Log out')")
    page.wait_for_url(live_server.url + "/gallery/")
    assert page.locator("header a:has-text('Log in')").count() == 1 and page.locator("#drop").count() == 0
