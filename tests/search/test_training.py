"""Embedding models trained here: the command on real photos, the artefacts, registration,
a reindex and a search with the trained model, the API's training run on a real Celery
worker ending in an activation, evaluation, and the refusals."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from search.datasets import dataset_load, dataset_split
from search.models import ActiveModel, Embedding, IndexBatch, IndexJob, SearchTuning, TrainedModel
from search.selectors.embedding_models import active_model_key, model_spec_get
from search.services.indexing import index_batch_run, index_job_create, index_job_plan
from search.services.trained_models import trained_models_reconcile
from simsite.training_runs import training_run_execute
from tests.conftest import wait_for
from tests.factories import TrainedModelFactory
from tests.images import SHARED_DATA
from tests.search.helpers import add_gallery_image

# transaction=True: vector indexes are built CONCURRENTLY (outside a transaction) and a worker
# process reads what the test writes.
pytestmark = pytest.mark.django_db(transaction=True)

VEHICLES = SHARED_DATA / "vehicles"


# Where ../shared/data is not beside the checkout: real Fashion-MNIST photos (Debian's
# package) stand in, one garment class per folder.
_STAND_INS = {"bikes": 1, "cars": 8, "trucks": 7}


def _vehicle_subset(folder, per_class: int, classes: tuple[str, ...] = ("bikes", "cars", "trucks")):
    """A few real photos per class, in a sub-folder per class: vehicles from ../shared/data,
    else Fashion-MNIST's."""
    if (VEHICLES / "labels.csv").is_file():
        for label in classes:
            (folder / label).mkdir(parents=True)
            for path in sorted((VEHICLES / label).glob("*.jpg"))[:per_class]:
                shutil.copy(path, folder / label / path.name)
        return folder
    from PIL import Image

    from catalog.fashion_mnist import DEFAULT_PATH, fashion_mnist_load

    if not DEFAULT_PATH.is_dir():
        pytest.skip("neither ../shared/data/vehicles nor Debian's dataset-fashion-mnist is present")
    photos, labels = fashion_mnist_load(split="test")
    for label in classes:
        (folder / label).mkdir(parents=True)
        for index in np.flatnonzero(labels == _STAND_INS[label])[:per_class]:
            Image.fromarray(photos[index]).convert("RGB").save(folder / label / f"{index}.jpg", quality=95)
    return folder


@pytest.fixture
def tiny_vehicles(tmp_path):
    return _vehicle_subset(tmp_path / "tiny-vehicles", per_class=6)


def _run_batches(job: IndexJob) -> None:
    index_job_plan(job_id=job.pk)
    for batch in IndexBatch.objects.filter(job=job, done=False).order_by("pk"):
        index_batch_run(batch_id=batch.pk)


