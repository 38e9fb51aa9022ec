"""Signatures are never public: their files live outside MEDIA_ROOT, no /media/ URL serves
them, and the authorised views serve them to signature officers only (or hand them to the
front server with PRIVATE_MEDIA_ACCEL)."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from signatures.models import Reference, Verification
from tests.signatures.conftest import real_or_synthetic

pytestmark = pytest.mark.django_db


def upload(data: bytes, name: str = "s.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")


@pytest.fixture
def enrolled(role_user, django_capture_on_commit_callbacks, settings, media_root, private_media_root):
    settings.API_THROTTLE_RATES = {}
    officer = APIClient()
    officer.force_authenticate(role_user("officer", "signature_officer"))
    signer = officer.post("/api/v1/signatures/signers/", {"name": "Ada"}, format="json").json()
    genuine = real_or_synthetic(6, 3)
    created = officer.post(f"/api/v1/signatures/signers/{signer['id']}/references/",
                           {"files": [upload(data, f"r{i}.png") for i, data in enumerate(genuine[:2])]},
                           format="multipart").json()["created"]  # fmt: skip
    verified = officer.post(f"/api/v1/signatures/signers/{signer['id']}/verify/", {"image": upload(genuine[2])},
                            format="multipart").json()  # fmt: skip
    return {"officer": officer, "signer": signer, "references": created, "verification": verified, "data": genuine}


def test_signature_files_are_stored_outside_the_public_media(enrolled, media_root, private_media_root):
    reference = Reference.objects.get(pk=enrolled["references"][0]["id"])
    verification = Verification.objects.get(pk=enrolled["verification"]["verification_id"])
    for name in (reference.file.name, verification.questioned.name):
        assert (private_media_root / name).is_file()
        assert not default_storage.exists(name) and not (media_root / name).exists()
    assert not list(media_root.rglob("*")) or not list((media_root / "signatures").rglob("*.*"))


def test_the_reference_image_is_served_to_officers_only(enrolled, role_user):
    reference = enrolled["references"][0]
    url = reference["image_url"]
    assert "/media/" not in url and url.endswith(f"/references/{reference['id']}/image/")
    served = enrolled["officer"].get(url)
    assert served.status_code == 200 and served["Cache-Control"] == "private, no-store"
    assert b"".join(served.streaming_content) == enrolled["data"][0]
    assert APIClient().get(url).status_code == 401
    viewer = APIClient()
    viewer.force_authenticate(role_user("viewer-1", "viewer", "catalog_editor", "model_manager"))
    assert viewer.get(url).status_code == 403
    name = Reference.objects.get(pk=reference["id"]).file.name
    assert APIClient().get(f"/media/{name}").status_code == 404  # not served from /media/ at all


def test_the_questioned_image_is_served_to_officers_only(enrolled):
    url = f"/api/v1/signatures/verifications/{enrolled['verification']['verification_id']}/image/"
    served = enrolled["officer"].get(url)
    assert served.status_code == 200 and b"".join(served.streaming_content) == enrolled["data"][2]
    assert APIClient().get(url).status_code == 401
    assert enrolled["officer"].get("/api/v1/signatures/verifications/999999/image/").status_code == 404


@pytest.mark.parametrize(
    ("accel", "header", "expected"),
    [("x-accel-redirect:/protected/", "X-Accel-Redirect", "/protected/{name}"), ("x-sendfile", "X-Sendfile", "{path}")],
)
def test_a_front_server_can_send_the_file(enrolled, settings, private_media_root, accel, header, expected):
    settings.PRIVATE_MEDIA_ACCEL = accel
    reference = enrolled["references"][0]
    name = Reference.objects.get(pk=reference["id"]).file.name
    served = enrolled["officer"].get(reference["image_url"])
    assert served.status_code == 200 and served.content == b""
    assert served[header] == expected.format(name=name, path=private_media_root / name)
