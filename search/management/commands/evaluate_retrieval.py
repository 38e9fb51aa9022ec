from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from search.datasets import CATALOG, dataset_fingerprint, dataset_load, dataset_split
from search.evaluation import KS, near_duplicate_edits, near_duplicate_recall, retrieval_metrics
from search.models import TrainedModel
from search.selectors.embedding_models import model_spec_get
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Measure the retrieval quality of embedding models side by side on labelled images (the catalog by "
        "category, or a folder): precision@k, recall@k and mAP@10 by class (each image queries the others), "
        "near-duplicate recall@1 under common edits, a classifier's confusion matrix. By default on the held-out "
        "test split (by item, seeded; the split a model trained on this data never saw). Writes report.json and "
        "PNG plots."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", action="append", required=True, help="a model key (repeat for several)")
        parser.add_argument("--data", required=True, help="'catalog' or a folder of labelled images")
        parser.add_argument("--split", choices=["test", "all"], default="test")
        parser.add_argument("--seed", type=int, default=None,
                            help="the split's seed (default: a model's trained on this data, else 0)")  # fmt: skip
        parser.add_argument("--near-duplicates", type=int, default=50,
                            help="images whose edited copies are queried (0: skip)")  # fmt: skip
        parser.add_argument("--output", type=Path, default=None,
                            help="for report.json and plots (default: MEDIA_ROOT/evaluations/<time>)")  # fmt: skip
        parser.add_argument("--json", dest="as_json", action="store_true", help="print the report as JSON only")

    def handle(self, *args: Any, model: list[str], data: str, split: str, seed: int | None, near_duplicates: int,
               output: Path | None, as_json: bool, **options: Any) -> None:  # fmt: skip
        from search import training
        from search.embedders import get_embedder
        from search.plots import confusion_plot, precision_plot

        try:
            specs = [model_spec_get(key) for key in dict.fromkeys(model)]
            items = dataset_load(data if data == CATALOG else Path(data))
        except ServiceError as error:
            raise CommandError(error.message) from None
        fingerprint = dataset_fingerprint(items)
        trained = {row.key: row for row in TrainedModel.objects.filter(key__in=[spec.key for spec in specs])}
        if seed is None:
            seeds = [row.config.get("seed", 0) for row in trained.values() if row.fingerprint == fingerprint]
            seed = seeds[0] if seeds else 0
        chosen = dataset_split(items, seed=seed)["test"] if split == "test" else list(items)
        unseen = [key for key, row in trained.items() if row.fingerprint == fingerprint and split == "all"]
        if unseen:
            self.stderr.write(f"warning: {', '.join(unseen)} trained on this data; --split all includes its training "
                              "images")  # fmt: skip
        datas, labels = [], []
        for item in chosen:
            try:
                datas.append(item.read())
                labels.append(item.label)
            except OSError:
                continue
        self.stderr.write(f"{len(datas)} images, {len(set(labels))} classes ({split} split, seed {seed})")

        vectors, readable = {}, np.ones(len(datas), dtype=bool)
        for spec in specs:
            embedded = get_embedder(spec).embed_encoded(datas)
            readable &= np.array([not isinstance(vector, Exception) for vector in embedded])
            vectors[spec.key] = embedded
        keep = np.flatnonzero(readable)
        labels = [labels[i] for i in keep]
        datas = [datas[i] for i in keep]
        edited: list[bytes] = []
        originals, edit_names = [], []
        for index in np.linspace(0, len(datas) - 1, min(near_duplicates, len(datas)), dtype=int).tolist():
            for name, copy in near_duplicate_edits(datas[index]).items():
                edited.append(copy)
                originals.append(index)
                edit_names.append(name)

        output = output or Path(settings.MEDIA_ROOT) / "evaluations" / f"{timezone.now():%Y%m%d-%H%M%S}"
        output.mkdir(parents=True, exist_ok=True)
        report: dict[str, Any] = {"data": str(data), "split": split, "seed": seed, "images": len(datas),
                                  "fingerprint": fingerprint, "models": {}}  # fmt: skip
        for spec in specs:
            gallery = np.stack([vectors[spec.key][i] for i in keep])
            entry = retrieval_metrics(gallery, labels)
            embedder = get_embedder(spec)
            if edited:
                entry["near_duplicate_recall@1"] = near_duplicate_recall(
                    gallery, np.stack(embedder.embed_bytes(edited)), originals, edit_names
                )
            if spec.kind == "trained" and set(labels) <= set(spec.classes):
                matrix = training.confusion_matrix(embedder, gallery, labels, spec.classes)
                entry["accuracy"] = round(float(np.trace(matrix) / max(matrix.sum(), 1)), 4)
                entry["confusion"] = {"classes": list(spec.classes), "matrix": matrix.tolist()}
                (output / f"confusion-{spec.key}.png").write_bytes(confusion_plot(matrix, spec.classes, key=spec.key))
            report["models"][spec.key] = entry
        (output / "precision.png").write_bytes(precision_plot(report["models"], KS))
        (output / "report.json").write_text(json.dumps(report, indent=2))
        if as_json:
            self.stdout.write(json.dumps(report, indent=2))
            return
        self._table(report)
        self.stdout.write(f"report and plots: {output}")

    def _table(self, report: dict[str, Any]) -> None:
        models = report["models"]
        columns = [f"precision@{k}" for k in KS] + ["recall@10", "map@10"]
        header = " ".join(f"{c:>12}" for c in columns)
        self.stdout.write(f"{'model':<32} {'class':<14} {header} {'near-dup@1':>10}")
        for key, entry in models.items():
            rows = [("all", entry["overall"]), *entry["by_class"].items()]
            near = entry.get("near_duplicate_recall@1", {}).get("all")
            for label, values in rows:
                cells = " ".join(f"{values[c]:>12.4f}" for c in columns)
                tail = f" {near:>10.4f}" if label == "all" and near is not None else ""
                self.stdout.write(f"{key:<32} {label:<14} {cells}{tail}")
