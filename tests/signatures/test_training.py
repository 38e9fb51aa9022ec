"""Training a signature encoder here: the command, registration, activation, compare and
verify with it, the admin's training run on a real Celery worker, and the refusals."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from signatures.encoders import get_encoder
from signatures.models import SignatureEncoder
from signatures.preprocessing import DETAIL_SHAPE, INPUT_SHAPE
from signatures.selectors import encoder_background, encoder_spec
from signatures.services.encoders import encoder_delete, encoder_reconcile
from signatures.synthetic import synthetic_dataset, synthetic_signature
from signatures.training import _triplet_loss, augmenter
from tests.conftest import wait_for
from tests.signatures.conftest import cedar_dataset, real_or_synthetic

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_set(tmp_path):
    """Five synthetic writers: enough for a training and a validation split."""
    return synthetic_dataset(tmp_path / "tiny-set", writers=5, genuine=4, forged=2)


def png(data: bytes, name: str = "s.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, "image/png")


@pytest.mark.slow  # trains a real network for a few epochs on the CPU, end to end
def test_train_activate_and_verify_with_the_trained_encoder(
    tiny_set, staff_client, api_client, capsys, tmp_path, django_capture_on_commit_callbacks
):
    call_command("train_signature_encoder", data=str(tiny_set), layout="folders", epochs=1, key="tiny",
                 activate=True, verbosity=0)  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    encoder = SignatureEncoder.objects.get(key="tiny")
    assert encoder.status == "succeeded" and printed["key"] == "tiny" and printed["active"]
    assert -1 <= encoder.threshold <= 1 and encoder.seconds > 0
    assert encoder.dim == 112 + 3 * 80 + 6 * 112 + 192 and encoder.metrics["similarity_dim"] == 112
    # It sees the signatures at the finer size, as it was trained on them.
    loaded = get_encoder(encoder_spec())
    assert loaded.input_shape == DETAIL_SHAPE and loaded.net.input_shape == DETAIL_SHAPE
    assert encoder.metrics["training_writer_count"] + len(encoder.metrics["validation_writers"]) == 5
    assert not set(encoder.metrics["training_writers"]) & set(encoder.metrics["validation_writers"])
    assert 0 <= encoder.metrics["eer"] <= 1 and 0 <= encoder.metrics["auc"] <= 1
    assert len(encoder.curves["loss"]) == 1 and len(encoder.curves["val_eer"]) == 2  # epoch 0 is measured too
    assert len(encoder.fingerprint) == 64
    assert set(encoder.plots) == {"training", "roc", "scores", "confusion"}
    for name in [encoder.weights, *encoder.plots.values()]:
        assert default_storage.exists(name)
    for name in encoder.plots.values():
        assert default_storage.open(name).read(8) == b"\x89PNG\r\n\x1a\n"

    models = {m["key"]: m for m in staff_client.get("/api/v1/signatures/models/").json()["results"]}
    assert models["tiny"]["active"] and models["tiny"]["kind"] == "trained" and models["tiny"]["status"] == "succeeded"
    assert models["tiny"]["threshold"] == encoder.threshold and models["tiny"]["dim"] == encoder.dim
    assert models["tiny"]["thresholds"] == encoder.metrics["thresholds"]
    assert not models["efficientnet_lite0_strokes"]["active"]

    same, other = synthetic_signature(1, 0), synthetic_signature(3, 0)
    compared = api_client.post("/api/v1/signatures/compare/", {"image1": png(same), "image2": png(same)},
                               format="multipart").json()  # fmt: skip
    assert compared["model"] == "tiny" and compared["similarity"] >= 0.999 and compared["result"] == "Matched"
    signer = staff_client.post("/api/v1/signatures/signers/", {"name": "Writer 1"}, format="json").json()
    enrolled = staff_client.post(f"/api/v1/signatures/signers/{signer['id']}/references/",
                                 {"files": [png(synthetic_signature(1, i), f"r{i}.png") for i in range(3)]},
                                 format="multipart")  # fmt: skip
    assert enrolled.status_code == 201, enrolled.json()
    verdict = staff_client.post(f"/api/v1/signatures/signers/{signer['id']}/verify/", {"image": png(other)},
                                format="multipart").json()  # fmt: skip
    # Three references: the signer's own model decides, at the threshold measured with three.
    assert set(encoder.metrics["thresholds"]) == {"1", "3"} and encoder.metrics["thresholds"]["1"] == encoder.threshold
    assert verdict["model"] == "tiny" and verdict["mode"] == "writer_dependent"
    assert verdict["threshold"] == round(encoder.calibration["writer_dependent"]["3"]["eer_threshold"], 4)
    assert verdict["references_used"] == 3 and len(verdict["per_reference"]) == 3
    assert verdict["similarity"] == max(r["similarity"] for r in verdict["per_reference"])
    # A threshold in the request is a cosine similarity: the best similarity decides.
    asked = staff_client.post(f"/api/v1/signatures/signers/{signer['id']}/verify/",
                              {"image": png(other), "threshold": 0.5}, format="multipart").json()  # fmt: skip
    assert asked["mode"] == "writer_independent" and asked["score"] == verdict["similarity"]

    # The trained model evaluated on the data it was trained on: its held-out writers only.
    out = tmp_path / "evaluation"
    call_command("evaluate_signatures", model="tiny", data=str(tiny_set), layout="folders", references="1",
                 out=str(out), verbosity=0)  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    assert report["writers"] == len(encoder.metrics["validation_writers"]) and report["threshold"] == encoder.threshold
    assert (out / "training.png").read_bytes()[:4] == b"\x89PNG"

    # The active encoder cannot be deleted; once another is active, deleting removes its files.
    with pytest.raises(Exception, match="active encoder"):
        encoder_delete(encoder=encoder)
    assert api_client.post("/api/v1/signatures/models/efficientnet_lite0_strokes/activate/").status_code == 401
    assert staff_client.post("/api/v1/signatures/models/efficientnet_lite0_strokes/activate/").status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        encoder_delete(encoder=encoder)
    assert not SignatureEncoder.objects.filter(key="tiny").exists()
    assert not any(default_storage.exists(name) for name in [encoder.weights, encoder.background,
                                                             *encoder.plots.values()])  # fmt: skip

    # Trained again under the same key: files of its own, so that a process still holding the
    # old encoder and background set (kept by storage name) never serves them for the new one.
    call_command("train_signature_encoder", data=str(tiny_set), layout="folders", epochs=1, key="tiny", verbosity=0)
    again = SignatureEncoder.objects.get(key="tiny")
    assert again.status == "succeeded" and again.weights != encoder.weights and again.background != encoder.background
    assert get_encoder(encoder_spec("tiny")) is not loaded and encoder_background(encoder_spec("tiny")) is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layout": "folders", "key": "Bad Key!"}, "lower-case"),
        ({"layout": "folders", "epochs": 0}, "epochs must be between"),
        ({"layout": "cedar"}, "No signatures found"),
        ({"layout": "folders", "data": "missing"}, "is not a folder"),
        ({"layout": "folders", "key": "efficientnet_lite0_ink"}, "exists already"),
    ],
)
def test_training_refusals(tiny_set, options, message):
    data = str(tiny_set.parent / options.pop("data")) if "data" in options else str(tiny_set)
    with pytest.raises(CommandError, match=message):
        call_command("train_signature_encoder", data=data, verbosity=0, **options)
    assert not SignatureEncoder.objects.exists()


def test_training_needs_three_writers(tmp_path):
    two = synthetic_dataset(tmp_path / "two", writers=2, genuine=3, forged=0)
    with pytest.raises(CommandError, match="at least 3 writers"):
        call_command("train_signature_encoder", data=str(two), layout="folders", verbosity=0)


def test_unready_and_unknown_encoders_cannot_be_activated(staff_client, tiny_set):
    SignatureEncoder.objects.create(key="queued-one", sources=[{"layout": "folders", "data": str(tiny_set)}])
    refused = staff_client.post("/api/v1/signatures/models/queued-one/activate/")
    assert refused.status_code == 409 and "queued" in refused.json()["error"]["message"]
    assert staff_client.post("/api/v1/signatures/models/nope/activate/").status_code == 404
    listed = {m["key"]: m for m in staff_client.get("/api/v1/signatures/models/").json()["results"]}
    assert listed["queued-one"]["status"] == "queued" and listed["queued-one"]["threshold"] is None


def test_reconciler_fails_a_training_whose_worker_died(tiny_set, settings):
    encoder = SignatureEncoder.objects.create(
        key="orphan", sources=[{"layout": "folders", "data": str(tiny_set)}], status="running"
    )
    SignatureEncoder.objects.filter(pk=encoder.pk).update(
        updated_at=encoder.updated_at - timedelta(seconds=settings.SIGNATURE_TRAINING_STALL_SECONDS + 5)
    )
    assert encoder_reconcile()["stalled"] == 1
    encoder.refresh_from_db()
    assert encoder.status == "failed" and "stopped reporting" in encoder.message


def test_triplet_loss_prefers_writers_apart_from_their_forgeries():
    writers = torch.tensor([0, 0, 0, 1, 1, 1])
    genuine = torch.tensor([True, True, False, True, True, False])
    apart = torch.nn.functional.normalize(torch.tensor(
        [[1.0, 0, 0], [0.98, 0.1, 0], [0, 0, 1], [0, 1, 0], [0.1, 0.98, 0], [0, 0, -1]]), dim=1)  # fmt: skip
    forged_close = apart.clone()
    forged_close[2] = apart[0]  # writer 0's skilled forgery sits on its genuine signatures
    assert _triplet_loss(apart, writers, genuine) < _triplet_loss(forged_close, writers, genuine)


def test_augmentation_keeps_a_signature_a_signature():
    augment = augmenter(seed=1)
    array = torch.zeros(150, 220)
    array[60:90, 40:180] = 1.0
    changed = augment(array)
    assert changed.shape == array.shape and 0 <= float(changed.min()) and float(changed.max()) <= 1
    assert not torch.equal(changed, array) and float(changed.sum()) > 0.5 * float(array.sum())
    assert np.isfinite(changed.numpy()).all()


@pytest.mark.django_db(transaction=True)
def test_admin_starts_a_training_that_a_worker_runs(admin_client, workers, tiny_set, settings):
    settings.SIGNATURE_TRAINING_ROOT = tiny_set.parent.resolve()
    workers.env["SIGNATURE_TRAINING_ROOT"] = str(settings.SIGNATURE_TRAINING_ROOT)
    outside = admin_client.post(
        "/admin/signatures/signatureencoder/add/",
        {"key": "x", "data": "folders:../..", "epochs": 1, "loss": "triplet"},
    )
    assert outside.status_code == 200 and "inside SIGNATURE_TRAINING_ROOT" in outside.content.decode()
    cedar_dataset(tiny_set.parent / "lab-b", writers=range(20, 23), genuine=4, forged=2)
    unnamed = admin_client.post(
        "/admin/signatures/signatureencoder/add/", {"key": "x", "data": tiny_set.name, "epochs": 1, "loss": "triplet"}
    )
    assert unnamed.status_code == 200 and "Name the layout" in unnamed.content.decode()
    response = admin_client.post("/admin/signatures/signatureencoder/add/", {
        "key": "from-admin", "data": f"folders:{tiny_set.name}\ncedar:lab-b", "epochs": 1, "loss": "triplet",
        "activate": "on"})  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    workers.start()
    wait_for(lambda: SignatureEncoder.objects.get(key="from-admin").status in ("succeeded", "failed"), timeout=300)
    encoder = SignatureEncoder.objects.get(key="from-admin")
    assert encoder.status == "succeeded", encoder.message
    assert encoder.sources_text() == "folders:tiny-set, cedar:lab-b" and set(encoder.metrics["sources"]) == {
        "tiny-set", "lab-b"}  # fmt: skip
    page = admin_client.get(f"/admin/signatures/signatureencoder/{encoder.pk}/change/").content.decode()
    assert encoder.plots["roc"] in page and "validation" in page.lower()
    from signatures.selectors import active_encoder_key

    assert active_encoder_key() == "from-admin"


def test_admin_bulk_delete_keeps_the_active_encoder(admin_client, tiny_set):
    from signatures.models import ActiveEncoder

    active = SignatureEncoder.objects.create(
        key="in-use", sources=[{"layout": "folders", "data": str(tiny_set)}], status="succeeded"
    )
    spare = SignatureEncoder.objects.create(
        key="spare", sources=[{"layout": "folders", "data": str(tiny_set)}], status="failed"
    )
    ActiveEncoder.objects.create(pk=1, key=active.key)
    action = {"action": "delete_selected", "_selected_action": [active.pk, spare.pk], "post": "yes"}
    response = admin_client.post("/admin/signatures/signatureencoder/", action, follow=True)
    assert response.status_code == 200 and "is the active encoder" in response.content.decode()
    assert list(SignatureEncoder.objects.values_list("key", flat=True)) == ["in-use"]
    # A run is followed, never edited: its page is read-only.
    assert admin_client.get(f"/admin/signatures/signatureencoder/{active.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/signatures/signatureencoder/{active.pk}/change/", {}).status_code == 403


def test_the_taps_extend_the_vector_and_leave_its_similarity_part_alone():
    from signatures.encoders import SignatureNet, Tap, network_embed, network_load
    from signatures.preprocessing import signature_preprocess

    arrays = [np.asarray(signature_preprocess(data).array) for data in real_or_synthetic(2, 3)]
    tapped = SignatureNet(dim=112, frozen_blocks=8, feature_blocks=11, taps=(Tap(14), Tap(8, 1, 3)))
    plain = SignatureNet(dim=112, frozen_blocks=11, feature_blocks=11)
    vectors = network_embed(tapped, arrays)
    assert tapped.taps == (Tap(8, 1, 3), Tap(14, 1, 1))  # in block order, whatever order they came in
    assert vectors.shape == (3, 112 + 3 * 80 + 192) == (3, tapped.descriptor_dim)
    assert np.allclose(vectors[:, :112], network_embed(plain, arrays), atol=1e-5)
    for start, stop in ((0, 112), (112, 352), (352, 544)):  # each part unit length
        assert np.allclose(np.linalg.norm(vectors[:, start:stop], axis=1), 1, atol=1e-5)
    # The strips are where the ink is: the beginning, middle and end of the signature differ.
    strips = vectors[:, 112:352].reshape(3, 80, 3)
    assert not np.allclose(strips[..., 0], strips[..., 2], atol=1e-3)
    # An encoder saved before grids named its taps by number: the whole signature.
    legacy = SignatureNet(dim=112, frozen_blocks=8, feature_blocks=11, taps=[8, 14])
    assert legacy.taps == (Tap(8), Tap(14)) and legacy.descriptor_dim == 112 + 80 + 192
    saved = {"state": legacy.state_dict(), "dim": 112, "frozen_blocks": 8, "feature_blocks": 11, "taps": [8, 14]}
    assert network_load(saved).input_shape == INPUT_SHAPE  # saved before the finer size: the size it knew
    whole = network_embed(legacy, arrays)[:, 112:192]
    assert np.allclose(whole, network_embed(SignatureNet(dim=112, frozen_blocks=8, feature_blocks=11,
                                                         taps=[[8, 1, 1]]), arrays)[:, 112:], atol=1e-5)  # fmt: skip
