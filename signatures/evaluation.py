"""Verification metrics (numpy only): EER, ROC AUC, FAR/FRR, and the writer-level protocol.

Scores are "higher means more likely genuine". FAR: share of forgeries accepted; FRR: share
of genuine signatures rejected, at a threshold where ``score >= threshold`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rates:
    eer: float
    eer_threshold: float
    auc: float
    far_at_frr5: float


def roc(genuine: np.ndarray, forged: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FAR, FRR) at every distinct score, thresholds ascending."""
    thresholds = np.unique(np.concatenate([genuine, forged]))
    genuine_sorted, forged_sorted = np.sort(genuine), np.sort(forged)
    frr = np.searchsorted(genuine_sorted, thresholds, side="left") / max(len(genuine), 1)
    far = 1 - np.searchsorted(forged_sorted, thresholds, side="left") / max(len(forged), 1)
    return thresholds, far, frr


def rates(genuine: Sequence[float], forged: Sequence[float]) -> Rates:
    genuine, forged = np.asarray(genuine, dtype=np.float64), np.asarray(forged, dtype=np.float64)
    thresholds, far, frr = roc(genuine, forged)
    index = int(np.argmin(np.abs(far - frr)))
    eer = float((far[index] + frr[index]) / 2)
    # AUC: the chance a genuine score beats a forged one (ties count half), by binary search.
    forged_sorted = np.sort(forged)
    below = np.searchsorted(forged_sorted, genuine, side="left")
    tied = np.searchsorted(forged_sorted, genuine, side="right") - below
    auc = float((below + tied / 2).sum() / (len(genuine) * len(forged)))
    allowed = frr <= 0.05
    far_at_frr5 = float(far[allowed].min()) if allowed.any() else 1.0
    return Rates(eer=eer, eer_threshold=float(thresholds[index]), auc=auc, far_at_frr5=far_at_frr5)


def at_threshold(genuine: Sequence[float], forged: Sequence[float], threshold: float) -> dict[str, float]:
    genuine, forged = np.asarray(genuine), np.asarray(forged)
    far = float((forged >= threshold).mean()) if len(forged) else 0.0
    frr = float((genuine < threshold).mean()) if len(genuine) else 0.0
    correct = (genuine >= threshold).sum() + (forged < threshold).sum()
    return {"far": far, "frr": frr, "accuracy": float(correct / max(len(genuine) + len(forged), 1)),
            "tp": int((genuine >= threshold).sum()), "fn": int((genuine < threshold).sum()),
            "fp": int((forged >= threshold).sum()), "tn": int((forged < threshold).sum())}  # fmt: skip


Aggregate = Callable[[np.ndarray], float]
AGGREGATES: dict[str, Aggregate] = {"mean": lambda s: float(np.mean(s)), "max": lambda s: float(np.max(s))}


@dataclass
class WriterScores:
    genuine: list[float]
    skilled: list[float]
    random: list[float]


def writer_protocol(
    vectors: np.ndarray,
    writers: Sequence[str],
    labels: Sequence[str],
    *,
    references: int,
    aggregate: Aggregate,
    seed: int = 0,
    random_per_writer: int = 10,
) -> WriterScores:
    """Score questioned signatures against ``references`` genuine ones of their writer.

    Per writer: references drawn (seeded) from the genuine signatures; the other genuine
    ones are positives; the writer's skilled forgeries, and genuine signatures of other
    writers (random forgeries), are negatives. ``vectors`` are unit rows.
    """
    rng = np.random.default_rng(seed)
    writers, labels = np.asarray(writers), np.asarray(labels)
    scores = WriterScores([], [], [])
    for writer in sorted(set(writers.tolist())):
        genuine = np.flatnonzero((writers == writer) & (labels == "genuine"))
        forged = np.flatnonzero((writers == writer) & (labels == "forged"))
        others = np.flatnonzero((writers != writer) & (labels == "genuine"))
        if len(genuine) <= references:
            continue
        chosen = rng.permutation(genuine)
        refs, questioned = chosen[:references], chosen[references:]
        impostors = rng.choice(others, size=min(random_per_writer, len(others)), replace=False)

        def score(index: int, refs: np.ndarray = refs) -> float:
            return aggregate(vectors[refs] @ vectors[index])

        scores.genuine += [score(i) for i in questioned]
        scores.skilled += [score(i) for i in forged]
        scores.random += [score(i) for i in impostors]
    return scores


def protocol_report(
    vectors: np.ndarray,
    writers: Sequence[str],
    labels: Sequence[str],
    *,
    counts: Sequence[int],
    aggregate: str,
    threshold: float | Callable[[int], float],
    seeds: Sequence[int] = (0,),
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[tuple[int, str], tuple[list[float], list[float]]]]:
    """The protocol with each reference count (scores pooled over ``seeds``' draws): per count
    and kind of forgery, EER (and its threshold), AUC, FAR at FRR = 5 %, and FAR, FRR and
    accuracy at ``threshold`` (a number, or a function of the reference count); and the
    scores themselves, for plots."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    pooled: dict[tuple[int, str], tuple[list[float], list[float]]] = {}
    for count in counts:
        runs = [writer_protocol(vectors, writers, labels, references=count, aggregate=AGGREGATES[aggregate],
                                seed=seed) for seed in seeds]  # fmt: skip
        genuine = [s for run in runs for s in run.genuine]
        entry = {}
        for kind in ("skilled", "random"):
            negatives = [s for run in runs for s in getattr(run, kind)]
            if not negatives or not genuine:
                continue
            measured = rates(genuine, negatives)
            cut = threshold(count) if callable(threshold) else threshold
            entry[kind] = {
                "eer": round(measured.eer, 4), "eer_threshold": round(measured.eer_threshold, 4),
                "auc": round(measured.auc, 4), "far_at_frr_5": round(measured.far_at_frr5, 4),
                **{k: (round(v, 4) if isinstance(v, float) else v)
                   for k, v in at_threshold(genuine, negatives, cut).items()},
            }  # fmt: skip
            entry[kind]["threshold"] = round(cut, 4)
            pooled[(count, kind)] = (genuine, negatives)
        if entry:
            results[f"{count}_references"] = entry
    return results, pooled
