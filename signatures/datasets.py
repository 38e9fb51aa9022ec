"""Signature data sets on disk, in the layouts of the public sets (read, never copied).

- ``svc2004``: ``user<N>/genuine|forged/*`` (a ``labels.csv`` of ``path,writer,label`` is
  used when present), as in ../shared/data/signatures-svc2004/;
- ``folders``: ``<writer>/genuine|forged/*`` (what ``signatures.synthetic`` writes);
- ``cedar``: ``full_org/original_<writer>_<n>.png`` and ``full_forg/forgeries_<writer>_<n>.png``;
- ``bhsig``: ``<script>/<writer>/*-G-*.tif`` (genuine) and ``*-F-*.tif`` (forged).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from signatures.preprocessing import INPUT_SHAPE
from simsite.errors import ServiceError

LAYOUTS = ("svc2004", "folders", "cedar", "bhsig")
_IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


@dataclass(frozen=True)
class Sample:
    path: Path
    writer: str  # "<source>/<writer>" when loaded by ``sources_load``: writers of two sets never merge
    label: str  # "genuine" | "forged"
    source: str = ""


@dataclass(frozen=True)
class Source:
    """One folder of signatures in one layout (``train_signature_encoder --data LAYOUT:DIR``)."""

    layout: str
    root: Path

    def as_dict(self) -> dict[str, str]:
        return {"layout": self.layout, "data": str(self.root)}


def source_parse(text: str, *, layout: str | None = None) -> Source:
    """``LAYOUT:DIR``, or ``DIR`` with the layout given apart (the older ``--data DIR --layout L``)."""
    prefix, colon, rest = text.partition(":")
    if colon and prefix in LAYOUTS:
        if layout is not None and layout != prefix:
            raise ServiceError("invalid_layout", f"'{text}' names the {prefix} layout but --layout says {layout}.",
                               field="layout")  # fmt: skip
        return Source(prefix, Path(rest))
    if layout is None:
        raise ServiceError("invalid_layout", f"Name the layout of '{Path(text).name}': LAYOUT:DIR, LAYOUT one of "
                           f"{', '.join(LAYOUTS)}.", field="layout")  # fmt: skip
    if layout not in LAYOUTS:
        raise ServiceError("invalid_layout", f"layout must be one of {', '.join(LAYOUTS)}.", field="layout")
    return Source(layout, Path(text))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix.lower() in _IMAGES and p.is_file())


def _svc2004(root: Path) -> list[Sample]:
    labels = root / "labels.csv"
    if labels.is_file():
        with labels.open(newline="") as handle:
            return [
                Sample(root / row["path"], str(row["writer"]), row["label"].strip()) for row in csv.DictReader(handle)
            ]
    samples = []
    for user in sorted(root.glob("user*")):
        writer = user.name.removeprefix("user")
        samples += [Sample(p, writer, label) for label in ("genuine", "forged") for p in _images(user / label)]
    return samples


def _folders(root: Path) -> list[Sample]:
    return [
        Sample(p, writer.name, label)
        for writer in sorted(d for d in root.iterdir() if d.is_dir())
        for label in ("genuine", "forged")
        for p in _images(writer / label)
    ]


def _cedar(root: Path) -> list[Sample]:
    samples = []
    for folder, label, prefix in (("full_org", "genuine", "original"), ("full_forg", "forged", "forgeries")):
        for path in _images(root / folder):
            match = re.match(rf"{prefix}_(\d+)_\d+", path.stem)
            if match:
                samples.append(Sample(path, match.group(1), label))
    return samples


def _bhsig(root: Path) -> list[Sample]:
    samples = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in _IMAGES):
        match = re.search(r"-([GF])-", path.name)
        if match:
            writer = f"{path.parent.parent.name}/{path.parent.name}"
            samples.append(Sample(path, writer, "genuine" if match.group(1) == "G" else "forged"))
    return samples


def dataset_load(*, root: Path, layout: str) -> list[Sample]:
    """Every labelled signature under ``root``; refuses an unknown layout or an empty set."""
    loaders = {"svc2004": _svc2004, "folders": _folders, "cedar": _cedar, "bhsig": _bhsig}
    if layout not in loaders:
        raise ServiceError("invalid_layout", f"layout must be one of {', '.join(LAYOUTS)}.", field="layout")
    if not root.is_dir():
        raise ServiceError("not_found", f"{root.name or root} is not a folder.", field="data")
    samples = [sample for sample in loaders[layout](root) if sample.path.is_file()]
    if not samples:
        raise ServiceError("empty_dataset", f"No signatures found under {root.name or root} in the {layout} layout.",
                           field="data")  # fmt: skip
    return samples


def source_labels(sources: list[Source]) -> list[str]:
    """A short label per source, its folder's name, numbered where two folders share a name."""
    labels = []
    for source in sources:
        label = source.root.name or "data"
        labels.append(label if label not in labels else f"{label}-{len(labels) + 1}")
    return labels


def sources_load(sources: list[Source]) -> list[Sample]:
    """Every labelled signature of every source; a writer is named ``<source label>/<writer>``,
    so that writer "1" of one set and writer "1" of another stay two people."""
    if not sources:
        raise ServiceError("invalid", "data: name at least one folder of signatures.", field="data")
    samples = []
    for source, label in zip(sources, source_labels(sources), strict=True):
        samples += [Sample(s.path, f"{label}/{s.writer}", s.label, label)
                    for s in dataset_load(root=source.root, layout=source.layout)]  # fmt: skip
    return samples


def sample_bytes(sample: Sample) -> bytes:
    """The sample as PNG bytes (data sets ship TIFFs, which uploads do not accept)."""
    with Image.open(sample.path) as picture:
        buffer = io.BytesIO()
        picture.convert("L").save(buffer, format="PNG")
        return buffer.getvalue()


def writer_split(samples: list[Sample], *, fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Writers split in two (seeded): ``fraction`` of each source's writers in the second set."""
    first: set[str] = set()
    second: set[str] = set()
    for source in sorted({sample.source for sample in samples}):  # drawn from every source
        writers = sorted({sample.writer for sample in samples if sample.source == source})
        order = np.random.default_rng(seed).permutation(len(writers))
        cut = max(1, round(len(writers) * fraction)) if len(writers) > 1 else 0
        second |= {writers[i] for i in order[:cut]}
        first |= set(writers) - second
    return first, second


def dataset_fingerprint(samples: list[Sample]) -> str:
    """A hash of the files' names, sizes and labels: which data a model saw."""
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: str(s.path)):
        digest.update(f"{sample.path.name}:{sample.path.stat().st_size}:{sample.writer}:{sample.label}\n".encode())
    return digest.hexdigest()


def dataset_arrays(
    samples: Iterable[Sample], *, shape: tuple[int, int] = INPUT_SHAPE
) -> tuple[list[np.ndarray], list[Sample], list[tuple[Sample, str]]]:
    """Each sample preprocessed as the API would (``signature_preprocess``), framed at ``shape``
    (an encoder's ``input_shape``): the arrays, the samples kept, and those refused with the
    reason (a blank page, an unreadable file)."""
    from signatures.preprocessing import signature_preprocess

    arrays, kept, skipped = [], [], []
    for sample in samples:
        try:
            arrays.append(signature_preprocess(sample_bytes(sample)).at(shape))
            kept.append(sample)
        except ServiceError as error:
            skipped.append((sample, error.message))
        except OSError as error:
            skipped.append((sample, f"unreadable image ({type(error).__name__})"))
    return arrays, kept, skipped
