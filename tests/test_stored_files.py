"""The sweep of stored files no row names (simsite/stored_files.py), run by the reconciler, on
real files in a temporary MEDIA_ROOT and real PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from django.apps import apps
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import FileField

from catalog.images import image_validate
from catalog.models import Product, ProductImport
from catalog.services import product_create
from catalog.storage import image_name_for, thumbnail_get, thumbnail_name_for
from search.models import TrainedModel
from search.services.reconciler import index_reconcile
from signatures.models import Reference, SignatureEncoder, Signer
from simsite.files import private_storage
from simsite.stored_files import STORED_FOLDERS, orphan_files_sweep
from simsite.training_runs import TrainingRun
from tests import images
from tests.search.helpers import add_gallery_image

# transaction=True: the sweep takes content locks in transactions of its own, and a row is
# created with a file in another thread's transaction.
pytestmark = pytest.mark.django_db(transaction=True)

GRACE = 3600


@pytest.fixture(autouse=True)
def grace(settings):
    settings.ORPHAN_FILE_GRACE_SECONDS = GRACE


def _storage(name: str):
    """Signatures are in the private storage, everything else in the media storage."""
    return private_storage() if name.startswith("signatures/") else default_storage


def _saved(name: str, data: bytes = b"x", *, old: bool = True) -> str:
    """A file in its storage; ``old``: last written twice the grace period ago."""
    saved = _storage(name).save(name, ContentFile(data))
    if old:
        then = time.time() - 2 * GRACE
        os.utime(_storage(name).path(saved), (then, then))
    return saved


def _exists(name: str) -> bool:
    return _storage(name).exists(name)


def _sha(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def test_the_reconciler_deletes_old_files_no_row_names_and_nothing_else(media_root: Path):
    # Named by rows (and old): an image and its thumbnail, a signature, a trained model's files, an import.
    image = add_gallery_image(images.png_bytes(seed=1), "a.png")
    thumb = thumbnail_get(name=image.file.name, sha256=image.sha256)
    for name in (image.file.name, thumb):
        then = time.time() - 2 * GRACE
        os.utime(media_root / name, (then, then))
    signature = _saved(f"signatures/{_sha(1)[:2]}/{_sha(1)}.png")
    Reference.objects.create(signer=Signer.objects.create(name="S"), file=signature, sha256=_sha(1), width=1, height=1)
    weights, plot = _saved("models/embeddings/kept/weights.pt"), _saved("models/embeddings/kept/training.png")
    TrainedModel.objects.create(key="kept", base="efficientnet_lite0", source="catalog", status="succeeded",
                                weights=weights, plots={"training": plot})  # fmt: skip
    encoder_files = [_saved(f"models/signatures/kept/{name}") for name in ("weights.pt", "background.npy", "roc.png")]
    SignatureEncoder.objects.create(key="kept", status="succeeded", weights=encoder_files[0],
                                    background=encoder_files[1], plots={"roc": encoder_files[2]})  # fmt: skip
    csv = _saved("imports/kept.csv")
    ProductImport.objects.create(file=csv, filename="kept.csv")
    named = [image.file.name, thumb, signature, weights, plot, *encoder_files, csv]

    # Named by no row: old ones, in every kind of folder, and a new one (a request may be writing it).
    orphans = [_saved(image_name_for(sha256=_sha(2), extension="png")), _saved(thumbnail_name_for(sha256=_sha(3))),
               _saved(f"signatures/{_sha(4)[:2]}/{_sha(4)}.png"), _saved("models/embeddings/gone/weights.pt"),
               _saved("models/signatures/gone/training.png"), _saved("imports/gone.csv")]  # fmt: skip
    new = _saved(image_name_for(sha256=_sha(5), extension="png"), old=False)
    elsewhere = _saved("elsewhere/old.txt")  # in no folder the sweep knows

    report = index_reconcile()
    assert report["orphans"] == len(orphans) and report["errors"] == 0
    assert [name for name in orphans if _exists(name)] == []
    assert all(_exists(name) for name in [*named, new, elsewhere])
    assert index_reconcile()["orphans"] == 0


def test_the_sweep_looks_at_a_bounded_number_of_files_per_run_and_goes_on_from_there():
    imports = [folder for folder in STORED_FOLDERS if folder.folder == "imports"]
    for name in ("a1.csv", "a2.csv"):  # first in name order, and named by rows
        ProductImport.objects.create(file=_saved(f"imports/{name}"), filename=name)
    orphans = [_saved(f"imports/{name}") for name in ("b1.csv", "b2.csv", "b3.csv")]
    # Two files a run: the named pair, then two orphans, then the last one, then from the start.
    assert [orphan_files_sweep(folders=imports, limit=2) for _ in range(4)] == [0, 2, 1, 0]
    assert [name for name in orphans if default_storage.exists(name)] == []
    assert default_storage.exists("imports/a1.csv") and default_storage.exists("imports/a2.csv")


def test_an_old_file_a_row_is_being_created_with_is_not_swept():
    data = images.png_bytes(seed=3)
    intake = image_validate(data=data, filename="p.png")
    name = _saved(image_name_for(sha256=intake.sha256, extension=intake.extension), data)  # an orphan, until...
    created = threading.Event()

    def create() -> None:  # ...a product with the same bytes, its transaction open a while
        try:
            with transaction.atomic():
                product_create(sku="P", name="P", category="c", price="1.00", image=intake, notify=False)
                created.set()
                time.sleep(1.0)
        finally:
            created.set()
            connection.close()

    thread = threading.Thread(target=create)
    thread.start()
    created.wait(30)
    assert orphan_files_sweep() == 0  # waited for the content lock, then saw the new row
    thread.join(30)
    assert Product.objects.get(sku="P").image.name == name and default_storage.exists(name)


def test_every_column_that_names_a_stored_file_is_one_the_sweep_asks():
    """A file column, or one whose help says it holds storage names, left out of
    ``STORED_FOLDERS`` would have its files swept as orphans (as a signature encoder's
    background set once was)."""
    asked = {column for folder in STORED_FOLDERS for column in folder.columns}
    naming = {
        f"{model._meta.app_label}.{model.__name__}.{field.name}"
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, FileField) or "storage name" in str(getattr(field, "help_text", ""))
    }
    assert naming and naming <= asked, naming - asked


def test_a_training_run_saves_its_files_in_the_folder_the_sweep_asks_about_them():
    runs = [model for model in apps.get_models() if issubclass(model, TrainingRun)]
    assert {model.__name__ for model in runs} >= {"TrainedModel", "SignatureEncoder"}
    for model in runs:
        weights = f"{model._meta.app_label}.{model.__name__}.weights"
        (folder,) = [folder.folder for folder in STORED_FOLDERS if weights in folder.columns]
        assert model(key="k", pk=1).files_folder().startswith(f"{folder}/k/1-"), model
