from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from signatures.datasets import LAYOUTS, dataset_load, sample_bytes
from signatures.evaluation import AGGREGATES, at_threshold, rates, roc, writer_protocol
from signatures.preprocessing import signature_preprocess
from signatures.selectors import encoder_spec
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Evaluate a signature encoder on writers it was not trained on: EER, ROC AUC, FAR/FRR at its stored "
        "threshold, FAR at FRR=5% and accuracy, for skilled and random forgeries, with 1, 3 and 5 references; "
        "JSON on stdout (or --out) and PNG plots."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", help="encoder key (default: the active one)")
        parser.add_argument("--data", type=Path, required=True)
        parser.add_argument("--layout", choices=LAYOUTS, required=True)
        parser.add_argument("--references", default="1,3,5", help="comma-separated reference counts")
        parser.add_argument("--aggregate", choices=sorted(AGGREGATES), default="max")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", type=Path, help="folder for metrics.json and the plots")

    def handle(self, *args: Any, model: str | None, data: Path, layout: str, references: str, aggregate: str,
               seed: int, out: Path | None, **options: Any) -> None:  # fmt: skip
        from signatures.encoders import get_encoder

        try:
            spec = encoder_spec(model)
            samples = dataset_load(root=data, layout=layout)
            counts = [int(n) for n in references.split(",") if n.strip()]
        except ServiceError as error:
            raise CommandError(error.message) from None
        except ValueError:
            raise CommandError("--references must be comma-separated numbers, e.g. 1,3,5") from None
        encoder = get_encoder(spec.key)
        arrays, kept = [], []
        for sample in tqdm(samples, unit="img", file=sys.stderr, disable=options.get("verbosity", 1) == 0):
            try:
                arrays.append(signature_preprocess(sample_bytes(sample)).array)
                kept.append(sample)
            except ServiceError as error:
                self.stderr.write(f"skipped {sample.path.name}: {error.message}")
        vectors = np.concatenate([encoder.embed(arrays[i : i + 32]) for i in range(0, len(arrays), 32)])
        writers = [sample.writer for sample in kept]
        labels = [sample.label for sample in kept]
        report: dict[str, object] = {
            "model": spec.key, "data": str(data), "layout": layout, "writers": len(set(writers)),
            "signatures": len(kept), "threshold": spec.threshold, "aggregate": aggregate, "results": {},
        }  # fmt: skip
        curves = {}
        for count in counts:
            scores = writer_protocol(vectors, writers, labels, references=count, aggregate=AGGREGATES[aggregate],
                                     seed=seed)  # fmt: skip
            entry = {}
            for kind, negatives in (("skilled", scores.skilled), ("random", scores.random)):
                if not negatives or not scores.genuine:
                    continue
                measured = rates(scores.genuine, negatives)
                entry[kind] = {
                    "eer": round(measured.eer, 4), "eer_threshold": round(measured.eer_threshold, 4),
                    "auc": round(measured.auc, 4), "far_at_frr_5": round(measured.far_at_frr5, 4),
                    **{k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in at_threshold(scores.genuine, negatives, spec.threshold).items()},
                }  # fmt: skip
                curves[(count, kind)] = (scores.genuine, negatives)
            report["results"][f"{count}_references"] = entry
        text = json.dumps(report, indent=2)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(text)
            _plots(out, curves, spec.threshold, spec.key)
            self.stderr.write(f"metrics and plots written to {out}")
        self.stdout.write(text)


def _plots(out: Path, curves: dict, threshold: float, key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 5))
    for (count, kind), (genuine, negatives) in sorted(curves.items()):
        _, far, frr = roc(np.asarray(genuine), np.asarray(negatives))
        axis.plot(far, 1 - frr, label=f"{kind}, {count} ref.")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.set(xlabel="false acceptance rate", ylabel="true acceptance rate", title=f"ROC: {key}")
    axis.legend()
    figure.savefig(out / "roc.png", dpi=110, bbox_inches="tight")
    plt.close(figure)

    largest = max(count for count, _ in curves)
    figure, axis = plt.subplots(figsize=(6, 4))
    genuine = curves.get((largest, "skilled"), curves.get((largest, "random")))[0]
    axis.hist(genuine, bins=40, alpha=0.6, label="genuine", density=True)
    for kind in ("skilled", "random"):
        if (largest, kind) in curves:
            axis.hist(curves[(largest, kind)][1], bins=40, alpha=0.5, label=f"{kind} forgeries", density=True)
    axis.axvline(threshold, color="black", linestyle="--", label="threshold")
    axis.set(xlabel="score", title=f"Scores with {largest} references")
    axis.legend()
    figure.savefig(out / "scores.png", dpi=110, bbox_inches="tight")
    plt.close(figure)

    if (largest, "skilled") in curves:
        genuine, forged = (np.asarray(v) for v in curves[(largest, "skilled")])
        counts = at_threshold(genuine, forged, threshold)
        matrix = np.array([[counts["tp"], counts["fn"]], [counts["fp"], counts["tn"]]])
        figure, axis = plt.subplots(figsize=(4, 4))
        axis.imshow(matrix, cmap="Blues")
        for (row, col), value in np.ndenumerate(matrix):
            axis.text(col, row, str(value), ha="center", va="center")
        axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["genuine", "forged"], yticklabels=["genuine", "forged"],
                 xlabel="decision", ylabel="truth", title="Skilled forgeries at the threshold")  # fmt: skip
        figure.savefig(out / "confusion.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
