"""Compare, signers, references, verify, encoders and the earlier tool's route, through HTTP,
with the real baseline encoder on real (or synthetic) signatures."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from signatures.models import Reference, ReferenceVector, Verification
from tests.signatures.conftest import real_or_synthetic

pytestmark = pytest.mark.django_db


def upload(data: bytes, name: str = "s.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")


def test_compare_two_signatures(api_client):
    one, two = real_or_synthetic(2, 2)
    same = api_client.post("/api/v1/signatures/compare/", {"image1": upload(one), "image2": upload(one)},
                           format="multipart")  # fmt: skip
    assert same.status_code == 200, same.json()
    body = same.json()
    assert body["similarity"] >= 0.999 and body["result"] == "Matched" and body["model"] == "efficientnet_lite0_strokes"
    assert body["previews"]["image1"].startswith("data:image/png;base64,")
    other = real_or_synthetic(9, 1)[0]
    pair = api_client.post(
        "/api/v1/signatures/compare/",
        {"image1": upload(one), "image2": upload(other), "threshold": 0.999},
        format="multipart",
    ).json()
    assert pair["threshold"] == 0.999 and pair["result"] == "Unmatched" and pair["similarity"] < 0.999
    blank = api_client.post(
        "/api/v1/signatures/compare/", {"image1": upload(one), "image2": upload(b"not an image", "x.png")},
        format="multipart",
    )  # fmt: skip
    assert blank.status_code == 400 and blank.json()["error"]["field"] == "image2"


def test_enrol_and_verify(api_client, staff_client, staff_user, django_capture_on_commit_callbacks):
    signer = staff_client.post("/api/v1/signatures/signers/", {"name": "Ada", "external_id": "C-1"}, format="json")
    assert signer.status_code == 201, signer.json()
    signer_id = signer.json()["id"]
    questioned_path = f"/api/v1/signatures/signers/{signer_id}/verify/"
    genuine = real_or_synthetic(6, 6)

    refused = staff_client.post(questioned_path, {"image": upload(genuine[5])}, format="multipart")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_references"
    assert "references" in refused.json()["error"]["message"]

    enrol = staff_client.post(
        f"/api/v1/signatures/signers/{signer_id}/references/",
        {"files": [upload(data, f"ref{i}.png") for i, data in enumerate(genuine[:3])] + [upload(b"", "empty.png")]},
        format="multipart",
    )
    assert enrol.status_code == 201, enrol.json()
    assert len(enrol.json()["created"]) == 3 and enrol.json()["rejected"][0]["code"] == "empty_file"
    assert ReferenceVector.objects.filter(encoder="efficientnet_lite0_strokes").count() == 3
    assert api_client.get(f"/api/v1/signatures/signers/{signer_id}/").status_code == 401  # never public
    assert staff_client.get(f"/api/v1/signatures/signers/{signer_id}/").json()["references"] == 3

    result = staff_client.post(questioned_path, {"image": upload(genuine[4])}, format="multipart")
    assert result.status_code == 200, result.json()
    body = result.json()
    assert body["references_used"] == 3 and len(body["per_reference"]) == 3
    assert body["score"] == max(item["similarity"] for item in body["per_reference"])
    assert body["decision"] == ("genuine" if body["score"] >= body["threshold"] else "forged")
    assert body["threshold"] == 0.9954  # the default encoder's equal-error point with three references
    logged = Verification.objects.get(pk=body["verification_id"])
    assert (logged.encoder, logged.score, logged.requested_by) == (
        "efficientnet_lite0_strokes",
        body["score"],
        staff_user,
    )

    strict = staff_client.post(questioned_path, {"image": upload(genuine[4]), "threshold": 1.0}, format="multipart")
    assert strict.json()["decision"] == "forged"
    assert api_client.post(questioned_path, {"image": upload(genuine[4])}, format="multipart").status_code == 401

    reference = Reference.objects.filter(signer_id=signer_id).first()
    path = reference.file.path
    with django_capture_on_commit_callbacks(execute=True):
        deleted = staff_client.delete(f"/api/v1/signatures/signers/{signer_id}/references/{reference.pk}/")
    assert deleted.status_code == 204 and not os.path.exists(path)
    duplicate = staff_client.post("/api/v1/signatures/signers/", {"name": "Other", "external_id": "C-1"}, format="json")
    assert duplicate.status_code == 409


def test_encoders_list_and_activation(api_client, staff_client):
    assert api_client.get("/api/v1/signatures/models/").status_code == 401
    encoders = {row["key"]: row for row in staff_client.get("/api/v1/signatures/models/").json()["results"]}
    default, baseline = encoders["efficientnet_lite0_strokes"], encoders["efficientnet_lite0_ink"]
    assert default["active"] and not baseline["active"] and default["eer"] < baseline["eer"]
    assert baseline["eer"] and baseline["threshold"] and baseline["dataset"] and baseline["thresholds"]["5"]
    assert staff_client.post("/api/v1/signatures/models/nope/activate/").status_code == 404
    assert api_client.post("/api/v1/signatures/models/efficientnet_lite0_ink/activate/").status_code == 401
    activated = staff_client.post("/api/v1/signatures/models/efficientnet_lite0_ink/activate/")
    assert activated.json() == {"active": "efficientnet_lite0_ink"}
    one = real_or_synthetic(2, 1)[0]
    compared = api_client.post("/api/v1/signatures/compare/", {"image1": upload(one), "image2": upload(one)},
                               format="multipart").json()  # fmt: skip
    assert compared["model"] == "efficientnet_lite0_ink" and compared["threshold"] == 0.9241


def test_seed_route_compares_files_inside_the_root_and_nothing_else(api_client, signatures_root, tmp_path):
    ok = api_client.post("/api/findSignatureSimilarity",
                         {"image_path1": "scans/s0.png", "image_path2": "scans/s0.png", "threshold": 0.9},
                         format="json")  # fmt: skip
    assert ok.status_code == 200, ok.json()
    assert ok.json()["result"] == "Matched" and ok.json()["similarity"] >= 0.999
    percent = api_client.post("/api/findSignatureSimilarity",
                              {"image_path1": "scans/s0.png", "image_path2": "scans/s1.png", "threshold": 99.99},
                              format="json").json()  # fmt: skip
    assert percent["result"] == "Unmatched"
    os.symlink(tmp_path / "outside.png", signatures_root / "scans" / "link.png")
    for path, code in [
        ("../outside.png", "path_not_allowed"),
        (str(tmp_path / "outside.png"), "path_not_allowed"),
        ("scans/link.png", "path_not_allowed"),
        ("scans/../../outside.png", "path_not_allowed"),
        ("scans/none.png", "file_not_found"),
        ("scans/\x00s0.png", "path_invalid"),
    ]:
        response = api_client.post("/api/findSignatureSimilarity",
                                   {"image_path1": path, "image_path2": "scans/s0.png"}, format="json")  # fmt: skip
        assert response.status_code in (400, 403, 404), (path, response.json())
        assert response.json() == {"error": response.json()["error"], "code": code}, path
        assert isinstance(response.json()["error"], str)
    scan = real_or_synthetic(3, 1)[0]
    files = api_client.post("/api/findSignatureSimilarity", {"image1": upload(scan), "image2": upload(scan)},
                            format="multipart")  # fmt: skip
    assert files.status_code == 200 and files.json()["result"] == "Matched"
    missing = api_client.post("/api/findSignatureSimilarity", {"image_path1": "scans/s0.png"}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "image_required"


def test_seed_route_refuses_paths_without_a_root(api_client, settings):
    settings.SIGNATURE_FILES_ROOT = None
    response = api_client.post("/api/findSignatureSimilarity",
                               {"image_path1": "/etc/passwd", "image_path2": "/etc/hosts"}, format="json")  # fmt: skip
    assert response.status_code == 403 and response.json()["code"] == "path_not_allowed"


def test_admin_pages(client, staff_client, admin_user):
    signer_id = staff_client.post("/api/v1/signatures/signers/", {"name": "Bo"}, format="json").json()["id"]
    staff_client.post(f"/api/v1/signatures/signers/{signer_id}/references/",
                      {"files": [upload(real_or_synthetic(7, 1)[0])]}, format="multipart")  # fmt: skip
    questioned = {"image": upload(real_or_synthetic(7, 2)[1])}
    verification = staff_client.post(f"/api/v1/signatures/signers/{signer_id}/verify/", questioned,
                                     format="multipart").json()  # fmt: skip
    client.force_login(admin_user)
    assert b"<img" in client.get(f"/admin/signatures/signer/{signer_id}/change/").content
    assert client.get("/admin/signatures/verification/").status_code == 200
    page = client.get(f"/admin/signatures/verification/{verification['verification_id']}/change/")
    assert page.status_code == 200 and verification["decision"].encode() in page.content


def test_a_reference_whose_file_is_gone_is_a_409_not_a_500(staff_client):
    signer_id = staff_client.post("/api/v1/signatures/signers/", {"name": "Cy"}, format="json").json()["id"]
    staff_client.post(f"/api/v1/signatures/signers/{signer_id}/references/",
                      {"files": [upload(real_or_synthetic(8, 1)[0])]}, format="multipart")  # fmt: skip
    reference = Reference.objects.get(signer_id=signer_id)
    ReferenceVector.objects.filter(reference=reference).delete()  # e.g. after switching encoders
    os.remove(reference.file.path)
    response = staff_client.post(f"/api/v1/signatures/signers/{signer_id}/verify/",
                                 {"image": upload(real_or_synthetic(8, 2)[1])}, format="multipart")  # fmt: skip
    assert response.status_code == 409 and response.json()["error"]["code"] == "reference_missing"
