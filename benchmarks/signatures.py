"""Signature verification on writers no encoder has seen: per source, per reference count,
writer-independent against writer-dependent, and leave-one-source-out.

    make bench-signatures                                      # the three sets of ../shared/data
    make bench-signatures ARGS="--minutes 20 --counts 1,5"     # a shorter training
    make bench-signatures ARGS="--leave-one-source-out"        # also: train on two sources, test on the third
    make bench-signatures ARGS="--epochs 0 --leave-one-source-out"   # the network before fine-tuning: minutes
    make bench-signatures ARGS="--data folders:/srv/ours --data cedar:/srv/cedar"

Each source's writers are split (seeded) into test writers (a third) and the rest; the
encoder trains on the rest of every source at once, as ``train_signature_encoder`` does
(validation writers drawn from each source), within a time budget. It is then scored on
each source's test writers with the writer protocol - references drawn from a writer's
genuine signatures; the other genuine ones, the writer's skilled forgeries and other
writers' genuine signatures questioned; three seeded draws pooled - once as verify scores
with the best similarity (writer-independent), once with each writer's own model
(writer-dependent, 5 references or more; negatives: the encoder's background set and the
other test writers' references). The pretrained default encoder is the baseline, measured in
the same run. Prints skilled and random EER and the FAR of skilled forgeries at FRR = 5%.
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

DEFAULT_DATA = [
    f"svc2004:{SHARED_DATA / 'signatures-svc2004'}",
    f"cedar:{SHARED_DATA / 'signatures-cedar'}",
    f"folders:{SHARED_DATA / 'signatures-dutch'}",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", metavar="LAYOUT:DIR", help="default: the three sets of ../shared")
    parser.add_argument("--counts", default="1,3,5,10", help="reference counts")
    parser.add_argument("--epochs", type=int, default=None, help="0: the network before any epoch (no fine-tuning)")
    parser.add_argument("--minutes", type=float, default=25.0, help="time budget of each training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--leave-one-source-out", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    django_setup()

    from signatures.datasets import dataset_arrays, source_parse, sources_load, writer_split
    from signatures.training import TrainingConfig

    sources = [source_parse(text) for text in (args.data or DEFAULT_DATA)]
    sources = [source for source in sources if source.root.is_dir()]
    if not sources:
        print("skipped: no signature set found (../shared/data is absent)")
        return 0
    counts = [int(n) for n in args.counts.split(",")]
    started = time.perf_counter()
    arrays, samples, skipped = dataset_arrays(sources_load(sources))  # as the pretrained encoders see them
    arrays = np.stack(arrays)
    detail, detail_samples, _ = dataset_arrays(sources_load(sources), shape=TrainingConfig.input_shape)
    if detail_samples != samples:
        raise SystemExit("the signatures read differently the second time: is the data changing?")
    detail = np.stack(detail)  # as encoders trained here see them
    writers = np.array([s.writer for s in samples])
    labels = np.array([s.label for s in samples])
    origin = np.array([s.source for s in samples])
    names = list(dict.fromkeys(origin.tolist()))
    print(f"{len(samples)} signatures of {len(set(writers.tolist()))} writers from {', '.join(names)} "
          f"({len(skipped)} refused), preprocessed in {time.perf_counter() - started:.0f} s")  # fmt: skip
    rest, test = writer_split(samples, fraction=1 / 3, seed=args.seed)

    figures: dict[str, dict] = {}
    baseline = _pretrained_vectors(arrays)
    for name in names:
        mask = (origin == name) & np.isin(writers, list(test))
        figures[f"{name} · pretrained default"] = _measure(baseline, writers, labels, mask, None, counts, 0)
    trained, seconds, background, similarity_dim = _train(detail, writers, labels, samples, rest, args)
    print(f"trained on {len(rest)} writers of every source in {seconds:.0f} s")
    for name in names:
        mask = (origin == name) & np.isin(writers, list(test))
        figures[f"{name} · trained on all sources"] = _measure(
            trained, writers, labels, mask, background, counts, similarity_dim
        )
    if args.leave_one_source_out and len(names) > 1:
        for held_out in names:
            others = {w for w in rest if not w.startswith(f"{held_out}/")}
            vectors, seconds, background, similarity_dim = _train(detail, writers, labels, samples, others, args)
            print(f"trained without {held_out} in {seconds:.0f} s")
            mask = origin == held_out  # every writer of the source it never saw
            figures[f"{held_out} · trained on the others (LOSO)"] = _measure(
                vectors, writers, labels, mask, background, counts, similarity_dim
            )
    _print_table(figures, counts)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def _pretrained_vectors(arrays: np.ndarray) -> np.ndarray:
    from signatures.encoders import get_encoder
    from signatures.registry import PRETRAINED

    encoder = get_encoder(PRETRAINED["efficientnet_lite0_strokes"])
    return np.concatenate([encoder.embed(list(arrays[i : i + 32])) for i in range(0, len(arrays), 32)])


def _train(arrays, writers, labels, samples, train_on: set[str], args) -> tuple[np.ndarray, float, np.ndarray, int]:  # noqa: ANN001
    """An encoder trained as the command does on ``train_on`` (validation writers drawn from
    each source among them): every signature's vector, the seconds, the background set (the
    training writers' signatures, genuine and forged) and the similarity part's size."""
    from signatures import training
    from signatures.datasets import writer_split
    from signatures.encoders import SignatureNet, network_embed
    from signatures.services.encoders import DEFAULT_EPOCHS, VALIDATION_FRACTION

    fit, validation = writer_split([s for s in samples if s.writer in train_on], fraction=VALIDATION_FRACTION,
                                   seed=args.seed)  # fmt: skip

    def subset(chosen: set[str]) -> tuple[np.ndarray, list[str], list[str]]:
        mask = np.isin(writers, list(chosen))
        return arrays[mask], writers[mask].tolist(), labels[mask].tolist()

    config = training.TrainingConfig(epochs=args.epochs or DEFAULT_EPOCHS, seed=args.seed, minutes=args.minutes)
    if args.epochs == 0:  # the network before any epoch (what training keeps when no epoch beats it)
        if "untrained" not in _embedded:
            net = SignatureNet(dim=config.dim, frozen_blocks=config.frozen_blocks,
                               feature_blocks=config.feature_blocks, taps=config.taps,
                               input_shape=config.input_shape)  # fmt: skip
            _embedded["untrained"] = network_embed(net, list(arrays))
        vectors, seconds = _embedded["untrained"], 0.0
    else:
        result = training.train(*subset(fit), validation=subset(validation), config=config,
                                progress=lambda epoch, m: epoch and print(f"  epoch {epoch}: {m}",
                                                                          flush=True))  # fmt: skip
        vectors, seconds = network_embed(training.trained_network(result), list(arrays)), result.seconds
    background = vectors[np.isin(writers, list(fit))]
    return vectors, seconds, background, config.dim


_embedded: dict[str, np.ndarray] = {}  # the untrained network's vectors, computed once


def _measure(vectors, writers, labels, mask, background, counts, similarity_dim) -> dict[str, dict]:  # noqa: ANN001
    from signatures.calibration import WRITER_DEPENDENT, WRITER_INDEPENDENT, protocol_scores
    from signatures.evaluation import rates

    measured: dict[str, dict] = {}
    for mode in (WRITER_INDEPENDENT, WRITER_DEPENDENT):
        for count in counts:
            if mode == WRITER_DEPENDENT and background is None:
                continue
            scores = protocol_scores(vectors[mask], writers[mask], labels[mask], references=count, mode=mode,
                                     background=background, similarity_dim=similarity_dim)  # fmt: skip
            if not scores["genuine"]:
                continue
            entry = {}
            for kind in ("skilled", "random"):
                if scores[kind]:
                    figures = rates(scores["genuine"], scores[kind])
                    entry[kind] = {"eer": round(figures.eer, 4), "far_at_frr_5": round(figures.far_at_frr5, 4)}
            measured[f"{mode} {count}"] = entry
    return measured


def _print_table(figures: dict[str, dict], counts: list[int]) -> None:
    print()
    print("| source · encoder | scoring | refs | skilled EER | random EER | skilled FAR at FRR 5% |")
    print("|---|---|---|---|---|---|")
    for name, measured in figures.items():
        for key, entry in measured.items():
            mode, count = key.rsplit(" ", 1)

            def cell(kind: str, figure: str, entry: dict = entry) -> str:
                return f"{entry[kind][figure]:.3f}" if kind in entry else "-"

            print(f"| {name} | {mode.replace('_', '-')} | {count} | {cell('skilled', 'eer')} | "
                  f"{cell('random', 'eer')} | {cell('skilled', 'far_at_frr_5')} |")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
