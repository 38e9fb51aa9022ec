"""From a score to a decision a back office can defend (numpy only).

Training measures, on writers it never learned from, the scores of genuine signatures and of
skilled forgeries, per reference count and per way of scoring (writer-independent: the best
cosine similarity to a reference; writer-dependent: the signer's own model). This module keeps
that measurement small (a ROC table of a few hundred points) and answers from it:

- the threshold at an operating point: the equal-error point, or the lowest threshold whose
  false-acceptance rate of skilled forgeries is at most a target (``SIGNATURE_TARGET_FAR``);
- a calibrated confidence: the probability that a signature with this score is genuine, by
  logistic (Platt) scaling fitted on the same scores with equal priors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from signatures.evaluation import rates
from signatures.writer_models import GAMMA_SCALE, descriptors, writer_model_fit

_POINTS = 256  # thresholds kept per table: quantiles of the pooled scores
_DECAY = 1e-3


def roc_table(genuine: Sequence[float], forged: Sequence[float]) -> dict[str, object]:
    """A compact ROC: thresholds (ascending) with FAR and FRR at each, the EER and its
    threshold, and Platt parameters. Serialisable as JSON."""
    genuine, forged = np.sort(np.asarray(genuine, dtype=np.float64)), np.sort(np.asarray(forged, dtype=np.float64))
    pooled = np.concatenate([genuine, forged])
    thresholds = np.unique(np.quantile(pooled, np.linspace(0, 1, _POINTS)))
    far = 1 - np.searchsorted(forged, thresholds, side="left") / len(forged)
    frr = np.searchsorted(genuine, thresholds, side="left") / len(genuine)
    measured = rates(genuine, forged)
    slope, intercept = platt_fit(genuine, forged)
    return {
        "thresholds": np.round(thresholds, 6).tolist(),
        "far": np.round(far, 5).tolist(),
        "frr": np.round(frr, 5).tolist(),
        "eer": round(measured.eer, 4),
        "eer_threshold": round(measured.eer_threshold, 6),
        "auc": round(measured.auc, 4),
        "platt": [round(slope, 6), round(intercept, 6)],
        "genuine": len(genuine),
        "forged": len(forged),
    }


def threshold_at_far(table: dict[str, object], target_far: float) -> tuple[float, float, float]:
    """(threshold, FAR, FRR) at the lowest threshold of ``table`` whose FAR is at most
    ``target_far``: as many genuine signatures accepted as that many forgeries allow."""
    thresholds, far, frr = (np.asarray(table[name]) for name in ("thresholds", "far", "frr"))
    allowed = np.flatnonzero(far <= target_far)
    if not allowed.size:  # even the highest score measured lets more through: one step above it
        return float(thresholds[-1]) + 1e-6, 0.0, 1.0
    index = int(allowed[0])
    return float(thresholds[index]), float(far[index]), float(frr[index])


def rates_at(table: dict[str, object], threshold: float) -> tuple[float, float]:
    """(FAR, FRR) the validation writers had at ``threshold`` (the nearest table point below)."""
    thresholds = np.asarray(table["thresholds"])
    index = max(int(np.searchsorted(thresholds, threshold, side="right")) - 1, 0)
    return float(table["far"][index]), float(table["frr"][index])


def platt_fit(genuine: np.ndarray, forged: np.ndarray, iterations: int = 200) -> tuple[float, float]:
    """Logistic regression of "genuine" on the score, each class weighted to half the total
    (the operator's prior is not the validation set's), by Newton's method."""
    scores = np.concatenate([genuine, forged])
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(forged))])
    weights = np.where(labels == 1, 0.5 / len(genuine), 0.5 / len(forged))
    centre, scale = float(scores.mean()), float(scores.std()) or 1.0
    x = (scores - centre) / scale
    a, b = 1.0, 0.0
    for _ in range(iterations):
        p = _sigmoid(a * x + b)
        # A little weight decay on the slope: perfectly separated scores keep a finite one.
        gradient = np.array([(weights * (p - labels) * x).sum() + _DECAY * a, (weights * (p - labels)).sum()])
        curvature = weights * p * (1 - p)
        hessian = np.array([[(curvature * x * x).sum() + _DECAY, (curvature * x).sum()], [(curvature * x).sum(),
                            curvature.sum() + 1e-9]])  # fmt: skip
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a / scale), float(b - a * centre / scale)


def confidence(table: dict[str, object], score: float) -> float:
    """The calibrated probability that a signature with ``score`` is genuine (equal priors)."""
    slope, intercept = table["platt"]
    return float(_sigmoid(slope * score + intercept))


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 0.5 * (1 + np.tanh(np.asarray(z) / 2))  # no overflow, unlike 1 / (1 + exp(-z))


WRITER_INDEPENDENT, WRITER_DEPENDENT = "writer_independent", "writer_dependent"
COUNTS = (1, 3, 5, 10)  # reference counts calibrated


