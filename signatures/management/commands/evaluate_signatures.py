from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from signatures.calibration import WRITER_DEPENDENT, protocol_scores
from signatures.datasets import LAYOUTS, dataset_arrays, dataset_fingerprint, source_parse, sources_load
from signatures.evaluation import AGGREGATES, protocol_report, rates
from signatures.plots import evaluation_plots, training_plot
from signatures.selectors import encoder_background, encoder_spec
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Evaluate a signature encoder on writers it was not trained on: EER, ROC AUC, FAR/FRR at its stored "
        "threshold, FAR at FRR=5% and accuracy, for skilled and random forgeries, with 1, 3 and 5 references; "
        "JSON on stdout (or --out) and PNG plots."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--model", help="encoder key (default: the active one)")
        parser.add_argument("--data", action="append", required=True, metavar="LAYOUT:DIR",
                            help="a folder of signatures and its layout; repeat it for several sources")  # fmt: skip
        parser.add_argument("--layout", choices=LAYOUTS, help="the layout of each --data given as a bare DIR")
        parser.add_argument("--references", default="1,3,5", help="comma-separated reference counts")
        parser.add_argument("--aggregate", choices=sorted(AGGREGATES), default="max")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--out", type=Path, help="folder for metrics.json and the plots")

    def handle(self, *args: Any, model: str | None, data: list[str] | str, layout: str | None, references: str,
               aggregate: str, seed: int, out: Path | None, **options: Any) -> None:  # fmt: skip
        from signatures.encoders import get_encoder

        out = Path(out) if out is not None else None
        try:
            spec = encoder_spec(model)
            sources = [source_parse(text, layout=layout) for text in ([data] if isinstance(data, str) else data)]
            samples = sources_load(sources)
            counts = [int(n) for n in references.split(",") if n.strip()]
            if not counts or min(counts) < 1:
                raise ValueError(references)
        except ServiceError as error:
            raise CommandError(error.message) from None
        except ValueError:
            raise CommandError("--references must be comma-separated numbers of 1 or more, e.g. 1,3,5") from None
        trained_on = set(spec.metrics.get("training_writers", []))
        for label, seen in spec.metrics.get("sources", {}).items():
            mine = [sample for sample in samples if sample.source == label]
            if mine and seen.get("fingerprint") == dataset_fingerprint(mine):
                # A source the model was trained on: evaluate on its held-out writers only.
                samples = [sample for sample in samples if sample.source != label or sample.writer not in trained_on]
                self.stderr.write(f"{spec.key} was trained on {label}: evaluating its held-out writers only")
        encoder = get_encoder(spec)
        arrays, kept, skipped = dataset_arrays(tqdm(samples, unit="img", file=sys.stderr,
                                                    disable=options.get("verbosity", 1) == 0),
                                               shape=encoder.input_shape)  # fmt: skip
        for sample, reason in skipped:
            self.stderr.write(f"skipped {sample.path.name}: {reason}")
        if not kept:
            raise CommandError("No signature in the data set could be read.")
        vectors = np.concatenate([encoder.embed(arrays[i : i + 32]) for i in range(0, len(arrays), 32)])
        writers = [sample.writer for sample in kept]
        labels = [sample.label for sample in kept]
        report: dict[str, object] = {
            "model": spec.key, "data": [f"{source.layout}:{source.root.name}" for source in sources],
            "writers": len(set(writers)),
            "signatures": len(kept), "threshold": spec.threshold,
            "thresholds": spec.thresholds, "aggregate": aggregate, "results": {},
        }  # fmt: skip
        report["results"], curves = protocol_report(
            spec.similarity_part(vectors),
            writers,
            labels,
            counts=counts,
            aggregate=aggregate,
            threshold=spec.threshold_for,
            seeds=[seed],
        )
        background = encoder_background(spec)
        if background is not None:  # as verify scores with enough references: each writer's own model
            report["writer_dependent"] = {}
            for count in counts:
                scores = protocol_scores(vectors, writers, labels, references=count, mode=WRITER_DEPENDENT,
                                         background=background, similarity_dim=spec.similarity_dim,
                                         gamma_scale=spec.writer_gamma_scale, seeds=[seed])  # fmt: skip
                report["writer_dependent"][f"{count}_references"] = {
                    kind: {"eer": round(rates(scores["genuine"], scores[kind]).eer, 4)}
                    for kind in ("skilled", "random") if scores[kind] and scores["genuine"]
                }  # fmt: skip
        text = json.dumps(report, indent=2)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(text)
            for name, png in evaluation_plots(curves, spec.threshold_for, spec.key).items():
                (out / f"{name}.png").write_bytes(png)
            if spec.kind == "trained":
                (out / "training.png").write_bytes(training_plot(
                    spec.metrics["curves"], best_epoch=spec.metrics["best_epoch"], key=spec.key))  # fmt: skip
            self.stderr.write(f"metrics and plots written to {out}")
        self.stdout.write(text)
