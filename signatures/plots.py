"""PNG plots of a signature encoder's evaluation and training (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from signatures.evaluation import at_threshold, roc
from simsite.plots import png, pyplot

# (references, "skilled" | "random") -> (genuine scores, forgery scores)
Scores = Mapping[tuple[int, str], tuple[Sequence[float], Sequence[float]]]


def evaluation_plots(scores: Scores, threshold_for: Callable[[int], float], key: str) -> dict[str, bytes]:
    """ROC curves; score distributions and the confusion matrix with the most references, at
    the threshold for that many."""
    plt = pyplot()
    plots = {}
    figure, axis = plt.subplots(figsize=(5, 5))
    for (count, kind), (genuine, negatives) in sorted(scores.items()):
        _, far, frr = roc(np.asarray(genuine), np.asarray(negatives))
        axis.plot(far, 1 - frr, label=f"{kind}, {count} ref.")
    axis.plot([0, 1], [0, 1], ":", color="grey")
    axis.set(xlabel="false acceptance rate", ylabel="true acceptance rate", title=f"ROC: {key}")
    axis.legend()
    plots["roc"] = png(figure)

    largest = max(count for count, _ in scores)
    threshold = threshold_for(largest)
    figure, axis = plt.subplots(figsize=(6, 4))
    genuine = scores.get((largest, "skilled"), scores.get((largest, "random")))[0]
    axis.hist(genuine, bins=40, alpha=0.6, label="genuine", density=True)
    for kind in ("skilled", "random"):
        if (largest, kind) in scores:
            axis.hist(scores[(largest, kind)][1], bins=40, alpha=0.5, label=f"{kind} forgeries", density=True)
    axis.axvline(threshold, color="black", linestyle="--", label="threshold")
    axis.set(xlabel="score", title=f"Scores with {largest} references")
    axis.legend()
    plots["scores"] = png(figure)

    kind = "skilled" if (largest, "skilled") in scores else "random"
    genuine, forged = (np.asarray(v) for v in scores[(largest, kind)])
    counts = at_threshold(genuine, forged, threshold)
    matrix = np.array([[counts["tp"], counts["fn"]], [counts["fp"], counts["tn"]]])
    figure, axis = plt.subplots(figsize=(4, 4))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center")
    axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["genuine", "forged"], yticklabels=["genuine", "forged"],
             xlabel="decision", ylabel="truth", title=f"{kind.capitalize()} forgeries at the threshold")  # fmt: skip
    plots["confusion"] = png(figure)
    return plots


def training_plot(curves: Mapping[str, Sequence[float]], *, best_epoch: int, key: str) -> bytes:
    """Loss per epoch and the validation writers' skilled-forgery EER and AUC."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(curves["loss"]) + 1)
    left.plot(epochs, curves["loss"], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title=f"Training: {key}")
    if curves.get("val_eer"):
        measured = range(len(curves["val_eer"]))  # from epoch 0, before training
        right.plot(measured, curves["val_eer"], marker="o", label="EER")
        right.plot(measured, curves["val_auc"], marker="o", label="ROC AUC")
        right.axvline(best_epoch, color="grey", linestyle=":", label="kept")
        right.legend()
    right.set(xlabel="epoch", title="Validation writers (1 reference)")
    return png(figure)
