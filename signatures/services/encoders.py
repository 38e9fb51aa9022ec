"""Signature encoders: activation, and the training runs of encoders trained here."""

from __future__ import annotations

import io
import re
from functools import partial
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from signatures.datasets import Source
from signatures.models import (
    ActiveEncoder,
    ReferenceVector,
    SignatureEncoder,
    WriterModel,
)
from signatures.registry import PRETRAINED
from signatures.selectors import active_encoder_key, encoder_background_forget, encoder_spec
from simsite.celery import task_send
from simsite.errors import ServiceError
from simsite.training_runs import (
    training_run_create,
    training_run_execute,
    training_run_touch,
    training_runs_reconcile,
)

# Training: epochs by default (about 5 minutes for SVC2004's 24 writers on a 2-core CPU;
# more overfit: README, "Signatures"), and the share of writers kept out for validation.
DEFAULT_EPOCHS = 12

# The time budget of preparing and training (epochs stop when it is spent); calibrating and
# saving take a few minutes more: the three sets of ../shared/data train within 30 minutes on a
# 2-core CPU.
DEFAULT_MINUTES = 24.0

VALIDATION_FRACTION = 0.25


def encoder_activate(*, key: str) -> str:
    """Make ``key`` the encoder compare and verify use (pretrained, or trained here and
    ready). References get their vectors under it when first needed."""
    spec = encoder_spec(key)
    ActiveEncoder.objects.update_or_create(pk=1, defaults={"key": spec.key})
    return spec.key


TRAIN_TASK = "signatures.tasks.encoder_train"

_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def encoder_training_validate(
    *, sources: list[Source], epochs: int | None = None, key: str | None = None, activate: bool = False,
    loss: str = "triplet", seed: int = 0, minutes: float | None = None,
) -> dict[str, object]:  # fmt: skip
    """Check what can be checked at once - the key, the settings, and that each source holds
    signatures in its layout, of enough writers in all - and return the run's fields."""
    from signatures.datasets import sources_load

    if not key:
        key = f"signet-{timezone.now():%Y%m%d-%H%M%S}"
    if not _KEY.match(key):
        raise ServiceError("invalid_key", "key: lower-case letters, digits, '-' and '_' (at most 64).", field="key")
    if key in PRETRAINED or SignatureEncoder.objects.filter(key=key).exists():
        raise ServiceError("duplicate_key", f"A signature encoder '{key}' exists already.", field="key",
                           status_code=409)  # fmt: skip
    if loss not in ("triplet", "contrastive"):
        raise ServiceError("invalid_loss", "loss must be 'triplet' or 'contrastive'.", field="loss")
    config: dict[str, object] = {"epochs": DEFAULT_EPOCHS if epochs is None else epochs, "loss": loss, "seed": seed}
    if not 1 <= config["epochs"] <= 500:
        raise ServiceError("invalid_epochs", "epochs must be between 1 and 500.", field="epochs")
    minutes = DEFAULT_MINUTES if minutes is None else minutes
    if not 1 <= minutes <= 24 * 60:
        raise ServiceError("invalid_minutes", "minutes (the time budget) must be between 1 and 1440.",
                           field="minutes")  # fmt: skip
    config["minutes"] = float(minutes)
    sources = [Source(source.layout, Path(source.root).resolve()) for source in sources]
    if len({source.root for source in sources}) < len(sources):
        raise ServiceError("invalid", "data: the same folder is named twice.", field="data")
    samples = sources_load(sources)
    writers = {sample.writer for sample in samples if sample.label == "genuine"}
    if len(writers) < 3:
        names = ", ".join(source.root.name for source in sources)
        raise ServiceError("too_few_writers", f"Training needs genuine signatures of at least 3 writers (2 to learn "
                           f"from, 1 to validate on); {names} has {len(writers)}.", field="data")  # fmt: skip
    return {"key": key, "sources": [source.as_dict() for source in sources], "config": config,
            "activate_when_done": activate}  # fmt: skip


def encoder_training_create(**options: object) -> SignatureEncoder:
    """Record a training run (queued), after ``encoder_training_validate``."""
    return training_run_create(SignatureEncoder, fields=encoder_training_validate(**options),
                               what="A signature encoder")  # fmt: skip


