"""The admin's actions and forms that go through the services."""

from __future__ import annotations

import shutil

import pytest

from search.models import IndexBatch, IndexJob, TrainedModel
from tests import images
from tests.search.helpers import add_product

pytestmark = pytest.mark.django_db


def test_reindex_selected_products_embeds_them_again(admin_client, django_capture_on_commit_callbacks):
    products = [add_product(images.jpeg_bytes(64, 64, seed=i), f"R{i}") for i in range(3)]
    with django_capture_on_commit_callbacks(execute=False):
        chosen = [p.pk for p in products[:2]]
        response = admin_client.post("/admin/catalog/product/", {"action": "reindex", "_selected_action": chosen})
    assert response.status_code == 302
    job = IndexJob.objects.get()
    assert job.mode == "all" and job.total == 2
    assert sorted(IndexBatch.objects.get(job=job).product_ids) == sorted(p.pk for p in products[:2])


def test_the_admin_starts_a_training_run_from_a_folder_under_the_root(admin_client, settings, tmp_path,
                                                                       django_capture_on_commit_callbacks):  # fmt: skip
    settings.EMBEDDING_TRAINING_ROOT = tmp_path
    for label in ("cats", "dogs"):
        (tmp_path / "pets" / label).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "pets" / label / f"{i}.png").write_bytes(images.png_bytes(seed=i))
    form = {"key": "pets", "data": "pets", "base": "efficientnet_lite0", "epochs": 2}
    outside = admin_client.post("/admin/search/trainedmodel/add/", {**form, "data": "../"})
    assert outside.status_code == 200 and "outside EMBEDDING_TRAINING_ROOT" in outside.content.decode()
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post("/admin/search/trainedmodel/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    trained = TrainedModel.objects.get()
    assert (trained.key, trained.status, trained.source, trained.config["epochs"]) == (
        "pets",
        "queued",
        str(tmp_path / "pets"),
        2,
    )
    shutil.rmtree(tmp_path / "pets")
    assert admin_client.get(f"/admin/search/trainedmodel/{trained.pk}/change/").status_code == 200
