"""The API docs render offline: Swagger UI is served by the app, nothing from a CDN."""

from __future__ import annotations

import pytest

from tests.pages.conftest import NEEDS_CHROMIUM

pytestmark = [pytest.mark.django_db(transaction=True), NEEDS_CHROMIUM]


def test_api_docs_render_without_the_internet(live_server, browser_page, screenshots):
    page = browser_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(live_server.url + "/api/v1/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
    assert "simsite API" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector(".opblock-tag-section")
    assert page.locator(".opblock").count() > 20  # the operations are listed
    outside = [url for url in requested if not url.startswith(live_server.url) and not url.startswith("data:")]
    assert outside == []
    screenshots(page, "api-docs")
