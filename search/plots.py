"""PNG plots of embedding models: training curves, a classifier's confusion matrix and
precision@k curves of models side by side (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from simsite.plots import png, pyplot


def training_plot(curves: Mapping[str, Sequence[float]], *, best_epoch: int, key: str) -> bytes:
    """Loss per epoch; validation accuracy and retrieval (mAP@10, precision@10)."""
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    epochs = range(1, len(curves["loss"]) + 1)
    left.plot(epochs, curves["loss"], marker="o")
    left.set(xlabel="epoch", ylabel="training loss", title=f"Training: {key}")
    for name, label in (("val_accuracy", "accuracy"), ("val_map@10", "mAP@10"), ("val_precision@10", "precision@10")):
        if curves.get(name):
            right.plot(epochs, curves[name], marker="o", label=label)
    right.axvline(best_epoch, color="grey", linestyle=":", label="kept")
    right.set(xlabel="epoch", title="Validation split")
    right.legend()
    return png(figure)


def confusion_plot(matrix: np.ndarray, classes: Sequence[str], *, key: str) -> bytes:
    """The classifier's confusion matrix on the test split (rows: truth)."""
    plt = pyplot()
    size = max(4.0, 0.55 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        axis.text(col, row, str(value), ha="center", va="center", fontsize=8)
    axis.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="truth",
             title=f"Test split: {key}")  # fmt: skip
    axis.set_xticklabels(classes, rotation=45, ha="right")
    axis.set_yticklabels(classes)
    return png(figure)


def precision_plot(reports: Mapping[str, Mapping[str, object]], ks: Sequence[int]) -> bytes:
    """precision@k per class, one panel per model, side by side (``evaluate_retrieval``)."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(reports), figsize=(4.5 * len(reports), 3.8), sharey=True, squeeze=False)
    for axis, (model, report) in zip(axes[0], reports.items(), strict=True):
        for label, values in report["by_class"].items():
            axis.plot(ks, [values[f"precision@{k}"] for k in ks], marker="o", label=label)
        axis.plot(ks, [report["overall"][f"precision@{k}"] for k in ks], color="black", linewidth=2.5, label="all")
        axis.set(xlabel="k", title=model, xticks=list(ks))
    axes[0][0].set(ylabel="precision@k")
    axes[0][-1].legend(fontsize=8)
    return png(figure)
