"""Models trained here: fine-tuned EfficientNet-Lite0 against the pretrained one, retrieval on
images neither has learnt from.

    make bench-training                                   # vehicles and Fashion-MNIST
    make bench-training ARGS="--only vehicles --epochs 8"
    make bench-training ARGS="--fmnist-train 12000 --fmnist-test 10000"

vehicles (../shared/data/vehicles): split by item, stratified and seeded, exactly as
``train_embedding_model`` splits it (70% train, 15% validation, 15% test); both models are
measured on the test split. Fashion-MNIST (Debian's dataset-fashion-mnist): the fine-tune
learns from a balanced subset of the official training split (itself split 85/15 into
train and validation), both models are measured on a balanced subset of the official test
split. Retrieval: each test image queries the other test images; precision@10 and mAP@10 by
class. Prints a table, the retrieval error (1 - precision@10) of the fine-tune relative to
the pretrained model (goal: cut by >= 40%, i.e. a ratio <= 0.60) and training images/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED_DATA, django_setup

VEHICLES = SHARED_DATA / "vehicles"


def _fashion_mnist(train_count: int, test_count: int, seed: int) -> tuple[dict, list, list] | None:
    from catalog.fashion_mnist import CLASSES, DEFAULT_PATH, balanced_indices, fashion_mnist_load, png_bytes
    from search.datasets import LabelledImage, dataset_split

    if not DEFAULT_PATH.is_dir():
        return None
    images, labels = fashion_mnist_load(split="train")
    items = [LabelledImage(f"train/{i}", CLASSES[labels[i]], (lambda data: lambda: data)(png_bytes(images[i])))
             for i in balanced_indices(labels, train_count)]  # fmt: skip
    # No test images among what it learns from: train/val from the training split only.
    splits = dataset_split(items, seed=seed)
    splits = {"train": splits["train"] + splits["test"], "val": splits["val"]}
    test_images, test_labels = fashion_mnist_load(split="test")
    chosen = balanced_indices(test_labels, test_count)
    return splits, [png_bytes(test_images[i]) for i in chosen], [CLASSES[test_labels[i]] for i in chosen]


def _vehicles(seed: int) -> tuple[dict, list, list] | None:
    from search.datasets import dataset_load, dataset_split

    if not (VEHICLES / "labels.csv").is_file():
        return None
    splits = dataset_split(dataset_load(VEHICLES), seed=seed)
    return splits, [item.read() for item in splits["test"]], [item.label for item in splits["test"]]


def _measure(embed: Callable[[list[bytes]], list], datas: list[bytes], labels: list[str]) -> dict:
    from search.evaluation import retrieval_metrics

    return retrieval_metrics(np.stack(embed(datas)), labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["vehicles", "fashion-mnist"], action="append")
    parser.add_argument("--epochs", type=int, default=None, help="at most (default: the command's)")
    parser.add_argument("--fmnist-train", type=int, default=6000, help="training-split images to learn from")
    parser.add_argument("--fmnist-test", type=int, default=2000, help="official test-split images measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    django_setup()

    import torch

    from search import training
    from search.embedders import get_embedder
    from search.registry import ModelSpec, model_spec

    config = training.TrainingConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
    base = model_spec(config.base)
    loaders = {"vehicles": lambda: _vehicles(args.seed),
               "fashion-mnist": lambda: _fashion_mnist(args.fmnist_train, args.fmnist_test, args.seed)}  # fmt: skip
    device = training.embedding_device()
    print(f"device: {device} ({torch.get_num_threads()} threads); base {config.base}, at most {config.epochs} epochs")
    figures: dict[str, dict] = {}
    for name in args.only or list(loaders):
        loaded = loaders[name]()
        if loaded is None:
            print(f"{name}: skipped (data not on this machine)")
            continue
        splits, test_datas, test_labels = loaded
        print(f"\n{name}: train {len(splits['train'])}, validation {len(splits['val'])}, test {len(test_datas)}")
        started = time.monotonic()
        result = training.train(
            [item.read for item in splits["train"]], [item.label for item in splits["train"]],
            [item.read for item in splits["val"]], [item.label for item in splits["val"]], config=config,
        )  # fmt: skip
        seconds = time.monotonic() - started
        spec = ModelSpec(key=f"bench_{name}", dim=config.dim, architecture=base.architecture, weights="",
                         description="", kind="trained", base=config.base, classes=tuple(result.classes),
                         input_size=result.config.input_size)  # fmt: skip
        tuned = _measure(training.trained_embedder(result, spec).embed_encoded, test_datas, test_labels)
        pretrained = _measure(get_embedder(config.base).embed_encoded, test_datas, test_labels)
        print(f"input {result.config.input_size}x{result.config.input_size}; "
              f"training: {seconds:.0f} s in all, best epoch {result.best_epoch} of {len(result.curves['loss'])}, "
              f"{result.images_per_second:.1f} images/s in the epochs (trunk cached)")  # fmt: skip
        print(f"{'class':<14} {'P@10 pre':>9} {'P@10 tuned':>10} {'mAP@10 pre':>10} {'mAP@10 tuned':>12}")
        rows = [("all", pretrained["overall"], tuned["overall"])]
        rows += [(label, pretrained["by_class"][label], tuned["by_class"][label]) for label in tuned["by_class"]]
        for label, before, after in rows:
            print(f"{label:<14} {before['precision@10']:>9.4f} {after['precision@10']:>10.4f} "
                  f"{before['map@10']:>10.4f} {after['map@10']:>12.4f}")  # fmt: skip
        error_before = 1 - pretrained["overall"]["precision@10"]
        error_after = 1 - tuned["overall"]["precision@10"]
        ratio = error_after / error_before if error_before else float("nan")
        verdict = "goal met" if ratio <= 0.60 else "goal NOT met"
        print(f"retrieval error 1 - P@10: {error_before:.4f} -> {error_after:.4f}, ratio {ratio:.2f} ({verdict}: "
              f"<= 0.60, a cut of >= 40%)")  # fmt: skip
        figures[name] = {"seconds": round(seconds, 1), "best_epoch": result.best_epoch,
                         "images_per_second": round(result.images_per_second, 1), "error_ratio": round(ratio, 3),
                         "pretrained": pretrained, "fine_tuned": tuned, "device": str(device)}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
