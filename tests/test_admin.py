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


def test_the_admin_adds_many_gallery_images_at_once_and_names_each_refusal(
    admin_client, django_capture_on_commit_callbacks
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from catalog.models import GalleryImage

    files = [SimpleUploadedFile(f"ok{i}.jpg", images.jpeg_bytes(80, 60, seed=i), "image/jpeg") for i in range(3)]
    files.append(SimpleUploadedFile("notes.jpg", b"not an image at all", "image/jpeg"))
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post("/admin/catalog/galleryimage/add/", {"files": files}, follow=True)
    page = response.content.decode()
    assert "3 images added" in page and "Refused notes.jpg: " in page
    assert sorted(GalleryImage.objects.values_list("original_filename", flat=True)) == ["ok0.jpg", "ok1.jpg", "ok2.jpg"]
    assert IndexJob.objects.count() == 1  # one embedding job for the upload
    nothing = admin_client.post("/admin/catalog/galleryimage/add/", {})
    assert nothing.status_code == 200 and "This field is required" in nothing.content.decode()


def test_index_jobs_are_queued_followed_and_cancelled_in_the_admin(admin_client, django_capture_on_commit_callbacks):
    add_product(images.jpeg_bytes(64, 64, seed=1), "J1")
    with django_capture_on_commit_callbacks(execute=False):
        response = admin_client.post("/admin/search/indexjob/add/", {"collection": "products",
                                     "model": "efficientnet_lite0", "mode": "all"})  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    job = IndexJob.objects.get()
    assert (job.collection, job.model, job.mode, job.state) == ("products", "efficientnet_lite0", "all", "queued")
    listing = admin_client.get("/admin/search/indexjob/").content.decode()
    assert "<progress" in listing
    detail = admin_client.get(f"/admin/search/indexjob/{job.pk}/change/").content.decode()
    assert 'http-equiv="refresh"' in detail  # follows a running job
    response = admin_client.post("/admin/search/indexjob/", {"action": "cancel", "_selected_action": [job.pk]},
                                 follow=True)  # fmt: skip
    assert "1 job cancelled." in response.content.decode()
    job.refresh_from_db()
    assert job.state == "cancelled"


@pytest.mark.django_db(transaction=True)  # activating builds the model's index CONCURRENTLY
def test_the_admin_lists_embedding_models_with_coverage_and_activates_one(
    admin_client, django_capture_on_commit_callbacks
):
    from search.selectors.embedding_models import active_model_key

    add_product(images.jpeg_bytes(64, 64, seed=1), "M1")
    page = admin_client.get("/admin/search/embeddingmodelchoice/").content.decode()
    assert "efficientnet_lite0</strong> (active)" in page and "resnet18" in page and "0 of 1 items" in page
    refused = admin_client.post("/admin/search/embeddingmodelchoice/", {"action": "activate", "model": "resnet18"},
                                follow=True)  # fmt: skip
    assert "resnet18" in refused.content.decode() and active_model_key() == "efficientnet_lite0"
    forced = admin_client.post("/admin/search/embeddingmodelchoice/",
                               {"action": "activate", "model": "resnet18", "force": "1"}, follow=True)  # fmt: skip
    assert "Searches now use resnet18." in forced.content.decode() and active_model_key() == "resnet18"
    with django_capture_on_commit_callbacks(execute=False):
        built = admin_client.post("/admin/search/embeddingmodelchoice/",
                                  {"action": "build_activate", "model": "efficientnet_lite0"}, follow=True)  # fmt: skip
    assert "searches switch to it when it succeeds" in built.content.decode()
    assert IndexJob.objects.get().activate_when_done


def test_model_pages_and_job_actions_are_refused_to_non_staff(client, django_user_model):
    django_user_model.objects.create_user("user", password="pw-user-1")
    client.login(username="user", password="pw-user-1")
    for path in ("/admin/search/embeddingmodelchoice/", "/admin/search/indexjob/", "/admin/catalog/galleryimage/add/"):
        assert client.get(path).status_code == 302  # to the admin login
