"""Who may do what, over every operation of the API schema and every role (API.md,
conventions; README, "Users and permissions").

The expected rules are written out here, by hand, from the roles' definitions: the test does
not read the views' own ``access`` rules, so a view that grants too much or too little fails.
Anonymous visitors refused get 401 with WWW-Authenticate, users without the permission 403."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.access import AREAS
from search.items import KINDS, areas_of

pytestmark = pytest.mark.django_db

MISSING_ID = "999999"
ROLES = ("viewer", "catalog_editor", "signature_officer", "model_manager")
EVERYONE = {"anonymous", *ROLES, "superuser"}
READERS = {"viewer", "catalog_editor", "model_manager", "superuser"}  # every view permission but biometric ones
CATALOG = {"catalog_editor", "superuser"}
MODELS = {"model_manager", "superuser"}
SIGNATURES = {"signature_officer", "superuser"}


def _catalog_read(public_read: set[str], area: str) -> set[str]:
    return EVERYONE if area in public_read else READERS


# (method, path) -> who may, given PUBLIC_READ. Paths as in the schema.
def expected(public_read: set[str]) -> dict[tuple[str, str], set[str]]:
    catalog, gallery = _catalog_read(public_read, "catalog"), _catalog_read(public_read, "gallery")
    return {
        ("get", "/api/v1/health/"): EVERYONE,
        ("post", "/api/v1/auth/token/"): EVERYONE,
        ("get", "/api/v1/audit/"): {"superuser"},
        # Catalog
        ("get", "/api/v1/products/"): catalog,
        ("post", "/api/v1/products/"): CATALOG,
        ("get", "/api/v1/products/{id}/"): catalog,
        ("patch", "/api/v1/products/{id}/"): CATALOG,
        ("delete", "/api/v1/products/{id}/"): CATALOG,
        ("get", "/api/v1/products/{id}/thumbnail/"): catalog,
        ("post", "/api/v1/products/import/"): CATALOG,
        ("get", "/api/v1/products/imports/{id}/"): READERS,
        ("get", "/api/v1/products/imports/{id}/events/"): READERS,
        ("post", "/api/v1/products/imports/{id}/cancel/"): CATALOG,
        ("get", "/api/v1/categories/"): catalog,
        # Gallery
        ("get", "/api/v1/gallery/"): gallery,
        ("post", "/api/v1/gallery/"): CATALOG,
        ("get", "/api/v1/gallery/{id}/"): gallery,
        ("delete", "/api/v1/gallery/{id}/"): CATALOG,
        ("get", "/api/v1/gallery/{id}/thumbnail/"): gallery,
        ("post", "/api/v1/gallery/delete/"): CATALOG,
        # Search (collection "all" by default: both collections must be readable)
        ("post", "/api/v1/search/"): catalog & gallery,
        ("post", "/api/v1/search/batch/"): catalog & gallery,
        ("get", "/api/v1/duplicates/"): READERS,
        ("post", "/api/v1/duplicates/keep/"): CATALOG,
        ("post", "/api/v1/duplicates/dismiss/"): CATALOG,
        # Indexing and models
        ("get", "/api/v1/index/jobs/"): READERS,
        ("post", "/api/v1/index/jobs/"): CATALOG | MODELS,
        ("get", "/api/v1/index/jobs/{id}/"): READERS,
        ("get", "/api/v1/index/jobs/{id}/events/"): READERS,
        ("post", "/api/v1/index/jobs/{id}/cancel/"): CATALOG | MODELS,
        ("get", "/api/v1/index/status/"): EVERYONE,  # rows of the collections one may read
        ("get", "/api/v1/models/"): READERS,
        ("post", "/api/v1/models/{key}/activate/"): MODELS,
        ("get", "/api/v1/models/trained/"): READERS,
        ("post", "/api/v1/models/trained/"): MODELS,
        ("get", "/api/v1/models/trained/{key}/"): READERS,
        ("delete", "/api/v1/models/trained/{key}/"): MODELS,
        # Signatures: never public; compare stores nothing and stays open
        ("post", "/api/v1/signatures/compare/"): EVERYONE,
        ("get", "/api/v1/signatures/signers/"): SIGNATURES,
        ("post", "/api/v1/signatures/signers/"): SIGNATURES,
        ("get", "/api/v1/signatures/signers/{id}/"): SIGNATURES,
        ("delete", "/api/v1/signatures/signers/{id}/"): SIGNATURES,
        ("get", "/api/v1/signatures/signers/{id}/references/"): SIGNATURES,
        ("post", "/api/v1/signatures/signers/{id}/references/"): SIGNATURES,
        ("delete", "/api/v1/signatures/signers/{id}/references/{reference_pk}/"): SIGNATURES,
        ("get", "/api/v1/signatures/signers/{id}/references/{reference_pk}/image/"): SIGNATURES,
        ("post", "/api/v1/signatures/signers/{id}/verify/"): SIGNATURES,
        ("get", "/api/v1/signatures/verifications/{id}/image/"): SIGNATURES,
        ("get", "/api/v1/signatures/models/"): READERS | SIGNATURES,
        ("post", "/api/v1/signatures/models/{key}/activate/"): MODELS,
    }


def _operations() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [(method, path) for path, item in schema["paths"].items()
            for method in item if method in ("get", "post", "patch", "put", "delete")]  # fmt: skip


OPERATIONS = _operations()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", MISSING_ID, path)


MULTIPART_ONLY = {"/api/v1/search/batch/"}  # parses nothing but a form


def _call(client, method: str, path: str):
    path = _concrete(path)
    if method == "get":
        return client.get(path, {"page_size": 1} if not path.endswith("/events/") else {})
    if path in MULTIPART_ONLY:
        return client.post(path, {}, format="multipart")
    return getattr(client, method)(path, {}, format="json") if isinstance(client, APIClient) else \
        getattr(client, method)(path, "{}", content_type="application/json")  # fmt: skip


@pytest.fixture
def clients(django_user_model, settings):
    settings.JOB_EVENTS_TIMEOUT = 1
    settings.API_THROTTLE_RATES = {}
    made = {"anonymous": APIClient()}
    for role in ROLES:
        user = django_user_model.objects.create_user(role, password=f"pw-{role}-1")
        user.groups.add(Group.objects.get(name=role))
        made[role] = APIClient()
        made[role].force_authenticate(user)
    admin = django_user_model.objects.create_superuser("root", password="pw-root-1")
    made["superuser"] = APIClient()
    made["superuser"].credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    return made


def test_the_matrix_covers_every_operation():
    assert len(OPERATIONS) >= 50
    assert set(OPERATIONS) == set(expected({"catalog", "gallery"}))


def test_the_roles_are_groups_made_by_the_migration():
    assert set(ROLES) <= set(Group.objects.values_list("name", flat=True))
    viewer = {p.codename for p in Group.objects.get(name="viewer").permissions.all()}
    assert "view_product" in viewer and "view_galleryimage" in viewer
    assert not {"view_signer", "view_reference", "view_verification"} & viewer  # nothing biometric
    assert not [codename for codename in viewer if not codename.startswith("view_")]


def _check(clients, method: str, path: str, allowed: set[str]) -> None:
    for who, client in clients.items():
        response = _call(client, method, path)
        if who in allowed:
            assert response.status_code not in (401, 403), (who, response.status_code, response.content[:300])
        elif who == "anonymous":
            assert response.status_code == 401, (who, response.status_code, response.content[:300])
            assert response.json()["error"]["code"] == "not_authenticated"
            assert "WWW-Authenticate" in response
        else:
            assert response.status_code == 403, (who, response.status_code, response.content[:300])
            assert response.json()["error"]["code"] == "permission_denied"
            assert "permission" in response.json()["error"]["message"]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m.upper()} {p}" for m, p in OPERATIONS])
def test_each_role_may_do_what_its_permissions_allow(clients, method, path):
    _check(clients, method, path, expected({"catalog", "gallery"})[(method, path)])


PUBLIC_READS = [op for op in OPERATIONS if expected({"catalog", "gallery"})[op] != expected(set())[op]]


@pytest.mark.parametrize("public_read", [{"catalog"}, {"gallery"}, set()], ids=["catalog", "gallery", "none"])
def test_public_read_decides_what_anonymous_visitors_read(clients, settings, public_read):
    settings.PUBLIC_READ = frozenset(public_read)
    assert len(PUBLIC_READS) >= 9
    for method, path in PUBLIC_READS:
        _check(clients, method, path, expected(public_read)[(method, path)])


def test_anonymous_search_of_a_private_collection_is_refused_not_narrowed(clients, settings):
    """With only the catalog public, a search of every collection (the default) is a 401 that
    says why; the catalog alone is searched."""
    settings.PUBLIC_READ = frozenset({"catalog"})
    anonymous = clients["anonymous"]
    refused = anonymous.post("/api/v1/search/", {"product": 1}, format="json")
    assert refused.status_code == 401
    assert "image library is not public" in refused.json()["error"]["message"]
    assert anonymous.post("/api/v1/search/", {"product": 1, "collection": "gallery"}, format="json").status_code == 401
    # The catalog: allowed (404: no product 1), whichever collection the item comes from.
    assert anonymous.post("/api/v1/search/", {"product": 1, "collection": "products"}, format="json").status_code == 404
    from_gallery = anonymous.post("/api/v1/search/", {"gallery_image": 1, "collection": "products"}, format="json")
    assert from_gallery.status_code == 401  # the item searched from is in the private collection


def test_indexing_with_activation_needs_the_model_permission(clients):
    editor = clients["catalog_editor"]
    refused = editor.post("/api/v1/index/jobs/", {"collection": "all", "activate": True}, format="json")
    assert refused.status_code == 403 and "change_activemodel" in refused.json()["error"]["message"]
    assert editor.post("/api/v1/index/jobs/", {"collection": "all"}, format="json").status_code == 202


def test_index_status_shows_only_collections_one_may_read(clients, settings):
    settings.PUBLIC_READ = frozenset({"catalog"})
    rows = clients["anonymous"].get("/api/v1/index/status/").json()["results"]
    assert rows and {row["collection"] for row in rows} == {"products"}
    rows = clients["viewer"].get("/api/v1/index/status/").json()["results"]
    assert {row["collection"] for row in rows} == {"products", "gallery"}


def test_a_session_write_needs_its_csrf_token(django_user_model):
    user = django_user_model.objects.create_user("editor", password="pw-editor-1")
    user.groups.add(Group.objects.get(name="catalog_editor"))
    session = Client(enforce_csrf_checks=True)
    session.login(username="editor", password="pw-editor-1")
    response = session.post("/api/v1/gallery/delete/", "{}", content_type="application/json")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]


def test_staff_status_alone_grants_nothing(django_user_model):
    """Permissions decide, not is_staff: a staff user without a role is a reader of what is public."""
    staff = django_user_model.objects.create_user("staff", password="pw-staff-1", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    assert client.post("/api/v1/gallery/delete/", {"all": True}, format="json").status_code == 403
    assert client.get("/api/v1/signatures/signers/").status_code == 403
    assert client.get("/api/v1/gallery/").status_code == 200


def test_each_kind_of_item_is_read_under_the_area_its_models_view_permission_opens():
    assert {kind.area for kind in KINDS.values()} == set(AREAS)
    for kind in KINDS.values():
        assert AREAS[kind.area] == f"{kind.model._meta.app_label}.view_{kind.model._meta.model_name}"
    assert areas_of("all") == set(AREAS) and areas_of("products") == {"catalog"} and areas_of("nope") == set()
