"""Fashion-MNIST (Zalando's 70,000 product photos, 28x28 grey, 10 classes), as Debian's
``dataset-fashion-mnist`` package installs it: the demo catalog anyone can import."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image

from simsite.errors import ServiceError

DEFAULT_PATH = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {"train": "train", "test": "t10k"}  # the official split


def _idx(path: Path, magic: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if int.from_bytes(data[:4], "big") != magic:
        raise ServiceError("invalid_dataset", f"{path.name} is not an IDX file of the expected kind.")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise ServiceError(
        "dataset_missing",
        f"No {stem}(.gz) in {folder}: install Debian's dataset-fashion-mnist package "
        "(apt install dataset-fashion-mnist) or name the folder with --path.",
        status_code=404,
    )


def fashion_mnist_load(*, split: str = "train", folder: Path = DEFAULT_PATH) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) class indices) of the official split."""
    stem = FILES[split]
    images = _idx(_find(folder, f"{stem}-images-idx3-ubyte"), 2051)
    labels = _idx(_find(folder, f"{stem}-labels-idx1-ubyte"), 2049)
    return images, labels


def balanced_indices(labels: np.ndarray, limit: int) -> list[int]:
    """The first ``limit`` images of the split taken class by class in turn (balanced)."""
    per_class = [np.flatnonzero(labels == c).tolist() for c in range(len(CLASSES))]
    chosen: list[int] = []
    position = 0
    while len(chosen) < limit and any(position < len(members) for members in per_class):
        chosen += [members[position] for members in per_class if position < len(members)][: limit - len(chosen)]
        position += 1
    return sorted(chosen)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, "PNG")
    return buffer.getvalue()
