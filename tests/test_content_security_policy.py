"""The pages' security headers (a Content-Security-Policy without 'unsafe-inline', Referrer-Policy,
X-Content-Type-Options) and templates that keep to it: no inline script, style or event handler."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders

from tests import images
from tests.search.helpers import add_product

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"
# What a strict CSP refuses in a template: a script without src, a style element or attribute,
# an inline event handler, a javascript: URL.
INLINE = {
    "inline script": re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I),
    "style element": re.compile(r"<style\b", re.I),
    "style attribute": re.compile(r"\sstyle\s*=", re.I),
    "event handler": re.compile(r"\son[a-z]+\s*=", re.I),
    "javascript: URL": re.compile(r"javascript:", re.I),
}
# A JSON data block (the json_script filter) is not a script: it renders <script type="application/json">.
DATA_BLOCK = re.compile(r'<script id="[^"]+" type="application/json">')


def _directives(header: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


@pytest.fixture
def product():
    return add_product(images.jpeg_bytes(64, 64, seed=1), "CSP1", name="Boot")


def _pages(product) -> list[str]:
    return ["/", "/search/", "/catalog/", f"/catalog/{product.pk}/", "/gallery/", "/duplicates/", "/jobs/",
            "/signatures/", "/admin/", "/admin/catalog/product/",
            f"/admin/catalog/product/{product.pk}/change/", "/admin/search/embeddingmodelchoice/"]  # fmt: skip


def test_every_page_sends_a_strict_policy_and_the_other_headers(admin_client, client, product):
    anonymous = ["/", "/search/", "/catalog/", "/gallery/", "/signatures/", "/accounts/login/", "/admin/login/"]
    for who, browser, paths in (("anonymous", client, anonymous), ("admin", admin_client, _pages(product))):
        for path in paths:
            response = browser.get(path)
            assert response.status_code == 200, f"{who} {path}: {response.status_code}"
            policy = _directives(response["Content-Security-Policy"])
            for directive in ("script-src", "style-src"):
                assert policy[directive] == ["'self'"], f"{who} {path}: {directive} {policy[directive]}"
            assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
            assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'self'"]
            assert "'unsafe-inline'" not in response["Content-Security-Policy"]
            assert response["Referrer-Policy"] == "same-origin"
            assert response["X-Content-Type-Options"] == "nosniff"
            if path in ("/", "/search/", "/gallery/"):
                assert not INLINE["inline script"].search(DATA_BLOCK.sub("", response.content.decode())), path


def test_only_the_search_page_widens_img_src_for_a_pasted_urls_preview(client):
    assert "https:" in _directives(client.get("/search/")["Content-Security-Policy"])["img-src"]
    assert _directives(client.get("/gallery/")["Content-Security-Policy"])["img-src"] == ["'self'", "data:", "blob:"]


def test_the_api_docs_are_the_one_exemption(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200 and "Content-Security-Policy" not in response
    assert response["X-Content-Type-Options"] == "nosniff" and response["Referrer-Policy"] == "same-origin"


def test_no_template_holds_inline_script_style_or_handlers():
    found = []
    for template in sorted(TEMPLATES.rglob("*.html")):
        text = template.read_text()
        for what, pattern in INLINE.items():
            found += [f"{template.relative_to(TEMPLATES)}: {what} {m.group(0)!r}" for m in pattern.finditer(text)]
    assert not found, "\n".join(found)


def test_the_checks_catch_what_they_look_for():
    samples = {"inline script": "<script>x()</script>", "style element": "<style>a{}</style>",
               "style attribute": '<p style="x">', "event handler": '<a onclick="x()">',
               "javascript: URL": '<a href="javascript:x()">'}  # fmt: skip
    assert {what for what, sample in samples.items() if INLINE[what].search(sample)} == set(INLINE)
    assert not INLINE["inline script"].search('<script type="module" src="/static/web/js/api.js"></script>')


def test_the_pages_code_styles_and_icon_are_static_files():
    for name in ("web/css/app.css", "web/favicon.svg", "web/js/api.js", "web/js/bars.js", "web/js/search.js",
                 "web/js/gallery.js", "web/js/jobs.js", "web/js/duplicates.js", "web/js/signatures.js"):  # fmt: skip
        assert finders.find(name), name
