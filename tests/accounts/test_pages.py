"""The pages follow the API's rules: what a visitor may see (PUBLIC_READ, roles), the
controls shown only to who may use them, and the same rate limits as the API for the same
work, with a friendly 429 page."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from signatures.models import Signer
from tests import images
from tests.search.helpers import FakeEmbedder, add_gallery_image, add_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(monkeypatch, settings):
    monkeypatch.setattr("search.embedders.get_embedder", lambda spec: FakeEmbedder())
    settings.API_THROTTLE_RATES = {}
    product = add_product(images.jpeg_bytes(96, 96, seed=1), "SKU-1", category="shoes")
    add_gallery_image(images.png_bytes(seed=2), "g.png")
    Signer.objects.create(name="Ada Lovelace-Secret", external_id="C-77")
    return product


@pytest.fixture
def visitors(role_user, staff_user):
    made = {"anonymous": Client()}
    for role in ("viewer", "catalog_editor", "signature_officer", "model_manager"):
        made[role] = Client()
        made[role].force_login(role_user(role, role))
    made["superuser"] = Client()
    made["superuser"].force_login(staff_user)
    return made


READERS = {"viewer", "catalog_editor", "model_manager", "superuser"}
EVERYONE = {"anonymous", "signature_officer", *READERS}


def pages(product_id: int) -> dict[str, dict[str, set[str]]]:
    """page -> PUBLIC_READ setting -> who may see it."""
    catalog = {"default": EVERYONE, "catalog": EVERYONE, "none": READERS}
    return {
        "/": catalog,
        "/catalog/": catalog,
        f"/catalog/{product_id}/": catalog,
        "/gallery/": {"default": EVERYONE, "catalog": READERS, "none": READERS},
        "/search/": {"default": EVERYONE, "catalog": EVERYONE, "none": READERS},
        "/jobs/": {"default": READERS, "catalog": READERS, "none": READERS},
        "/duplicates/": {"default": READERS, "catalog": READERS, "none": READERS},
        "/signatures/": {"default": EVERYONE, "catalog": EVERYONE, "none": EVERYONE},
    }


@pytest.mark.parametrize("public_read", ["default", "catalog", "none"])
def test_each_page_answers_who_may_see_it(catalog, visitors, settings, public_read):
    settings.PUBLIC_READ = {"default": frozenset({"catalog", "gallery"}), "catalog": frozenset({"catalog"}),
                            "none": frozenset()}[public_read]  # fmt: skip
    for path, rules in pages(catalog.pk).items():
        for who, client in visitors.items():
            response = client.get(path)
            if who in rules[public_read]:
                assert response.status_code == 200, (path, who, response.status_code)
            elif who == "anonymous":
                assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next="), (
                    path, response.status_code)  # fmt: skip
            else:
                assert response.status_code == 403 and b"permission" in response.content, (path, who)


def test_pages_show_only_the_controls_one_may_use(catalog, visitors):
    gallery = {
        who: visitors[who].get("/gallery/").content.decode() for who in ("anonymous", "viewer", "catalog_editor")
    }
    assert 'id="drop"' not in gallery["anonymous"] and 'id="drop"' not in gallery["viewer"]
    assert 'id="drop"' in gallery["catalog_editor"] and 'id="delete-all"' in gallery["catalog_editor"]
    signatures = {who: visitors[who].get("/signatures/").content.decode() for who in visitors}
    for who in ("anonymous", "viewer", "catalog_editor", "model_manager"):
        assert "Ada Lovelace-Secret" not in signatures[who] and 'id="verify-form"' not in signatures[who]
        assert 'id="compare-form"' in signatures[who]  # compare stays open
    assert (
        "Ada Lovelace-Secret" in signatures["signature_officer"]
        and 'id="verify-form"' in signatures["signature_officer"]
    )
    assert 'id="signers-private"' in signatures["anonymous"]
    assert 'data-activate="' not in signatures["signature_officer"]  # activating encoders is the model managers'
    nav = {who: visitors[who].get("/catalog/").content.decode() for who in ("anonymous", "viewer")}
    assert 'href="/jobs/"' not in nav["anonymous"] and 'href="/duplicates/"' not in nav["anonymous"]
    assert 'href="/jobs/"' in nav["viewer"] and 'href="/duplicates/"' in nav["viewer"]
    assert 'href="/admin/"' not in nav["viewer"]  # no staff status, no admin link
    jobs = {who: visitors[who].get("/jobs/").content.decode() for who in ("viewer", "catalog_editor", "model_manager")}
    assert _flag(jobs["viewer"], "can-index") is False and _flag(jobs["viewer"], "can-activate") is False
    assert _flag(jobs["catalog_editor"], "can-index") is True and _flag(jobs["catalog_editor"], "can-activate") is False
    assert _flag(jobs["model_manager"], "can-index") is True and _flag(jobs["model_manager"], "can-activate") is True


def test_the_search_page_offers_only_the_collections_one_may_search(catalog, visitors, settings):
    settings.PUBLIC_READ = frozenset({"catalog"})
    anonymous = visitors["anonymous"].get("/search/").content.decode()
    assert '<option value="products">' in anonymous
    assert '<option value="all">' not in anonymous and '<option value="gallery">' not in anonymous
    assert '<option value="all">' in visitors["viewer"].get("/search/").content.decode()


def test_a_viewer_may_not_resolve_duplicates_from_the_page(catalog, visitors):
    response = visitors["viewer"].post("/duplicates/", {"action": "dismiss", "selected": ["1"],
                                                        "members-1": f"product:{catalog.pk}"})  # fmt: skip
    assert response.status_code == 403


def test_pages_doing_model_work_are_rate_limited_like_the_api(catalog, visitors, settings):
    settings.API_THROTTLE_RATES = {"search": "1/min", "duplicates": "1/min"}
    anonymous = visitors["anonymous"]

    def search():
        image = SimpleUploadedFile("q.png", images.png_bytes(seed=5), "image/png")
        return anonymous.post("/", {"file": image, "threshold": "10"})

    assert search().status_code == 200
    refused = search()
    assert refused.status_code == 429 and 55 <= int(refused["Retry-After"]) <= 60
    assert b"Too many requests" in refused.content and b"<html" in refused.content
    assert anonymous.get("/").status_code == 200  # the form itself is not limited
    # The product page embeds on GET: the same scope (this client has spent it).
    assert anonymous.get(f"/catalog/{catalog.pk}/").status_code == 429
    viewer = visitors["viewer"]  # another client, its own budget
    assert viewer.get(f"/catalog/{catalog.pk}/").status_code == 200
    assert viewer.get("/duplicates/").status_code == 200
    assert viewer.get("/duplicates/").status_code == 429


def test_no_page_names_a_server_path(catalog, visitors, settings, tmp_path):
    from tests.server_paths import rows_naming_server_folders, server_paths

    rows_naming_server_folders(settings, tmp_path)
    forbidden = server_paths(settings)
    for path in pages(catalog.pk):
        for who in ("anonymous", "superuser"):
            body = visitors[who].get(path).content.decode()
            assert not [leak for leak in forbidden if leak in body], (path, who)
    for api in ("/api/v1/models/trained/", "/api/v1/models/", "/api/v1/signatures/models/"):
        body = visitors["superuser"].get(api).content.decode()
        assert not [leak for leak in forbidden if leak in body], api
        assert "shoes" in body or api != "/api/v1/models/trained/"  # shown relative to its root


def _flag(html: str, name: str) -> bool:
    """A flag the page hands its script in a json_script block."""
    return json.loads(re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', html).group(1))