@pytest.mark.slow  # trains a real network for a few epochs on the CPU, end to end
def test_train_register_reindex_and_search_with_the_trained_model(tiny_vehicles, api_client, staff_client, capsys):
    call_command("train_embedding_model", "--from", str(tiny_vehicles), "--epochs", "1", "--key", "tiny_vehicles",
                 "--dim", "64", verbosity=0)  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    trained = TrainedModel.objects.get(key="tiny_vehicles")
    assert trained.status == "succeeded" and printed["key"] == "tiny_vehicles"
    assert trained.dim == 64 and trained.classes == ["bikes", "cars", "trucks"] and trained.seconds > 0
    assert trained.metrics["split"] == {"train": 12, "val": 3, "test": 3}
    assert len(trained.curves["loss"]) == 1 and trained.metrics["best_epoch"] == 1
    for summary in (trained.metrics["test"], trained.metrics["base_test"]):
        assert 0 <= summary["precision@1"] <= 1 and 0 <= summary["map@10"] <= 1
    assert set(trained.metrics["test_by_class"]) == {"bikes", "cars", "trucks"}
    assert sum(map(sum, trained.metrics["confusion"])) == 3 and 0 <= trained.metrics["test_accuracy"] <= 1
    assert len(trained.fingerprint) == 64
    assert set(trained.plots) == {"training", "confusion"}
    for name in [trained.weights, *trained.plots.values()]:
        assert default_storage.exists(name)
    for name in trained.plots.values():
        assert default_storage.open(name).read(8) == b"\x89PNG\r\n\x1a\n"

    models = {m["key"]: m for m in staff_client.get("/api/v1/models/").json()["results"]}
    assert models["tiny_vehicles"]["kind"] == "trained" and models["tiny_vehicles"]["dim"] == 64
    assert models["tiny_vehicles"]["base"] == "efficientnet_lite0" and not models["tiny_vehicles"]["active"]
    assert models["tiny_vehicles"]["metrics"]["test"] == trained.metrics["test"]
    assert models["efficientnet_lite0"]["kind"] == "pretrained"

    # Index gallery photos with it beside the active model, then switch searches to it when done.
    photos = sorted((tiny_vehicles / "cars").glob("*.jpg"))[:2] + sorted((tiny_vehicles / "trucks").glob("*.jpg"))[:2]
    items = [add_gallery_image(path.read_bytes(), path.name) for path in photos]
    response = staff_client.post("/api/v1/index/jobs/", {"collection": "gallery", "model": "tiny_vehicles",
                                                         "activate": True}, format="json")  # fmt: skip
    assert response.status_code == 202 and response.json()["activate_when_done"]
    assert active_model_key() == "efficientnet_lite0"  # nothing switches before the vectors exist
    _run_batches(IndexJob.objects.get(pk=response.json()["id"]))
    assert IndexJob.objects.get(pk=response.json()["id"]).state == "succeeded"
    assert active_model_key() == "tiny_vehicles"
    assert Embedding.objects.filter(model="tiny_vehicles").count() == 4
    assert all(len(row.vector) == 64 for row in Embedding.objects.filter(model="tiny_vehicles"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'embedding_tiny_vehicles_hnsw'")
        assert cursor.fetchone()

    query = SimpleUploadedFile("q.jpg", photos[0].read_bytes(), "image/jpeg")
    results = api_client.post("/api/v1/search/", {"image": query, "k": 4, "threshold": 0}).json()
    assert results["model"] == "tiny_vehicles"
    assert results["results"][0]["id"] == items[0].pk and results["results"][0]["similarity"] > 0.99

    # Evaluation side by side on the held-out split it never saw, with plots and JSON.
    out = tiny_vehicles.parent / "evaluation"
    call_command("evaluate_retrieval", "--model", "efficientnet_lite0", "--model", "tiny_vehicles", "--data",
                 str(tiny_vehicles), "--near-duplicates", "2", "--output", str(out), "--json", verbosity=0)  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 3 and set(report["models"]) == {"efficientnet_lite0", "tiny_vehicles"}
    assert report["models"]["tiny_vehicles"]["overall"] == trained.metrics["test"]
    assert set(report["models"]["tiny_vehicles"]["near_duplicate_recall@1"]) >= {"all", "hflip", "jpeg30"}
    assert "accuracy" in report["models"]["tiny_vehicles"] and "accuracy" not in report["models"]["efficientnet_lite0"]
    assert (out / "precision.png").read_bytes()[:4] == b"\x89PNG" and (out / "confusion-tiny_vehicles.png").is_file()
    assert json.loads((out / "report.json").read_text()) == report

    # The active model cannot be deleted; another can, with its vectors, index and files.
    assert staff_client.delete("/api/v1/models/trained/tiny_vehicles/").status_code == 409
    ActiveModel.objects.update_or_create(pk=1, defaults={"key": "efficientnet_lite0"})
    names = [trained.weights, *trained.plots.values()]
    SearchTuning.objects.create(model="tiny_vehicles", ef_search=60, recall=1, target_recall=0.95, vectors=3, queries=3)
    assert staff_client.delete("/api/v1/models/trained/tiny_vehicles/").status_code == 204
    assert not Embedding.objects.filter(model="tiny_vehicles").exists()
    assert not SearchTuning.objects.exists()  # a later model of that name gets its own
    assert not any(default_storage.exists(name) for name in names)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_indexes WHERE indexname = 'embedding_tiny_vehicles_hnsw'")
        assert cursor.fetchone() is None
    assert staff_client.get("/api/v1/models/trained/tiny_vehicles/").status_code == 404

    # Trained again under the same key: a weights file of its own, so a process that still holds
    # the old network (get_embedder keeps it by spec, weights name included) never serves it.
    call_command("train_embedding_model", "--from", str(tiny_vehicles), "--epochs", "1", "--key", "tiny_vehicles",
                 "--dim", "64", verbosity=0)  # fmt: skip
    again = TrainedModel.objects.get(key="tiny_vehicles")
    assert again.status == "succeeded" and again.weights != trained.weights and default_storage.exists(again.weights)
    assert model_spec_get("tiny_vehicles").weights == again.weights


def test_the_api_starts_a_training_that_a_worker_runs_then_activates(
    staff_client, api_client, workers, tmp_path, settings
):
    root = tmp_path / "training"
    _vehicle_subset(root / "vehicles", per_class=4, classes=("cars", "trucks"))
    settings.EMBEDDING_TRAINING_ROOT = root
    workers.env["EMBEDDING_TRAINING_ROOT"] = str(root)
    add_gallery_image(next((root / "vehicles" / "cars").glob("*.jpg")).read_bytes(), "car.jpg")
    response = staff_client.post("/api/v1/models/trained/", {"data": "vehicles", "epochs": 1, "key": "from_api",
                                                             "dim": 32, "activate": True}, format="json")  # fmt: skip
    assert response.status_code == 202, response.json()
    # The folder relative to EMBEDDING_TRAINING_ROOT: no answer names a server path.
    assert response.json()["status"] == "queued" and response.json()["source"] == "vehicles"
    workers.start()
    wait_for(lambda: active_model_key() == "from_api" or TrainedModel.objects.get(key="from_api").status == "failed",
             timeout=300)  # fmt: skip
    trained = TrainedModel.objects.get(key="from_api")
    assert trained.status == "succeeded", trained.message
    assert Embedding.objects.filter(model="from_api").count() == 1
    detail = staff_client.get("/api/v1/models/trained/from_api/").json()
    assert detail["status"] == "succeeded" and detail["progress"] == 1.0 and detail["classes"] == ["cars", "trucks"]
    listed = staff_client.get("/api/v1/models/trained/").json()
    assert [row["key"] for row in listed["results"]] == ["from_api"]


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"data": "catalog", "key": "Bad-Key"}, 400, "invalid_key"),
        ({"data": "catalog", "key": "efficientnet_lite0"}, 409, "duplicate_key"),
        ({"data": "catalog", "base": "resnet101"}, 400, "invalid"),
        ({"data": "catalog", "epochs": 0}, 400, "invalid"),
        ({"data": "catalog"}, 400, "too_few_classes"),
        ({"data": "../outside"}, 403, "data_not_allowed"),
        ({"data": "/etc"}, 403, "data_not_allowed"),
        ({"data": "missing"}, 404, "data_not_found"),
    ],
)
def test_training_refusals(staff_client, settings, tmp_path, payload, status, code):
    settings.EMBEDDING_TRAINING_ROOT = tmp_path
    response = staff_client.post("/api/v1/models/trained/", payload, format="json")
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["code"] == code or (code == "invalid" and error["code"] in ("invalid_choice", "min_value"))
    assert not TrainedModel.objects.exists()


