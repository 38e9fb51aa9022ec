"""The Fashion-MNIST demo import: IDX files read, a balanced catalog created, idempotent."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from catalog.fashion_mnist import CLASSES, DEFAULT_PATH, balanced_indices, fashion_mnist_load
from catalog.models import Product

pytestmark = pytest.mark.django_db


def _write_idx(folder, stem: str, images: np.ndarray, labels: np.ndarray) -> None:
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in images.shape)
    with gzip.open(folder / f"{stem}-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(header + images.tobytes())
    header = (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    with gzip.open(folder / f"{stem}-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(header + labels.tobytes())


@pytest.fixture
def idx_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    labels = np.arange(40, dtype=np.uint8) % 10
    _write_idx(tmp_path, "train", images, labels)
    _write_idx(tmp_path, "t10k", images[:20], labels[:20])
    return tmp_path


def test_import_is_balanced_and_can_be_run_again(idx_folder, capsys):
    call_command("import_fashion_mnist", "--limit", "20", "--path", str(idx_folder), verbosity=0)
    assert Product.objects.count() == 20
    assert set(Product.objects.values_list("category", flat=True)) == set(CLASSES)
    product = Product.objects.get(sku="fmnist-train-00003")
    assert product.category == "Dress" and product.name == "Dress #3" and (product.width, product.height) == (28, 28)
    assert product.price > 0
    call_command("import_fashion_mnist", "--limit", "30", "--path", str(idx_folder), verbosity=0)
    assert Product.objects.count() == 30
    assert "created 10 products, skipped 20" in capsys.readouterr().out


def test_missing_or_wrong_files_are_refused(tmp_path, idx_folder):
    with pytest.raises(CommandError, match="dataset-fashion-mnist"):
        call_command("import_fashion_mnist", "--path", str(tmp_path / "nothing"), verbosity=0)
    (idx_folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 20))
    with pytest.raises(CommandError, match="not an IDX file"):
        call_command("import_fashion_mnist", "--split", "test", "--path", str(idx_folder), verbosity=0)
    assert not Product.objects.exists()


def test_balanced_indices_take_classes_in_turn():
    labels = np.array([0, 0, 0, 1, 2, 1, 0])
    assert balanced_indices(labels, 4) == [0, 1, 3, 4]


@pytest.mark.skipif(not DEFAULT_PATH.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_real_files_read():
    images, labels = fashion_mnist_load(split="test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10