def encoder_training_start(**options: object) -> SignatureEncoder:
    """Record a training run and queue it for a worker (queue ``embed``)."""
    with transaction.atomic():
        encoder = encoder_training_create(**options)
        transaction.on_commit(lambda: task_send(TRAIN_TASK, encoder.pk), robust=True)
    return encoder


def _encoder_update(encoder_id: int, **fields: object) -> None:
    training_run_touch(SignatureEncoder, pk=encoder_id, **fields)


def encoder_training_run(*, encoder_id: int) -> SignatureEncoder | None:
    """Train a queued encoder (``simsite.training_runs``: claimed once, failed with the reason
    whatever goes wrong): read and preprocess the data, split it by writer, train, calibrate
    the threshold on the validation writers, save weights and plots, and register the encoder
    (activating it if asked)."""
    return training_run_execute(SignatureEncoder, pk=encoder_id, first_message="reading the signatures",
                                train=_encoder_train)  # fmt: skip


def _encoder_train(encoder: SignatureEncoder, saved: list[str]) -> None:
    from signatures import training
    from signatures.calibration import WRITER_INDEPENDENT, calibration_measure
    from signatures.datasets import dataset_arrays, dataset_fingerprint, sources_load, writer_split
    from signatures.encoders import network_embed
    from signatures.plots import evaluation_plots, training_plot
    from signatures.writer_models import GAMMA_SCALE

    samples = sources_load([Source(source["layout"], Path(source["data"])) for source in encoder.sources])
    fingerprint = dataset_fingerprint(samples)
    config = training.TrainingConfig(**encoder.config)
    arrays, kept, skipped = dataset_arrays(samples, shape=config.input_shape)
    train_writers, val_writers = writer_split(kept, fraction=VALIDATION_FRACTION, seed=config.seed)
    if not train_writers or not val_writers:
        raise ServiceError("too_few_writers", "Training needs readable signatures of at least 3 writers.",
                           field="data")  # fmt: skip

    def subset(writers: set[str]) -> tuple[np.ndarray, list[str], list[str]]:
        index = [i for i, sample in enumerate(kept) if sample.writer in writers]
        return (np.stack([arrays[i] for i in index]), [kept[i].writer for i in index],
                [kept[i].label for i in index])  # fmt: skip

    validation = subset(val_writers)

    def progress(epoch: int, measured: dict[str, float]) -> None:
        if epoch == 0:
            fraction = 0.3 * measured["prepared"]
            message = f"preparing augmented copies ({measured['prepared']:.0%})"
        else:
            fraction = 0.3 + 0.6 * epoch / config.epochs
            message = f"epoch {epoch}/{config.epochs}: loss {measured['loss']:.3f}, " \
                      f"validation EER {measured['val_eer']:.3f}"  # fmt: skip
        _encoder_update(encoder.pk, progress=round(fraction, 4), message=message[:300])

    training_set = subset(train_writers)
    result = training.train(*training_set, validation=validation, config=config, progress=progress)
    _encoder_update(encoder.pk, progress=0.9, message="calibrating on the validation writers")
    net = training.trained_network(result)
    validation_vectors = network_embed(net, list(validation[0]))
    # The background set: the training writers' signatures, genuine and forged, the negatives
    # of every signer's own model (signatures.writer_models). With the forgeries, the held-out
    # writers' EER with 5 references fell from 0.112 to 0.102 on CEDAR, 0.117 to 0.106 on the
    # Dutch set and 0.156 to 0.140 on SVC2004.
    background = network_embed(net, list(training_set[0])).astype(np.float32)
    calibration = calibration_measure(validation_vectors, validation[1], validation[2],
                                      background=background, similarity_dim=config.dim)  # fmt: skip
    # One set of thresholds: the writer-independent tables' equal-error points, which verify
    # decides with, are also what compare, the outlier flags, the plots and the API show.
    thresholds = {count: float(table["eer_threshold"]) for count, table in calibration[WRITER_INDEPENDENT].items()}
    results, scores = training.calibrate(validation_vectors[:, : config.dim], *validation[1:], thresholds)
    threshold = thresholds["1"]

    folder = encoder.files_folder()
    saved.append(default_storage.save(f"{folder}/weights.pt", ContentFile(training.weights_file(result))))
    saved.append(default_storage.save(f"{folder}/background.npy", ContentFile(_npy(background))))
    plots = {"training": training_plot(result.curves, best_epoch=result.best_epoch, key=encoder.key),
             **evaluation_plots(scores, partial(training.threshold_for_count, thresholds), encoder.key)}  # fmt: skip
    plot_names = {}
    for name, png in plots.items():
        plot_names[name] = default_storage.save(f"{folder}/{name}.png", ContentFile(png))
        saved.append(plot_names[name])
    kind = "skilled" if "skilled" in results["1_references"] else "random"
    per_source = {
        label: {"fingerprint": dataset_fingerprint([s for s in samples if s.source == label]),
                "signatures": sum(1 for s in kept if s.source == label),
                "training_writers": sum(1 for w in train_writers if w.startswith(f"{label}/")),
                "validation_writers": sum(1 for w in val_writers if w.startswith(f"{label}/"))}
        for label in dict.fromkeys(sample.source for sample in samples)
    }  # fmt: skip
    metrics = {
        "dataset": f"{encoder.sources_text()}, {len(val_writers)} validation writers",
        "eer": results["1_references"][kind]["eer"],
        "auc": results["1_references"][kind]["auc"],
        "eer_5_references_max": results.get("5_references", {}).get(kind, {}).get("eer"),
        "random_forgery_eer": results["1_references"].get("random", {}).get("eer"),
        "validation": results,
        "calibrated_eer": {
            mode: {count: table["eer"] for count, table in tables.items()} for mode, tables in calibration.items()
        },  # fmt: skip
        "sources": per_source,
        "training_writers": sorted(train_writers),
        "validation_writers": sorted(val_writers),
        "training_writer_count": len(train_writers),
        "signatures": len(kept),
        "skipped": len(skipped),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curves.get("loss", [])),
        "thresholds": {count: round(value, 4) for count, value in thresholds.items()},
        "device": str(training.embedding_device()),
        "similarity_dim": config.dim,
        "writer_gamma_scale": GAMMA_SCALE,  # what the writer-dependent calibration was measured with
    }
    with transaction.atomic():
        SignatureEncoder.objects.filter(pk=encoder.pk).update(
            status=SignatureEncoder.Status.SUCCEEDED, progress=1.0, message="", dim=net.descriptor_dim,
            threshold=round(threshold, 4), metrics=metrics, curves=result.curves, weights=saved[0],
            background=saved[1], calibration=calibration, plots=plot_names, fingerprint=fingerprint,
            seconds=round(result.seconds, 1), finished_at=timezone.now(), updated_at=timezone.now(),
        )  # fmt: skip
        if encoder.activate_when_done:
            encoder_activate(key=encoder.key)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encoder_delete(*, encoder: SignatureEncoder) -> None:
    """Delete a trained encoder, its files and the reference vectors computed with it; the
    active one cannot be deleted (activate another first)."""
    if encoder.key == active_encoder_key():
        raise ServiceError("encoder_active", f"'{encoder.key}' is the active encoder; activate another one first.",
                           status_code=409)  # fmt: skip
    if encoder.status == SignatureEncoder.Status.RUNNING:
        raise ServiceError("encoder_running", f"'{encoder.key}' is being trained; wait for it to end.",
                           status_code=409)  # fmt: skip
    names = [name for name in [encoder.weights, encoder.background, *encoder.plots.values()] if name]
    with transaction.atomic():
        ReferenceVector.objects.filter(encoder=encoder.key).delete()
        WriterModel.objects.filter(encoder=encoder.key).delete()  # fitted to its vectors: useless to another
        encoder.delete()
        transaction.on_commit(lambda: encoder_background_forget(encoder.background))
        for name in names:  # each on its own: one that cannot be deleted is logged, the rest still go
            transaction.on_commit(lambda name=name: default_storage.delete(name), robust=True)


def encoder_reconcile() -> dict[str, int]:
    """Periodic (Celery beat): re-send training runs whose message was lost; fail those whose
    worker stopped reporting (killed, out of memory)."""
    stalled, resent = training_runs_reconcile(
        SignatureEncoder, stall_seconds=settings.SIGNATURE_TRAINING_STALL_SECONDS, task=TRAIN_TASK, queue="embed"
    )
    return {"resent": resent, "stalled": stalled}
