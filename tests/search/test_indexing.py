"""Background indexing with real Celery worker processes, a real broker and pgvector."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.images import image_validate
from catalog.models import GalleryImage
from catalog.services import gallery_image_create
from search.models import Embedding, IndexBatch, IndexJob
from search.services.indexing import items_index
from tests import images
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def real_photos(count: int) -> list[tuple[str, bytes]]:
    """Real photos from ../shared/data when present, else generated pictures."""
    photos = sorted((images.SHARED_DATA / "vehicles").rglob("*.jpg"))[:count]
    if len(photos) == count:
        return [(path.name, path.read_bytes()) for path in photos]
    return [(f"picture{i}.jpg", images.jpeg_bytes(320, 240, seed=i)) for i in range(count)]


def job_state(client, job_id: int) -> dict:
    return client.get(f"/api/v1/index/jobs/{job_id}/").json()


def test_uploaded_images_are_embedded_by_a_worker(staff_client, api_client, workers, media_root):
    files = [SimpleUploadedFile(name, data, "image/jpeg") for name, data in real_photos(8)]
    response = staff_client.post("/api/v1/gallery/", {"files": files}, format="multipart")
    assert response.status_code == 201
    job_id = response.json()["job"]
    assert job_state(staff_client, job_id)["state"] == "queued"

    # One stored file goes bad before the worker gets to it: that item fails, not the job.
    broken = GalleryImage.objects.order_by("pk").last()
    (media_root / broken.file.name).write_bytes(b"garbage")

    workers.start()
    wait_for(lambda: job_state(staff_client, job_id)["state"] == "succeeded", timeout=180)
    job = job_state(staff_client, job_id)
    assert (job["total"], job["done"], job["failed"], job["percent"]) == (8, 7, 1, 100.0)
    assert job["failures"][0]["id"] == broken.pk and job["started_at"] and job["finished_at"]
    vectors = Embedding.objects.filter(model="efficientnet_lite0", gallery_image__isnull=False)
    assert vectors.count() == 7
    for embedding in vectors:
        assert len(embedding.vector) == 1280
        assert abs(np.linalg.norm(embedding.vector) - 1) < 1e-4
        assert embedding.sha256 == embedding.gallery_image.sha256
    listing = api_client.get("/api/v1/gallery/?page_size=50").json()["results"]
    assert sorted(item["embedded"] for item in listing) == [False] + [True] * 7
    assert api_client.get("/api/v1/health/").json()["workers"] >= 1

    status = {(r["collection"], r["model"]): r for r in api_client.get("/api/v1/index/status/").json()["results"]}
    assert status[("gallery", "efficientnet_lite0")]["missing"] == 1

    # Deleting an item deletes its vectors.
    staff_client.delete(f"/api/v1/gallery/{vectors.first().gallery_image_id}/")
    assert Embedding.objects.count() == 6


def test_progress_streams_as_server_sent_events(staff_client, workers):
    for name, data in real_photos(6):
        gallery_image_create(image=image_validate(data=data, filename=name), original_filename=name)
    workers.start()
    job_id = staff_client.post("/api/v1/index/jobs/", {"collection": "gallery"}, format="json").json()["id"]
    response = staff_client.get(
        f"/api/v1/index/jobs/{job_id}/events/", HTTP_ACCEPT="text/event-stream"
    )  # as EventSource
    assert response.status_code == 200 and response["Content-Type"] == "text/event-stream"
    events = [
        json.loads(chunk.decode().removeprefix("data: ").strip())
        for chunk in response.streaming_content
        if chunk.startswith(b"data: ")
    ]
    assert events[-1]["state"] == "succeeded" and events[-1]["percent"] == 100.0
    progress = [event["done"] + event["failed"] for event in events]
    assert progress == sorted(progress)


def test_job_survives_a_killed_worker_and_embeds_each_item_once(staff_client, workers, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    created = [
        gallery_image_create(
            image=image_validate(data=images.png_bytes(96, 96, seed=i), filename=f"{i}.png"),
            original_filename=f"{i}.png",
        )
        for i in range(240)
    ]
    job = items_index(gallery_ids=[image.pk for image in created])
    first = workers.start("first")
    wait_for(lambda: IndexJob.objects.get(pk=job.pk).done >= 4, timeout=180, interval=0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    job.refresh_from_db()
    assert job.state == "running" and job.done < job.total, "the job finished before the worker was killed"

    workers.start("second")
    wait_for(lambda: IndexJob.objects.get(pk=job.pk).state == "succeeded", timeout=240)
    job.refresh_from_db()
    assert (job.total, job.done, job.failed) == (240, 240, 0)
    assert Embedding.objects.filter(model="efficientnet_lite0").count() == 240
    assert set(Embedding.objects.values_list("gallery_image_id", flat=True)) == {image.pk for image in created}
    assert IndexBatch.objects.filter(job=job, done=False).count() == 0


def test_cancel_stops_a_job(staff_client, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    for i in range(4):
        gallery_image_create(image=image_validate(data=images.png_bytes(seed=i)), original_filename=f"{i}.png")
    job_id = staff_client.post("/api/v1/index/jobs/", {"collection": "gallery"}, format="json").json()["id"]
    cancelled = staff_client.post(f"/api/v1/index/jobs/{job_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = staff_client.post(f"/api/v1/index/jobs/{job_id}/cancel/")
    assert again.status_code == 200
    from search.services.indexing import index_batch_run, index_job_plan

    index_job_plan(job_id=job_id)  # a late plan task does nothing for a cancelled job
    for batch in IndexBatch.objects.filter(job_id=job_id):
        index_batch_run(batch_id=batch.pk)
    assert Embedding.objects.count() == 0


def test_job_api_validation_and_permissions(api_client, staff_client):
    assert api_client.post("/api/v1/index/jobs/", {"collection": "all"}, format="json").status_code == 401
    bad = staff_client.post("/api/v1/index/jobs/", {"collection": "everything"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "collection"
    unknown = staff_client.post("/api/v1/index/jobs/", {"model": "vgg99"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_model"
    assert staff_client.get("/api/v1/index/jobs/99999/").status_code == 404


def test_second_model_is_built_beside_the_first_and_switched_on_complete(
    staff_client, api_client, workers, resnet18_weights
):
    workers.env["RESNET18_WEIGHTS"] = str(resnet18_weights)
    files = [SimpleUploadedFile(name, data, "image/jpeg") for name, data in real_photos(6)]
    job_id = staff_client.post("/api/v1/gallery/", {"files": files}, format="multipart").json()["job"]
    workers.start()
    wait_for(lambda: job_state(staff_client, job_id)["state"] == "succeeded", timeout=180)
    query = GalleryImage.objects.order_by("pk").first().pk

    def search() -> dict:
        response = api_client.post("/api/v1/search/", {"gallery_image": query, "k": 3}, format="json")
        assert response.status_code == 200, response.json()
        return response.json()

    before = search()
    assert before["model"] == "efficientnet_lite0" and len(before["results"]) == 3
    assert all(result["id"] != query for result in before["results"])

    refused = staff_client.post("/api/v1/models/resnet18/activate/", {}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_incomplete"

    build = staff_client.post("/api/v1/index/jobs/", {"collection": "all", "model": "resnet18"}, format="json")
    assert build.status_code == 202
    during = search()  # searches keep answering from the active model while the new one builds
    assert during["model"] == "efficientnet_lite0" and during["results"] == before["results"]
    wait_for(lambda: job_state(staff_client, build.json()["id"])["state"] == "succeeded", timeout=180)
    assert search()["model"] == "efficientnet_lite0"
    assert Embedding.objects.filter(model="resnet18").count() == 6
    assert Embedding.objects.filter(model="efficientnet_lite0").count() == 6

    activated = staff_client.post("/api/v1/models/resnet18/activate/", {}, format="json")
    assert activated.status_code == 200 and activated.json() == {"active": "resnet18"}
    after = search()
    assert after["model"] == "resnet18" and len(after["results"]) == 3
    models = {row["key"]: row for row in staff_client.get("/api/v1/models/").json()["results"]}
    assert models["resnet18"]["active"] and not models["efficientnet_lite0"]["active"]
    assert models["resnet18"]["embedded"] == 6 and models["resnet18"]["dim"] == 512


def test_reindex_and_embedding_models_commands(workers, child_env):
    import subprocess
    import sys

    for name, data in real_photos(3):
        gallery_image_create(image=image_validate(data=data, filename=name), original_filename=name)
    workers.start()
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "manage.py", "reindex", "--collection", "gallery", "--mode", "all", "--timeout", "180"],
        cwd=root, env=child_env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "succeeded: 3 embedded, 0 failed of 3" in run.stdout and "3/3" in run.stderr
    listing = subprocess.run(
        [sys.executable, "manage.py", "embedding_models"], cwd=root, env=child_env, capture_output=True, text=True
    )
    line = next(row for row in listing.stdout.splitlines() if row.startswith("efficientnet_lite0"))
    assert line.split()[1:5] == ["1280", "*", "3", "0"]
    bad = subprocess.run(
        [sys.executable, "manage.py", "reindex", "--model", "nope", "--async"],
        cwd=root, env=child_env, capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "Unknown embedding model" in bad.stderr


def test_progress_streams_are_bounded(staff_client, settings, fake_embedder):
    """Each stream holds a server thread: a process serves at most JOB_EVENTS_MAX_STREAMS at
    once (503 past it, the slot given back when a stream closes), sends heartbeats and the
    reconnection delay, and ends at JOB_EVENTS_TIMEOUT."""
    from search.services.indexing import index_job_create

    settings.JOB_EVENTS_MAX_STREAMS = 1
    settings.JOB_EVENTS_TIMEOUT = 2
    settings.JOB_EVENTS_HEARTBEAT_SECONDS = 1
    job = index_job_create(collection="gallery")  # stays queued: no worker here
    first = staff_client.get(f"/api/v1/index/jobs/{job.pk}/events/", HTTP_ACCEPT="text/event-stream")
    assert first.status_code == 200
    busy = staff_client.get(f"/api/v1/index/jobs/{job.pk}/events/")
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "too_many_streams"
    started = time.monotonic()
    body = b"".join(first.streaming_content).decode()
    first.close()
    assert 1.5 < time.monotonic() - started < 5  # ended by its time limit, not by the job
    assert body.startswith("retry: 3000\n\n") and body.count("data: ") == 1 and ": keep-alive\n\n" in body
    again = staff_client.get(f"/api/v1/index/jobs/{job.pk}/events/")
    assert again.status_code == 200  # the slot came back
    again.close()
