"""Signatures a back office can trust: training on two sources, calibrated operating points,
per-signer models (trained at enrolment, retrained when references change, removed with the
signer), enrolment refusals, explained decisions."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image

from signatures.calibration import threshold_at_far
from signatures.datasets import Source, source_parse, sources_load, writer_split
from signatures.models import Reference, ReferenceVector, SignatureEncoder, Signer, Verification, WriterModel
from signatures.services.encoders import encoder_activate, encoder_delete
from signatures.services.enrolment import writer_model_refresh
from signatures.synthetic import synthetic_dataset, synthetic_signature
from signatures.writer_models import GAMMA_SCALE, WriterClassifier
from simsite.errors import ServiceError
from tests.signatures.conftest import cedar_dataset


def png(data: bytes, name: str = "s.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, "image/png")


@pytest.fixture
def two_sources(tmp_path):
    folders = synthetic_dataset(tmp_path / "lab-a", writers=4, genuine=7, forged=2)
    cedar = cedar_dataset(tmp_path / "lab-b", writers=range(20, 24), genuine=7, forged=2)
    return folders, cedar


def test_sources_keep_writers_apart_and_validation_draws_from_each(two_sources):
    folders, cedar = two_sources
    assert source_parse(f"cedar:{cedar}") == Source("cedar", cedar)
    assert source_parse(str(folders), layout="folders") == Source("folders", folders)
    with pytest.raises(ServiceError, match="Name the layout"):
        source_parse(str(folders))
    with pytest.raises(ServiceError, match="--layout says"):
        source_parse(f"cedar:{cedar}", layout="folders")
    samples = sources_load([Source("folders", folders), Source("cedar", cedar)])
    assert {s.source for s in samples} == {"lab-a", "lab-b"}
    assert {s.writer for s in samples if s.source == "lab-b"} == {f"lab-b/{w}" for w in range(20, 24)}
    # The same folder name twice: still two sources.
    twice = sources_load([Source("folders", folders), Source("folders", folders)])
    assert len({s.writer for s in twice}) == 8
    _, validation = writer_split(samples, fraction=0.25, seed=0)
    assert {w.split("/")[0] for w in validation} == {"lab-a", "lab-b"}


@pytest.mark.slow
def test_two_source_training_then_per_signer_models_calibrated_and_explained(
    two_sources, staff_client, settings, capsys, django_capture_on_commit_callbacks
):
    folders, cedar = two_sources
    call_command("train_signature_encoder", "--data", f"folders:{folders}", "--data", f"cedar:{cedar}", epochs=1,
                 key="two", activate=True, verbosity=0)  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    encoder = SignatureEncoder.objects.get(key="two")
    assert encoder.status == "succeeded" and printed["active"]
    assert [s["layout"] for s in encoder.sources] == ["folders", "cedar"] and encoder.sources_text() == (
        "folders:lab-a, cedar:lab-b"
    )
    per_source = encoder.metrics["sources"]
    assert set(per_source) == {"lab-a", "lab-b"} and all(len(s["fingerprint"]) == 64 for s in per_source.values())
    assert all(s["validation_writers"] >= 1 and s["training_writers"] >= 1 for s in per_source.values())
    assert set(encoder.calibration["writer_independent"]) == {"1", "3", "5"}
    assert set(encoder.calibration["writer_dependent"]) == {"1", "3", "5"}
    # One set of thresholds: verify's (the calibration's equal-error points) is what the API shows.
    equal_error = {
        count: round(table["eer_threshold"], 4) for count, table in encoder.calibration["writer_independent"].items()
    }
    assert encoder.metrics["thresholds"] == equal_error and encoder.threshold == equal_error["1"]
    assert encoder.background and np.load(io.BytesIO(_read(encoder.background))).shape[1] == encoder.dim

    signer = staff_client.post("/api/v1/signatures/signers/", {"name": "Writer 1"}, format="json").json()
    references = f"/api/v1/signatures/signers/{signer['id']}/references/"
    verify = f"/api/v1/signatures/signers/{signer['id']}/verify/"
    # The signer's own model from the first reference on, calibrated with as many references.
    staff_client.post(references, {"files": [png(synthetic_signature(1, 0), "r0.png")]}, format="multipart")
    model = WriterModel.objects.get(signer_id=signer["id"], encoder="two")
    assert model.references == 1 and model.negatives > 5
    verdict = staff_client.post(verify, {"image": png(synthetic_signature(1, 9))}, format="multipart").json()
    assert verdict["mode"] == "writer_dependent" and verdict["operating_point"]["calibrated_with_references"] == 1
    enrolled = staff_client.post(references, {"files": [png(synthetic_signature(1, i), f"r{i}.png")
                                                        for i in range(1, 4)]}, format="multipart")  # fmt: skip
    assert enrolled.status_code == 201
    model.refresh_from_db()
    assert model.references == 4
    verdict = staff_client.post(verify, {"image": png(synthetic_signature(1, 9))}, format="multipart").json()
    assert verdict["mode"] == "writer_dependent" and verdict["operating_point"]["calibrated_with_references"] == 3

    staff_client.post(references, {"files": [png(synthetic_signature(1, 4), "r4.png")]}, format="multipart")
    model.refresh_from_db()
    assert model.references == 5
    # The models' kernel is the one the calibration was measured with: an encoder trained before
    # the kernel was narrowed (no writer_gamma_scale) keeps scikit-learn's width for its signers.
    assert encoder.metrics["writer_gamma_scale"] == GAMMA_SCALE
    narrow = WriterClassifier.from_bytes(bytes(model.model)).gamma
    earlier = {name: value for name, value in encoder.metrics.items() if name != "writer_gamma_scale"}
    widths = []
    for metrics in (earlier, encoder.metrics):
        SignatureEncoder.objects.filter(key="two").update(metrics=metrics)
        WriterModel.objects.all().delete()
        model = writer_model_refresh(signer=Signer.objects.get(pk=signer["id"]))
        widths.append(WriterClassifier.from_bytes(bytes(model.model)).gamma)
    assert widths == pytest.approx([narrow / GAMMA_SCALE, narrow])

    genuine = staff_client.post(verify, {"image": png(synthetic_signature(1, 9))}, format="multipart").json()
    forged = staff_client.post(verify, {"image": png(synthetic_signature(1, 0, forged=True))},
                               format="multipart").json()  # fmt: skip
    other = staff_client.post(verify, {"image": png(synthetic_signature(3, 2))}, format="multipart").json()
    table = encoder.calibration["writer_dependent"]["5"]
    for answer in (genuine, forged, other):
        assert answer["mode"] == "writer_dependent" and 0 <= answer["confidence"] <= 1
        assert answer["operating_point"]["name"] == "eer" and answer["threshold"] == round(table["eer_threshold"], 4)
        assert answer["operating_point"]["calibrated_with_references"] == 5
        assert answer["decision"] == ("genuine" if answer["score"] >= answer["threshold"] else "forged")
    assert genuine["score"] > other["score"] and genuine["confidence"] > other["confidence"]
    # The explanation: the closest reference and the overlay, as the model saw them.
    assert (
        genuine["closest_reference"]["id"] == max(genuine["per_reference"], key=lambda r: r["similarity"])["reference"]
    )
    for data_url in (genuine["preview"], genuine["closest_reference"]["preview"], genuine["overlay"]):
        assert data_url.startswith("data:image/png;base64,")
    logged = Verification.objects.get(pk=genuine["verification_id"])
    assert logged.mode == "writer_dependent" and logged.operating_point["name"] == "eer"

    # The operator's operating point: at most 1% of the validation forgeries accepted.
    settings.SIGNATURE_TARGET_FAR = 0.01
    strict = staff_client.post(verify, {"image": png(synthetic_signature(1, 9))}, format="multipart").json()
    assert strict["operating_point"]["name"] == "target_far" and strict["operating_point"]["target_far"] == 0.01
    assert strict["threshold"] == round(threshold_at_far(table, 0.01)[0], 4)
    assert strict["operating_point"]["expected_far"] <= 0.01
    # A threshold in the request is a cosine similarity, as the earlier tool's clients mean it.
    asked = staff_client.post(verify, {"image": png(synthetic_signature(1, 9)), "threshold": 0.5},
                              format="multipart").json()  # fmt: skip
    assert asked["mode"] == "writer_independent" and asked["operating_point"]["name"] == "requested"

    # Retrained when the references change; removed when none remain, and with the signer.
    key = model.references_key
    staff_client.post(references, {"files": [png(synthetic_signature(1, 5), "r5.png")]}, format="multipart")
    model.refresh_from_db()
    assert model.references == 6 and model.references_key != key
    enrolled_now = list(Reference.objects.filter(signer_id=signer["id"]).order_by("pk"))
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.delete(f"{references}{enrolled_now[0].pk}/").status_code == 204
    model.refresh_from_db()
    assert model.references == 5
    for reference in enrolled_now[1:]:
        with django_capture_on_commit_callbacks(execute=True):
            staff_client.delete(f"{references}{reference.pk}/")
    assert not WriterModel.objects.exists()
    staff_client.post(references, {"files": [png(synthetic_signature(1, 6), "r6.png")]}, format="multipart")
    assert WriterModel.objects.filter(signer_id=signer["id"]).exists()
    # An encoder deleted takes the signers' models fitted to its vectors with it.
    encoder_activate(key="efficientnet_lite0_strokes")
    with django_capture_on_commit_callbacks(execute=True):
        encoder_delete(encoder=SignatureEncoder.objects.get(key="two"))
    assert not WriterModel.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.delete(f"/api/v1/signatures/signers/{signer['id']}/").status_code == 204
    assert not WriterModel.objects.exists() and not Signer.objects.exists()


def _read(name: str) -> bytes:
    from django.core.files.storage import default_storage

    with default_storage.open(name, "rb") as handle:
        return handle.read()


def _rescanned(data: bytes) -> bytes:
    """The same signing scanned again: smaller, JPEG."""
    picture = Image.open(io.BytesIO(data)).convert("L")
    buffer = io.BytesIO()
    picture.resize((int(picture.width * 0.8), int(picture.height * 0.8))).save(buffer, format="JPEG", quality=60)
    return buffer.getvalue()


def _tiny(data: bytes) -> bytes:
    picture = Image.open(io.BytesIO(data)).convert("L")
    buffer = io.BytesIO()
    picture.resize((picture.width // 16, picture.height // 16)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_enrolment_refuses_copies_and_tiny_scans_and_flags_an_outlier(staff_client):
    signer = staff_client.post("/api/v1/signatures/signers/", {"name": "Ines"}, format="json").json()
    references = f"/api/v1/signatures/signers/{signer['id']}/references/"
    first = synthetic_signature(7, 0)
    files = [png(first, "a.png"), png(first, "a-again.png"), png(synthetic_signature(7, 1), "b.png"),
             SimpleUploadedFile("b-rescan.jpg", _rescanned(synthetic_signature(7, 1)), "image/jpeg"),
             png(_tiny(synthetic_signature(7, 2)), "tiny.png")]  # fmt: skip
    answer = staff_client.post(references, {"files": files}, format="multipart").json()
    assert [r["filename"] for r in answer["created"]] == ["a.png", "b.png"]
    refused = {r["filename"]: r["code"] for r in answer["rejected"]}
    assert refused == {"a-again.png": "duplicate_reference", "b-rescan.jpg": "near_duplicate_reference",
                       "tiny.png": "signature_too_small"}  # fmt: skip
    # Against the references on file too, in a later upload.
    later = staff_client.post(references, {"files": [png(first, "a-later.png")]}, format="multipart")
    assert later.status_code == 400 and later.json()["rejected"][0]["code"] == "duplicate_reference"

    # Consistency: each reference against the signer's others; another writer's is an outlier.
    more = [png(synthetic_signature(7, i), f"r{i}.png") for i in range(3, 7)] + [
        png(synthetic_signature(30, 0), "x.png")
    ]
    staff_client.post(references, {"files": more}, format="multipart")
    listed = {r["filename"]: r for r in staff_client.get(references).json()["results"]}
    assert all(r["consistency"] is not None for r in listed.values())
    assert listed["x.png"]["outlier"] and not any(r["outlier"] for name, r in listed.items() if name != "x.png")
    assert listed["x.png"]["consistency"] < min(r["consistency"] for n, r in listed.items() if n != "x.png")


def test_a_reference_file_damaged_since_enrolment_is_named_and_never_blocks_a_change(staff_client):
    signer = staff_client.post("/api/v1/signatures/signers/", {"name": "Ode"}, format="json").json()
    references = f"/api/v1/signatures/signers/{signer['id']}/references/"
    originals = [synthetic_signature(11, i) for i in range(3)]
    staff_client.post(references, {"files": [png(data, f"r{i}.png") for i, data in enumerate(originals)]},
                      format="multipart")  # fmt: skip
    damaged, kept = Reference.objects.filter(signer_id=signer["id"]).order_by("pk")[:2]
    with open(damaged.file.path, "wb") as handle:  # the disk under it went bad
        handle.write(b"not an image any more")
    ReferenceVector.objects.all().delete()  # as after a switch of encoder: the files are read again

    verify = f"/api/v1/signatures/signers/{signer['id']}/verify/"
    answer = staff_client.post(verify, {"image": png(synthetic_signature(11, 5))}, format="multipart")
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "reference_unreadable"
    assert f"reference {damaged.pk}" in answer.json()["error"]["message"]  # not the upload's fault
    # Its file cannot be read, yet the same file uploaded again is still known by its hash.
    again = staff_client.post(references, {"files": [png(originals[0], "again.png")]}, format="multipart")
    assert again.status_code == 400 and again.json()["rejected"][0]["code"] == "duplicate_reference"
    # Deleting another reference is done and answered as done; what could not be refreshed is logged.
    assert staff_client.delete(f"{references}{kept.pk}/").status_code == 204
    assert not Reference.objects.filter(pk=kept.pk).exists()
