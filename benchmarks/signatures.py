"""Signature verification: the trained encoder against the pretrained baseline, on writers
neither has seen.

    make bench-signatures                      # SVC2004 from ../shared/data, default training
    make bench-signatures ARGS="--epochs 6 --loss contrastive --forged-per-writer 0"

SVC2004's writers are split (seeded) into test writers (a third) and the rest, which the
trained encoder learns from (three quarters) and validates on (a quarter), exactly as
``train_signature_encoder`` does. Both encoders are then scored on the test writers with the
writer protocol (references drawn from a writer's genuine signatures; the other genuine ones,
the writer's skilled forgeries and other writers' genuine signatures questioned), over
several seeded draws pooled, aggregating the references by max and by mean. Prints a table
and the ratio of the trained encoder's skilled-forgery EER to the baseline's (goal <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, django_setup

SVC2004 = SHARED_DATA / "signatures-svc2004"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SVC2004)
    parser.add_argument("--layout", default="svc2004")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--loss", choices=["triplet", "contrastive"], default="triplet")
    parser.add_argument("--forged-per-writer", type=int, default=None, help="skilled forgeries per writer per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=5, help="seeded reference draws pooled")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data.name} is not in ../shared/data")
        return 0
    django_setup()

    from signatures import training
    from signatures.datasets import dataset_arrays, dataset_load, writer_split
    from signatures.encoders import get_encoder, network_embed
    from signatures.evaluation import protocol_report
    from signatures.registry import PRETRAINED
    from signatures.services import DEFAULT_EPOCHS, VALIDATION_FRACTION

    arrays, samples, skipped = dataset_arrays(dataset_load(root=args.data, layout=args.layout))
    arrays = np.stack(arrays)
    rest, test = writer_split(samples, fraction=1 / 3, seed=args.seed)
    train_writers, val_writers = writer_split([s for s in samples if s.writer in rest],
                                              fraction=VALIDATION_FRACTION, seed=args.seed)  # fmt: skip
    print(f"{len(samples)} signatures ({len(skipped)} unreadable); writers: {len(train_writers)} training, "
          f"{len(val_writers)} validation, {len(test)} test")  # fmt: skip

    def subset(writers: set[str]) -> tuple[np.ndarray, list[str], list[str]]:
        index = [i for i, s in enumerate(samples) if s.writer in writers]
        return arrays[index], [samples[i].writer for i in index], [samples[i].label for i in index]

    test_arrays, test_writers, test_labels = subset(test)
    seeds = range(args.draws)

    def report(vectors: np.ndarray) -> dict[str, dict]:
        figures = {}
        for aggregate in ("max", "mean"):
            results, _ = protocol_report(vectors, test_writers, test_labels, counts=[1, 5], aggregate=aggregate,
                                         threshold=0.5, seeds=seeds)  # fmt: skip
            figures[aggregate] = results
        return figures

    def pretrained(key: str) -> np.ndarray:
        encoder = get_encoder(PRETRAINED[key])
        return np.concatenate([encoder.embed(list(test_arrays[i : i + 32])) for i in range(0, len(test_arrays), 32)])

    started = time.perf_counter()
    rows = {
        "pretrained baseline (efficientnet_lite0_ink)": (report(pretrained("efficientnet_lite0_ink")), None),
        # The default, and the trained encoder's starting point.
        "pretrained efficientnet_lite0_strokes": (report(pretrained("efficientnet_lite0_strokes")), None),
    }
    print(f"pretrained encoders embedded in {time.perf_counter() - started:.0f} s")

    config = training.TrainingConfig(
        epochs=args.epochs or DEFAULT_EPOCHS, loss=args.loss, seed=args.seed,
        **({"forged_per_writer": args.forged_per_writer} if args.forged_per_writer is not None else {}),
    )  # fmt: skip
    result = training.train(*subset(train_writers), validation=subset(val_writers), config=config,
                            progress=lambda epoch, m: epoch and print(f"  epoch {epoch}: {m}", flush=True))  # fmt: skip
    net = training.trained_network(result)
    rows[f"trained ({config.loss}, {config.epochs} epochs)"] = (report(network_embed(net, test_arrays)), result.seconds)

    def eer(figures: dict, aggregate: str, count: int, kind: str) -> float:
        return figures[aggregate].get(f"{count}_references", {}).get(kind, {}).get("eer", float("nan"))

    print()
    header = ["encoder", "skilled 1 ref", "skilled 5 max", "skilled 5 mean", "random 1 ref", "random 5 max",
              "AUC skilled 1", "training s"]  # fmt: skip
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, (figures, seconds) in rows.items():
        auc = figures["max"]["1_references"]["skilled"]["auc"]
        cells = [eer(figures, "max", 1, "skilled"), eer(figures, "max", 5, "skilled"),
                 eer(figures, "mean", 5, "skilled"), eer(figures, "max", 1, "random"),
                 eer(figures, "max", 5, "random"), auc]  # fmt: skip
        print(" | ".join([name, *(f"{c:.3f}" for c in cells), f"{seconds:.0f}" if seconds else "-"]))
    (base, _), _, (trained, _) = rows.values()
    for count in (1, 5):
        ratio = eer(trained, "max", count, "skilled") / eer(base, "max", count, "skilled")
        print(f"skilled-forgery EER, {count} ref.: trained / baseline = {ratio:.2f} (goal <= 0.50)")
    if args.json:
        args.json.write_text(
            json.dumps({name: {"figures": f, "seconds": s} for name, (f, s) in rows.items()}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