def protocol_scores(
    vectors: np.ndarray,
    writers: Sequence[str],
    labels: Sequence[str],
    *,
    references: int,
    mode: str,
    background: np.ndarray | None = None,
    similarity_dim: int = 0,
    gamma_scale: float = GAMMA_SCALE,
    seeds: Sequence[int] = (0, 1, 2),
    random_per_writer: int = 10,
) -> dict[str, list[float]]:
    """The writer protocol (``signatures.evaluation.writer_protocol``) scored as verify scores:
    per writer, ``references`` genuine signatures drawn (seeded) as references, the rest of its
    genuine signatures, its skilled forgeries and other writers' genuine signatures questioned.
    ``writer_dependent`` fits each writer's own model (negatives: ``background`` and the other
    writers' references of the same draw, as at enrolment). ``similarity_dim``: the vectors'
    similarity part (``EncoderSpec.similarity_dim``; 0: all); ``gamma_scale``: the signers'
    models' kernel (``EncoderSpec.writer_gamma_scale``; default: the one enrolment fits now).
    Returns the pooled scores of ``genuine``, ``skilled`` and ``random`` questioned signatures."""
    writers, labels = np.asarray(writers), np.asarray(labels)
    similar = vectors[:, :similarity_dim] if similarity_dim else vectors
    described = descriptors(vectors)
    described_background = descriptors(background) if background is not None and len(background) else None
    pooled: dict[str, list[float]] = {"genuine": [], "skilled": [], "random": []}
    names = sorted(set(writers.tolist()))
    for seed in seeds:
        rng = np.random.default_rng(seed)
        drawn = {}
        for writer in names:
            genuine = np.flatnonzero((writers == writer) & (labels == "genuine"))
            if len(genuine) > references:
                chosen = rng.permutation(genuine)
                drawn[writer] = (chosen[:references], chosen[references:])
        for writer, (refs, questioned) in drawn.items():
            forged = np.flatnonzero((writers == writer) & (labels == "forged"))
            others = np.flatnonzero((writers != writer) & (labels == "genuine"))
            impostors = rng.choice(others, size=min(random_per_writer, len(others)), replace=False)
            if mode == WRITER_DEPENDENT:
                negatives = [described[r] for other, (r, _) in drawn.items() if other != writer]
                if described_background is not None:
                    negatives.append(described_background)
                model = writer_model_fit(references=described[refs], negatives=np.vstack(negatives),
                                         gamma_scale=gamma_scale)  # fmt: skip

                def score(index: np.ndarray, model=model) -> list[float]:  # noqa: ANN001
                    return model.score(described[index]).tolist() if len(index) else []
            else:

                def score(index: np.ndarray, refs: np.ndarray = refs) -> list[float]:
                    return (similar[index] @ similar[refs].T).max(axis=1).tolist() if len(index) else []

            pooled["genuine"] += score(questioned)
            pooled["skilled"] += score(forged) if len(forged) else []
            pooled["random"] += score(impostors)
    return pooled


def calibration_measure(
    vectors: np.ndarray,
    writers: Sequence[str],
    labels: Sequence[str],
    *,
    background: np.ndarray | None,
    similarity_dim: int = 0,
    counts: Sequence[int] = COUNTS,
    seeds: Sequence[int] = (0, 1, 2),
) -> dict[str, dict[str, dict[str, object]]]:
    """ROC tables of the validation writers, per mode and reference count (skilled forgeries
    where the data has them, else random ones): ``{mode: {"5": table, ...}}``. A count no
    validation writer has enough genuine signatures for is left out."""
    measured: dict[str, dict[str, dict[str, object]]] = {WRITER_INDEPENDENT: {}, WRITER_DEPENDENT: {}}
    for mode in (WRITER_INDEPENDENT, WRITER_DEPENDENT):
        for count in counts:
            if mode == WRITER_DEPENDENT and background is None:
                continue
            scores = protocol_scores(vectors, writers, labels, references=count, mode=mode, background=background,
                                     similarity_dim=similarity_dim, seeds=seeds)  # fmt: skip
            negatives = scores["skilled"] or scores["random"]
            if not scores["genuine"] or not negatives:
                continue
            table = roc_table(scores["genuine"], negatives)
            table["forgeries"] = "skilled" if scores["skilled"] else "random"
            if scores["skilled"] and scores["random"]:
                table["random_eer"] = round(rates(scores["genuine"], scores["random"]).eer, 4)
            measured[mode][str(count)] = table
    return measured


def table_for(calibration: dict[str, dict[str, dict[str, object]]], mode: str, references: int) -> tuple[str, dict]:
    """The table measured with the most references not above ``references`` (count, table),
    or ("", {}) where there is none."""
    tables = calibration.get(mode, {})
    counts = [int(count) for count in tables if int(count) <= references]
    if not counts:
        return "", {}
    return str(max(counts)), tables[str(max(counts))]


def writer_dependent_ready(calibration: dict[str, dict[str, dict[str, object]]], references: int) -> bool:
    """Can a signer's own model decide with ``references``: has the encoder calibrated it with as
    many or fewer? (Encoders trained before the models took one reference calibrated them from
    5 on; their signers with fewer are scored by the best similarity.)"""
    return bool(table_for(calibration, WRITER_DEPENDENT, references)[1])