def test_training_from_a_folder_needs_a_root_and_staff(staff_client, api_client, settings, tiny_vehicles):
    settings.EMBEDDING_TRAINING_ROOT = None
    response = staff_client.post("/api/v1/models/trained/", {"data": str(tiny_vehicles)}, format="json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "data_not_allowed"
    assert api_client.post("/api/v1/models/trained/", {"data": "catalog"}, format="json").status_code == 401
    with pytest.raises(CommandError, match="at least 2 classes"):
        one_class = tiny_vehicles.parent / "one"
        shutil.copytree(tiny_vehicles / "cars", one_class / "cars")
        call_command("train_embedding_model", "--from", str(one_class), verbosity=0)


def test_unfinished_models_cannot_be_used(staff_client, tiny_vehicles):
    TrainedModelFactory(key="half_done", source=str(tiny_vehicles), status="running")
    response = staff_client.post("/api/v1/models/half_done/activate/", {"force": True}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_model"
    response = staff_client.post("/api/v1/index/jobs/", {"model": "half_done"}, format="json")
    assert response.status_code == 400
    assert staff_client.delete("/api/v1/models/trained/half_done/").status_code == 409


def test_reconciler_fails_a_training_whose_worker_died(settings, tiny_vehicles):
    trained = TrainedModelFactory(key="silent", source=str(tiny_vehicles), status="running")
    TrainedModel.objects.filter(pk=trained.pk).update(
        updated_at=trained.updated_at - timedelta(seconds=settings.EMBEDDING_TRAINING_STALL_SECONDS + 1)
    )
    assert trained_models_reconcile()["training_stalled"] == 1
    trained.refresh_from_db()
    assert trained.status == "failed" and "stopped reporting" in trained.message


def test_an_index_job_that_activates_switches_only_when_it_succeeds(fake_embedder):
    # No gallery images: the job has nothing to do and succeeds at once.
    job = index_job_create(collection="gallery", model="resnet18", activate_when_done=True)
    assert active_model_key() == "efficientnet_lite0"
    index_job_plan(job_id=job.pk)
    assert IndexJob.objects.get(pk=job.pk).state == "succeeded" and active_model_key() == "resnet18"


def test_split_is_by_item_stratified_seeded_and_disjoint(tmp_path):
    for label, count in (("a", 20), ("b", 7), ("c", 3), ("tiny", 2)):
        (tmp_path / label).mkdir()
        for i in range(count):
            (tmp_path / label / f"{i}.png").write_bytes(b"x")
    items = dataset_load(tmp_path)
    splits = dataset_split(items, seed=3)
    names = {name: {item.name for item in members} for name, members in splits.items()}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert not (names["val"] & names["test"])
    for split in ("train", "val", "test"):
        assert {item.label for item in splits[split]} == {"a", "b", "c"}  # "tiny" (2 images) is left out
    assert [len(splits[s]) for s in ("train", "val", "test")] == [14 + 5 + 1, 3 + 1 + 1, 3 + 1 + 1]
    assert dataset_split(items, seed=3) == splits and dataset_split(items, seed=4) != splits


def test_labels_csv_layout_keeps_to_its_folder(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("1.jpg", "2.jpg"):
        (tmp_path / "img" / name).write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("path,class\nimg/1.jpg,cars\nimg/2.jpg,bikes\n../etc/passwd,x\nnone.jpg,y\n")
    items = dataset_load(tmp_path)
    assert sorted((item.name, item.label) for item in items) == [("img/1.jpg", "cars"), ("img/2.jpg", "bikes")]


def test_model_spec_of_a_trained_model(tiny_vehicles):
    TrainedModelFactory(key="ready", base="resnet18", status="succeeded", dim=48, classes=["a", "b"],
                        weights="models/embeddings/ready/weights.pt")  # fmt: skip
    spec = model_spec_get("ready")
    assert (spec.kind, spec.dim, spec.base, spec.classes, spec.input_size) == (
        "trained",
        48,
        "resnet18",
        ("a", "b"),
        224,
    )
    assert np.allclose(spec.mean, model_spec_get("resnet18").mean)


def test_thumbnails_train_at_a_smaller_input_than_photos():
    from search.training import SMALL_INPUT, input_size_for
    from tests import images

    thumbnails = [lambda seed=seed: images.png_bytes(28, 28, seed=seed) for seed in range(5)]
    photos = [lambda seed=seed: images.jpeg_bytes(640, 480, seed=seed) for seed in range(5)]
    assert input_size_for(thumbnails, 224) == SMALL_INPUT
    assert input_size_for(photos, 224) == 224
    assert input_size_for([lambda: b"not an image"], 224) == 224


def test_a_failure_after_the_run_succeeded_keeps_the_models_files(tiny_vehicles):
    def train(run: TrainedModel, saved: list[str]) -> None:
        saved.append(default_storage.save(f"models/embeddings/{run.key}/weights.pt", ContentFile(b"weights")))
        with transaction.atomic():
            TrainedModel.objects.filter(pk=run.pk).update(status="succeeded", weights=saved[0])
        raise RuntimeError("the index job of its activation could not be created")  # after the commit

    kept = TrainedModelFactory(key="kept", source=str(tiny_vehicles))
    kept = training_run_execute(TrainedModel, pk=kept.pk, first_message="training", train=train)
    assert kept.status == "succeeded" and default_storage.exists(kept.weights)

    def fail_before(run: TrainedModel, saved: list[str]) -> None:
        saved.append(default_storage.save(f"models/embeddings/{run.key}/weights.pt", ContentFile(b"weights")))
        raise RuntimeError("out of memory")

    failed = TrainedModelFactory(key="failed", source=str(tiny_vehicles))
    failed = training_run_execute(TrainedModel, pk=failed.pk, first_message="training", train=fail_before)
    assert failed.status == "failed" and not default_storage.exists("models/embeddings/failed/weights.pt")


def test_deleting_a_model_whose_file_cannot_be_deleted_still_deletes_it_and_its_other_files(
    tiny_vehicles, staff_client, media_root
):
    folder = "models/embeddings/stuck"
    names = {name: default_storage.save(f"{folder}/{name}", ContentFile(b"x"))
             for name in ("weights.pt", "training.png", "confusion.png")}  # fmt: skip
    plots = {"training": names["training.png"], "confusion": names["confusion.png"]}
    TrainedModel.objects.create(key="stuck", base="efficientnet_lite0", source=str(tiny_vehicles), status="succeeded",
                                dim=64, weights=names["weights.pt"], plots=plots)  # fmt: skip
    weights = media_root / names["weights.pt"]  # a non-empty folder there: the storage cannot delete it
    weights.unlink()
    (weights / "inside").mkdir(parents=True)
    assert staff_client.delete("/api/v1/models/trained/stuck/").status_code == 204
    assert not TrainedModel.objects.filter(key="stuck").exists()
    assert weights.is_dir()
    assert not default_storage.exists(names["training.png"]) and not default_storage.exists(names["confusion.png"])


@pytest.mark.django_db(transaction=True)
def test_two_runs_asking_for_the_same_key_at_once_get_a_409_not_a_500(tiny_vehicles):
    """Both pass the key check; the unique key decides, and the loser is told as the check says."""
    import threading

    from search.services.trained_models import model_training_create
    from simsite.errors import ServiceError

    inserted, release = threading.Event(), threading.Event()

    def first() -> None:  # holds the row uncommitted while the second checks and inserts
        try:
            with transaction.atomic():
                TrainedModel.objects.create(key="race", base="efficientnet_lite0", source="catalog")
                inserted.set()
                release.wait(10)
        finally:
            inserted.set()
            connection.close()

    outcome: list[object] = []

    def second() -> None:
        try:
            outcome.append(model_training_create(data=str(tiny_vehicles), key="race"))
        except ServiceError as error:
            outcome.append(error)
        finally:
            connection.close()

    one = threading.Thread(target=first)
    one.start()
    inserted.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(1.0)  # it waits on the first's uncommitted key
    release.set()
    one.join(10)
    two.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], ServiceError), outcome
    assert (outcome[0].code, outcome[0].status_code) == ("duplicate_key", 409)
    assert TrainedModel.objects.filter(key="race").count() == 1
