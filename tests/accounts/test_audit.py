"""Who did what: each audited action writes one entry naming the user, the action and its
target; the log is read-only in the admin and readable at /api/v1/audit/ by users with the
audit permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import AuditEntry
from tests import images
from tests.signatures.conftest import real_or_synthetic

pytestmark = pytest.mark.django_db


def upload(data: bytes, name: str = "s.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture(autouse=True)
def no_limits(settings):
    settings.API_THROTTLE_RATES = {}


def test_signature_actions_are_audited(role_user, django_capture_on_commit_callbacks):
    officer = client_for(role_user("officer", "signature_officer"))
    signer = officer.post("/api/v1/signatures/signers/", {"name": "Ada"}, format="json").json()["id"]
    genuine = real_or_synthetic(6, 3)
    enrolled = officer.post(f"/api/v1/signatures/signers/{signer}/references/",
                            {"files": [upload(genuine[0], "a.png"), upload(genuine[1], "b.png")]},
                            format="multipart").json()["created"]  # fmt: skip
    verification = officer.post(f"/api/v1/signatures/signers/{signer}/verify/", {"image": upload(genuine[2])},
                                format="multipart").json()["verification_id"]  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        officer.delete(f"/api/v1/signatures/signers/{signer}/references/{enrolled[0]['id']}/")
        officer.delete(f"/api/v1/signatures/signers/{signer}/")
    log = [(e.username, e.action, e.target) for e in AuditEntry.objects.order_by("id")]
    assert log == [
        ("officer", "signer_create", f"signer {signer}"),
        ("officer", "references_enrol", f"signer {signer}"),
        ("officer", "signature_verify", f"signer {signer}"),
        ("officer", "reference_delete", f"reference {enrolled[0]['id']} of signer {signer}"),
        ("officer", "signer_delete", f"signer {signer}"),
    ]
    verify = AuditEntry.objects.get(action="signature_verify")
    assert verify.detail["verification"] == verification and verify.address == "127.0.0.1"


def test_a_refused_action_is_not_audited(role_user):
    viewer = client_for(role_user("viewer", "viewer"))
    assert viewer.post("/api/v1/signatures/signers/", {"name": "Ada"}, format="json").status_code == 403
    assert viewer.post("/api/v1/gallery/delete/", {"all": True}, format="json").status_code == 403
    assert not AuditEntry.objects.exists()


def test_bulk_deletes_imports_and_model_actions_are_audited(role_user, monkeypatch):
    from tests.search.helpers import FakeEmbedder, add_gallery_image

    monkeypatch.setattr("search.embedders.get_embedder", lambda spec: FakeEmbedder())
    editor = client_for(role_user("editor", "catalog_editor"))
    ids = [add_gallery_image(images.png_bytes(seed=i), f"g{i}.png").pk for i in range(3)]
    deleted = editor.post("/api/v1/gallery/delete/", {"ids": ids[:2]}, format="json")
    assert deleted.json() == {"deleted": 2}
    assert editor.post("/api/v1/gallery/delete/", {"all": True}, format="json").json() == {"deleted": 1}
    csv = SimpleUploadedFile("p.csv", b"id,name,category,price,image_url\n", "text/csv")
    job = editor.post("/api/v1/products/import/", {"file": csv}, format="multipart").json()["id"]
    manager = client_for(role_user("manager", "model_manager"))
    assert (
        manager.post("/api/v1/models/efficientnet_lite0/activate/", {"force": True}, format="json").status_code == 200
    )
    log = [(e.username, e.action, e.target) for e in AuditEntry.objects.order_by("id")]
    assert log == [
        ("editor", "gallery_delete", "2 gallery images"),
        ("editor", "gallery_delete", "the whole gallery"),
        ("editor", "product_import", f"import {job}"),
        ("manager", "model_activate", "embedding model efficientnet_lite0"),
    ]
    assert AuditEntry.objects.filter(action="gallery_delete").order_by("id").first().detail == {
        "deleted": 2,
        "ids": ids[:2],
    }


def test_the_audit_api_lists_newest_first_with_filters(role_user, staff_user):
    officer = role_user("officer", "signature_officer")
    for action, target in [("signer_create", "signer 1"), ("signature_verify", "signer 1"), ("signer_delete", "s 1")]:
        AuditEntry.objects.create(user=officer, username="officer", action=action, target=target)
    AuditEntry.objects.create(username="", action="model_train", target="embedding model m1")
    admin = client_for(staff_user)
    page = admin.get("/api/v1/audit/").json()
    assert page["count"] == 4 and page["results"][0]["action"] == "model_train"
    assert set(page["results"][0]) == {"id", "at", "user", "action", "target", "detail", "address"}
    assert [r["action"] for r in admin.get("/api/v1/audit/", {"user": "officer"}).json()["results"]] == [
        "signer_delete", "signature_verify", "signer_create"]  # fmt: skip
    assert admin.get("/api/v1/audit/", {"action": "signature_verify"}).json()["count"] == 1
    assert admin.get("/api/v1/audit/", {"since": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    bad = admin.get("/api/v1/audit/", {"action": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "action"
    # The audit permission can be granted to a user who is not a superuser.
    auditor = role_user("auditor")
    assert client_for(auditor).get("/api/v1/audit/").status_code == 403
    auditor.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    auditor = type(auditor).objects.get(pk=auditor.pk)  # Django caches a user's permissions on the object
    assert client_for(auditor).get("/api/v1/audit/").json()["count"] == 4


def test_the_admin_shows_the_log_read_only(staff_user):
    entry = AuditEntry.objects.create(username="officer", action="signer_delete", target="signer 9")
    client = Client()
    client.force_login(staff_user)
    assert client.get("/admin/accounts/auditentry/").status_code == 200
    change = client.get(f"/admin/accounts/auditentry/{entry.pk}/change/")
    assert change.status_code == 200 and b"signer 9" in change.content and b'name="_save"' not in change.content
    assert client.get("/admin/accounts/auditentry/add/").status_code == 403
    assert client.post(f"/admin/accounts/auditentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
