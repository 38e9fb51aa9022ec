"""Calibration (numpy): ROC tables, operating points, confidence; the per-signer classifier."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from signatures.calibration import (
    confidence,
    rates_at,
    roc_table,
    table_for,
    threshold_at_far,
    writer_dependent_ready,
)
from signatures.writer_models import GAMMA_SCALE, C, WriterClassifier, writer_model_fit


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(0.8, 0.05, 400), rng.normal(0.6, 0.08, 600)


def test_the_table_gives_the_equal_error_point_and_target_far_thresholds(scores):
    genuine, forged = scores
    table = roc_table(genuine, forged)
    assert table["thresholds"] == sorted(table["thresholds"]) and len(table["thresholds"]) <= 256
    far, frr = rates_at(table, table["eer_threshold"])
    assert abs(far - frr) < 0.03 and abs(table["eer"] - (far + frr) / 2) < 0.02
    for target in (0.1, 0.01):
        cut, far, frr = threshold_at_far(table, target)
        assert far <= target
        assert (forged >= cut).mean() <= target + 0.005  # holds on the scores themselves
        assert np.isclose((genuine < cut).mean(), frr, atol=0.01)
    assert threshold_at_far(table, 0.01)[0] > max(threshold_at_far(table, 0.1)[0], table["eer_threshold"])


def test_confidence_is_monotonic_and_calibrated_with_equal_priors(scores):
    genuine, forged = scores
    table = roc_table(genuine, forged)
    values = [confidence(table, s) for s in np.linspace(0.4, 1.0, 13)]
    assert values == sorted(values) and values[0] < 0.05 and values[-1] > 0.95
    # Among signatures given about 0.5, genuine and forged are about equally likely (balanced).
    middle = confidence(table, table["eer_threshold"])
    assert 0.3 < middle < 0.7


def test_the_table_measured_with_at_most_the_references_is_used():
    calibration = {"writer_independent": {"1": {"eer": 0.2}, "5": {"eer": 0.1}}}
    assert table_for(calibration, "writer_independent", 3) == ("1", {"eer": 0.2})
    assert table_for(calibration, "writer_independent", 12)[0] == "5"
    assert table_for(calibration, "writer_dependent", 12) == ("", {})


def test_the_signers_own_model_decides_only_where_calibrated_with_as_few_references():
    now = {"writer_dependent": {"1": {"eer": 0.2}, "3": {"eer": 0.1}, "5": {"eer": 0.05}}}
    assert all(writer_dependent_ready(now, count) for count in (1, 2, 3, 7))
    before = {"writer_dependent": {"5": {"eer": 0.05}, "10": {"eer": 0.04}}}  # an encoder trained earlier
    assert not writer_dependent_ready(before, 4) and writer_dependent_ready(before, 5)
    assert not writer_dependent_ready({}, 5) and not writer_dependent_ready(now, 0)  # pretrained; no references


def test_the_stored_writer_model_scores_as_the_svm_does():
    rng = np.random.default_rng(1)
    references = rng.normal(0.3, 0.05, (6, 16))
    negatives = rng.normal(0.0, 0.3, (300, 16))
    model = writer_model_fit(references=references, negatives=negatives)
    again = WriterClassifier.from_bytes(model.to_bytes())
    questioned = np.vstack([rng.normal(0.3, 0.05, (5, 16)), rng.normal(0.0, 0.3, (5, 16))])
    features = np.vstack([references, negatives])
    labels = np.r_[np.ones(6), np.zeros(300)]
    reference = SVC(C=C, gamma=GAMMA_SCALE / (features.shape[1] * features.var()), class_weight="balanced")
    reference.fit(features, labels)
    assert np.allclose(again.score(questioned), reference.decision_function(questioned), atol=1e-4)
    assert (again.score(questioned[:5]) > 0).all() and (again.score(questioned[5:]) < 0).all()
    # A scale of 1 is scikit-learn's own "scale" kernel (what encoders trained before it use).
    wide = writer_model_fit(references=references, negatives=negatives, gamma_scale=1.0)
    heuristic = SVC(C=C, gamma="scale", class_weight="balanced").fit(features, labels)
    assert np.allclose(wide.score(questioned), heuristic.decision_function(questioned), atol=1e-4)
    # Features that do not vary (a degenerate background): a finite kernel, as scikit-learn's.
    assert writer_model_fit(references=np.ones((1, 4)), negatives=np.ones((3, 4))).gamma == GAMMA_SCALE / 4
