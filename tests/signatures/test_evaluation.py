"""Metrics, data set layouts and the evaluate_signatures command."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from signatures.datasets import dataset_fingerprint, dataset_load, sample_bytes, writer_split
from signatures.evaluation import at_threshold, rates, writer_protocol
from signatures.synthetic import synthetic_dataset
from simsite.errors import ServiceError
from tests.signatures.conftest import SVC2004


def test_rates_on_known_scores():
    perfect = rates([0.9, 0.8, 0.95], [0.1, 0.2, 0.3])
    assert perfect.eer == 0 and perfect.auc == 1 and perfect.far_at_frr5 == 0
    coin = rates([0.5, 0.5], [0.5, 0.5])
    assert coin.auc == 0.5
    overlap = rates([0.6, 0.7, 0.8, 0.9], [0.1, 0.65, 0.2, 0.3])
    assert overlap.eer == pytest.approx(0.25) and overlap.auc == pytest.approx(15 / 16)
    counts = at_threshold([0.6, 0.7, 0.8, 0.9], [0.1, 0.65, 0.2, 0.3], 0.62)
    assert (counts["far"], counts["frr"], counts["tp"], counts["fp"]) == (0.25, 0.25, 3, 1)


def test_writer_protocol_keeps_references_out_of_the_questioned():
    vectors = np.eye(8, dtype=np.float32)
    writers = ["a"] * 4 + ["b"] * 4
    labels = ["genuine", "genuine", "genuine", "forged"] * 2
    scores = writer_protocol(vectors, writers, labels, references=1, aggregate=lambda s: float(s.max()),
                             random_per_writer=2)  # fmt: skip
    assert len(scores.genuine) == 4 and len(scores.skilled) == 2 and len(scores.random) == 4
    assert max(scores.genuine) < 1  # a reference never scores itself


def test_layouts(tmp_path):
    synthetic_dataset(tmp_path / "folders", writers=3, genuine=2, forged=1)
    samples = dataset_load(root=tmp_path / "folders", layout="folders")
    assert len(samples) == 9 and {s.label for s in samples} == {"genuine", "forged"}
    train, val = writer_split(samples, fraction=0.34, seed=1)
    assert len(val) == 1 and not train & val and train | val == {s.writer for s in samples}
    assert len(dataset_fingerprint(samples)) == 64
    cedar = tmp_path / "cedar"
    (cedar / "full_org").mkdir(parents=True)
    (cedar / "full_forg").mkdir()
    blank = Image.new("L", (40, 20), 255)
    blank.save(cedar / "full_org" / "original_7_1.png")
    blank.save(cedar / "full_forg" / "forgeries_7_1.png")
    bhsig = tmp_path / "bhsig" / "Hindi" / "001"
    bhsig.mkdir(parents=True)
    blank.save(bhsig / "H-S-1-G-01.tif")
    blank.save(bhsig / "H-S-1-F-01.tif")
    assert {(s.writer, s.label) for s in dataset_load(root=cedar, layout="cedar")} == {
        ("7", "genuine"),
        ("7", "forged"),
    }
    tiffs = dataset_load(root=tmp_path / "bhsig", layout="bhsig")
    assert len(tiffs) == 2 and sample_bytes(tiffs[0]).startswith(b"\x89PNG")
    with pytest.raises(ServiceError):
        dataset_load(root=tmp_path / "folders", layout="gpds")
    with pytest.raises(ServiceError):
        dataset_load(root=tmp_path / "cedar" / "full_org", layout="folders")
    if SVC2004.is_dir():
        real = dataset_load(root=SVC2004, layout="svc2004")
        assert len(real) == 960 and len({s.writer for s in real}) == 24


@pytest.mark.django_db
def test_evaluate_command_writes_metrics_and_plots(tmp_path):
    data = synthetic_dataset(tmp_path / "data", writers=4, genuine=6, forged=3)
    out = io.StringIO()
    call_command("evaluate_signatures", "--data", str(data), "--layout", "folders", "--references", "1,3",
                 "--out", str(tmp_path / "report"), stdout=out, verbosity=0)  # fmt: skip
    report = json.loads(out.getvalue())
    assert report["model"] == "efficientnet_lite0_strokes" and report["writers"] == 4 and report["signatures"] == 36
    for count in ("1_references", "3_references"):
        for kind in ("skilled", "random"):
            metrics = report["results"][count][kind]
            assert 0 <= metrics["eer"] <= 1 and 0 <= metrics["auc"] <= 1 and 0 <= metrics["accuracy"] <= 1
    for name in ("metrics.json", "roc.png", "scores.png", "confusion.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    with pytest.raises(CommandError):
        call_command("evaluate_signatures", "--data", str(tmp_path / "none"), "--layout", "folders")
    for counts in ("0,3", "-1", "a", ","):  # no reference is no protocol: named, not a traceback
        with pytest.raises(CommandError, match="--references must be"):
            call_command("evaluate_signatures", "--data", str(data), "--layout", "folders", "--references", counts)
