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


@pytest.mark.django_db(transaction=True)
def test_upgrading_moves_existing_signature_files_out_of_the_media(media_root, private_media_root):
    """Migration signatures 0003: files enrolled before it (under MEDIA_ROOT/signatures/) move to
    the private storage, same names; going back moves them back."""
    from django.core.files.base import ContentFile
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from simsite.files import private_storage

    reference, questioned = "signatures/aa/aa11.png", "signatures/bb/bb22.png"
    executor = MigrationExecutor(connection)
    executor.migrate([("signatures", "0002_signature_encoder")])
    try:
        for name, data in ((reference, b"reference"), (questioned, b"questioned")):
            default_storage.save(name, ContentFile(data))
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO signatures_signer (name, external_id, created_at) VALUES ('Old', '', now()) "
                           "RETURNING id")  # fmt: skip
            signer = cursor.fetchone()[0]
            cursor.execute("INSERT INTO signatures_reference (signer_id, file, original_filename, sha256, width, "
                           "height, created_at) VALUES (%s, %s, 'r.png', 'aa11', 1, 1, now())",
                           [signer, reference])  # fmt: skip
            cursor.execute("INSERT INTO signatures_verification (signer_id, questioned, questioned_sha256, encoder, "
                           "score, threshold, decision, references_used, per_reference, created_at) "
                           "VALUES (%s, %s, 'bb22', 'e', 0.5, 0.5, 'forged', 1, '[]', now())",
                           [signer, questioned])  # fmt: skip
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    for name, data in ((reference, b"reference"), (questioned, b"questioned")):
        assert not default_storage.exists(name) and not (media_root / name).exists()
        with private_storage().open(name) as handle:
            assert handle.read() == data
    assert Reference.objects.get().file.name == reference
