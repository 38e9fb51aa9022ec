"""Labelled images to train and evaluate embedding models on: the catalog's products by
category, or a folder (``labels.csv`` with ``path,class``, else a sub-folder per class).

No torch here; ``search.training`` and ``search.evaluation`` read the bytes.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.core.files.storage import default_storage

from simsite.errors import ServiceError
from simsite.files import resolve_under_root

CATALOG = "catalog"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SPLITS = ("train", "val", "test")
# By item and per class: 70% to learn from, 15% to stop early on, 15% held out for evaluation.
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
MIN_PER_CLASS = 3  # one item for each split


@dataclass(frozen=True)
class LabelledImage:
    name: str  # what identifies the item within the data (relative path, or "product <id>")
    label: str
    read: Callable[[], bytes]


def _read_file(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _read_stored(name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        with default_storage.open(name, "rb") as handle:
            return handle.read()

    return read


def _from_catalog() -> list[LabelledImage]:
    from catalog.models import Product

    rows = Product.objects.exclude(category="").order_by("pk").values_list("pk", "category", "image")
    return [LabelledImage(f"product {pk}", category, _read_stored(image)) for pk, category, image in rows]


def _from_labels_csv(root: Path, labels: Path) -> list[LabelledImage]:
    items = []
    with labels.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "class"} <= set(reader.fieldnames):
            raise ServiceError("invalid_labels", f"{labels.name} needs the columns path,class; it has "
                               f"{','.join(reader.fieldnames or [])}.", field="data")  # fmt: skip
        for row in reader:
            path = resolve_under_root(root, row["path"] or "")
            if not row["class"] or path is None or not path.is_file():
                continue  # a row naming nothing readable inside the folder is left out
            items.append(LabelledImage(row["path"], row["class"], _read_file(path)))
    return items


def _from_folders(root: Path) -> list[LabelledImage]:
    items = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".")):
        for path in sorted(folder.rglob("*")):
            # A symlink that leads out of the folder is not training data (resolve_under_root).
            inside = resolve_under_root(root, path.relative_to(root)) is not None
            if path.suffix.lower() in IMAGE_SUFFIXES and inside and path.is_file():
                items.append(LabelledImage(str(path.relative_to(root)), folder.name, _read_file(path)))
    return items


def dataset_load(source: str | Path) -> list[LabelledImage]:
    """The labelled images of ``source``: "catalog", or a folder."""
    if str(source) == CATALOG:
        items = _from_catalog()
    else:
        root = Path(source).resolve()
        if not root.is_dir():
            raise ServiceError("data_not_found", f"No folder {Path(source).name or source}.", field="data",
                               status_code=404)  # fmt: skip
        labels = root / "labels.csv"
        items = _from_labels_csv(root, labels) if labels.is_file() else _from_folders(root)
    classes = {item.label for item in items}
    if len(classes) < 2:
        where = "the catalog" if str(source) == CATALOG else Path(source).name
        raise ServiceError("too_few_classes", f"Training needs images of at least 2 classes; {where} has "
                           f"{len(items)} images in {len(classes)}.", field="data")  # fmt: skip
    return items


def dataset_fingerprint(items: Sequence[LabelledImage]) -> str:
    """Which images with which labels (not their bytes: cheap to recompute)."""
    digest = hashlib.sha256()
    for name, label in sorted((item.name, item.label) for item in items):
        digest.update(f"{name}\0{label}\n".encode())
    return digest.hexdigest()


def dataset_split(items: Sequence[LabelledImage], *, seed: int = 0) -> dict[str, list[LabelledImage]]:
    """Train/val/test by item, stratified by class and seeded: every class with at least
    ``MIN_PER_CLASS`` items has at least one in each split; smaller classes are left out."""
    by_class: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in sorted(items, key=lambda item: item.name):
        by_class[item.label].append(item)
    rng = np.random.default_rng(seed)
    splits: dict[str, list[LabelledImage]] = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < MIN_PER_CLASS:
            continue
        order = rng.permutation(len(members))
        val = max(1, round(len(members) * SPLIT_FRACTIONS[1]))
        test = max(1, round(len(members) * SPLIT_FRACTIONS[2]))
        shuffled = [members[i] for i in order]
        splits["test"] += shuffled[:test]
        splits["val"] += shuffled[test : test + val]
        splits["train"] += shuffled[test + val :]
    return splits
