"""Models trained here: a training run's checks, queueing, run and failure, the deletion of a
trained model, and the reconciling of lost or stalled runs."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.utils import timezone

from search.datasets import CATALOG
from search.models import (
    Collection,
    Embedding,
    EmbeddingFailure,
    IndexJob,
    SearchQuerySample,
    SearchTuning,
    TrainedModel,
    hnsw_index_name,
)
from search.registry import ModelSpec
from search.selectors.embedding_models import active_model_key, model_spec_get
from search.services.indexing import index_job_create
from simsite.celery import task_send
from simsite.errors import ServiceError
from simsite.files import resolve_under_root
from simsite.training_runs import (
    training_run_create,
    training_run_execute,
    training_run_fail,
    training_run_touch,
    training_runs_reconcile,
)

TRAIN_TASK = "search.tasks.model_train"
_TRAINED_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_TRAINING_EPOCHS = 12


def _training_source(source: str | Path, *, within_root: bool) -> str:
    """'catalog', or the resolved training folder (inside EMBEDDING_TRAINING_ROOT when the
    request came from the API or the admin)."""
    if str(source) == CATALOG:
        return CATALOG
    if not within_root:
        return str(Path(source).resolve())
    root = settings.EMBEDDING_TRAINING_ROOT
    if root is None:
        raise ServiceError("data_not_allowed", "Training from a folder needs EMBEDDING_TRAINING_ROOT to be set; "
                           "train from 'catalog' or use the train_embedding_model command.", field="data",
                           status_code=403)  # fmt: skip
    text = str(source)
    if "\x00" in text or len(text) > 1024:
        raise ServiceError("data_invalid", "The folder name is too long or contains a NUL byte.", field="data")
    resolved = resolve_under_root(root, text)
    if resolved is None:
        raise ServiceError("data_not_allowed", "The folder is outside EMBEDDING_TRAINING_ROOT.", field="data",
                           status_code=403)  # fmt: skip
    return str(resolved)


def model_training_validate(
    *, data: str | Path, base: str = "efficientnet_lite0", epochs: int | None = None, key: str | None = None,
    dim: int | None = None, seed: int = 0, activate: bool = False, within_root: bool = False,
) -> dict[str, object]:  # fmt: skip
    """Check what can be checked at once - the key, the settings, and that the data holds
    labelled images of at least two classes - and return the run's fields."""
    from search.datasets import MIN_PER_CLASS, dataset_load
    from search.registry import MODELS, TRAINABLE_BASES

    if base not in TRAINABLE_BASES:
        raise ServiceError("invalid_base", f"base must be one of {', '.join(TRAINABLE_BASES)}.", field="base")
    if not key:
        key = f"{base}_ft_{timezone.now():%Y%m%d_%H%M%S}"
    if not _TRAINED_KEY.match(key):
        raise ServiceError("invalid_key", "key: a lower-case letter, then lower-case letters, digits and '_' "
                           "(at most 40).", field="key")  # fmt: skip
    if key in MODELS or TrainedModel.objects.filter(key=key).exists():
        raise ServiceError("duplicate_key", f"An embedding model '{key}' exists already.", field="key",
                           status_code=409)  # fmt: skip
    config = {"base": base, "epochs": DEFAULT_TRAINING_EPOCHS if epochs is None else epochs, "seed": seed}
    if not 1 <= config["epochs"] <= 200:
        raise ServiceError("invalid_epochs", "epochs must be between 1 and 200.", field="epochs")
    if dim is not None:
        if not 16 <= dim <= 2048:
            raise ServiceError("invalid_dim", "dim must be between 16 and 2048.", field="dim")
        config["dim"] = dim
    source = _training_source(data, within_root=within_root)
    items = dataset_load(source)
    counts = Counter(item.label for item in items)
    usable = [label for label, count in counts.items() if count >= MIN_PER_CLASS]
    if len(usable) < 2:
        raise ServiceError("too_few_classes", f"Training needs at least 2 classes of {MIN_PER_CLASS} or more images "
                           f"(one each for training, validation and test); the data has {len(usable)}.",
                           field="data")  # fmt: skip
    return {"key": key, "base": base, "source": source, "config": config, "activate_when_done": activate}


def model_training_create(**options: object) -> TrainedModel:
    """Record a training run (queued), after ``model_training_validate``."""
    return training_run_create(TrainedModel, fields=model_training_validate(**options), what="An embedding model")


def model_training_start(**options: object) -> TrainedModel:
    """Record a training run and queue it for a worker (queue ``embed``)."""
    with transaction.atomic():
        trained = model_training_create(**options)
        transaction.on_commit(lambda: task_send(TRAIN_TASK, trained.pk), robust=True)
    return trained


def _trained_update(trained_id: int, **fields: object) -> None:
    training_run_touch(TrainedModel, pk=trained_id, **fields)


def model_training_run(*, trained_id: int) -> TrainedModel | None:
    """Train a queued model (``simsite.training_runs``: claimed once, failed with the reason
    whatever goes wrong): split the data by item, fine-tune, measure the test split against the
    base model, save the weights and plots and register the model (activating it if asked,
    once its vectors are built)."""
    return training_run_execute(TrainedModel, pk=trained_id, first_message="reading the images", train=_model_train)


def _model_train(trained: TrainedModel, saved: list[str]) -> None:
    from search import training
    from search.datasets import dataset_fingerprint, dataset_load, dataset_split
    from search.embedders import get_embedder
    from search.evaluation import retrieval_metrics
    from search.plots import confusion_plot, training_plot

    items = dataset_load(trained.source)
    fingerprint = dataset_fingerprint(items)
    config = training.TrainingConfig(**trained.config)
    splits = dataset_split(items, seed=config.seed)

    curves: dict[str, list[float]] = {}

    def progress(stage: str, fraction: float, measured: dict[str, float]) -> None:
        fields: dict[str, object] = {}
        if stage == "prepare":
            share, message = 0.35 * fraction, f"preparing augmented copies ({fraction:.0%})"
        else:
            for name, value in measured.items():
                if name != "epoch":
                    curves.setdefault(name, []).append(round(value, 4))
            fields["curves"] = curves  # per-epoch figures while it trains
            share = 0.35 + 0.55 * fraction
            message = (
                f"epoch {int(measured['epoch'])}/{config.epochs}: loss {measured['loss']:.3f}, validation "
                f"accuracy {measured['val_accuracy']:.3f}, mAP@10 {measured['val_map@10']:.3f}"
            )
        _trained_update(trained.pk, progress=round(share, 4), message=message[:300], **fields)

    result = training.train(
        [item.read for item in splits["train"]], [item.label for item in splits["train"]],
        [item.read for item in splits["val"]], [item.label for item in splits["val"]],
        config=config, progress=progress,
    )  # fmt: skip
    _trained_update(trained.pk, progress=0.92, message="measuring the held-out test split")
    config = result.config  # with the input size chosen from the data
    base = model_spec_get(config.base)
    spec = ModelSpec(key=trained.key, dim=config.dim, architecture=base.architecture, weights="",
                     description="", input_size=config.input_size, mean=base.mean, std=base.std,
                     kind="trained", base=config.base, classes=tuple(result.classes))  # fmt: skip
    embedder = training.trained_embedder(result, spec)
    test = [item for item in splits["test"] if item.label in result.classes]
    datas, labels = [], []
    for item in test:
        try:
            datas.append(item.read())
        except OSError:
            continue
        labels.append(item.label)
    vectors = embedder.embed_encoded(datas)
    kept = [i for i, vector in enumerate(vectors) if not isinstance(vector, Exception)]
    labels = [labels[i] for i in kept]
    datas = [datas[i] for i in kept]
    test_vectors = np.stack([vectors[i] for i in kept])
    test_metrics = retrieval_metrics(test_vectors, labels)
    base_metrics = retrieval_metrics(np.stack(get_embedder(base).embed_encoded(datas)), labels)
    confusion = training.confusion_matrix(embedder, test_vectors, labels, result.classes)

    folder = trained.files_folder()
    saved.append(default_storage.save(f"{folder}/weights.pt", ContentFile(training.weights_file(result))))
    plots = {
        "training": training_plot(result.curves, best_epoch=result.best_epoch, key=trained.key),
        "confusion": confusion_plot(confusion, result.classes, key=trained.key),
    }
    plot_names = {}
    for name, png in plots.items():
        plot_names[name] = default_storage.save(f"{folder}/{name}.png", ContentFile(png))
        saved.append(plot_names[name])
    dataset = "the catalog" if trained.source == CATALOG else Path(trained.source).name
    metrics = {
        "dataset": dataset,
        "split": {name: len(members) for name, members in splits.items()},
        "test": test_metrics["overall"],
        "test_by_class": test_metrics["by_class"],
        "base_test": base_metrics["overall"],
        "base_test_by_class": base_metrics["by_class"],
        "test_accuracy": round(float(np.trace(confusion) / max(confusion.sum(), 1)), 4),
        "confusion": confusion.tolist(),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.curves.get("loss", [])),
        "training_images_per_second": round(result.images_per_second, 1),
        "device": str(embedder.device),
        "embedding": f"hidden layer, {config.dim}-d, L2-normalised (cosine classifier)",
    }
    with transaction.atomic():
        TrainedModel.objects.filter(pk=trained.pk).update(
            status=TrainedModel.Status.SUCCEEDED, progress=1.0, message="", dim=config.dim,
            classes=result.classes, config=asdict(config), metrics=metrics, curves=result.curves,
            weights=saved[0], plots=plot_names, fingerprint=fingerprint, seconds=round(result.seconds, 1),
            finished_at=timezone.now(), updated_at=timezone.now(),
        )  # fmt: skip
        if trained.activate_when_done:
            # Searches move to it once its vectors are built, with no gap (index job, then switch).
            # Robust: the model has succeeded once this commits; a failure here is logged (the
            # model can be indexed and activated by hand) and must not fail the run.
            transaction.on_commit(lambda: index_job_create(collection=Collection.ALL, model=trained.key,
                                                           activate_when_done=True), robust=True)  # fmt: skip


def model_training_fail(*, trained_id: int, error: str) -> None:
    training_run_fail(TrainedModel, pk=trained_id, error=error)


def trained_model_delete(*, trained: TrainedModel) -> None:
    """Delete a model trained here, its vectors, index and files. Refused for the active model,
    a model being indexed, and a run in progress: checked with its row locked, so an activation
    or an index job of it under way commits first and is seen, or waits and finds it gone."""
    with transaction.atomic():
        trained = TrainedModel.objects.select_for_update().filter(pk=trained.pk).first()
        if trained is None:
            return  # deleted meanwhile
        if trained.key == active_model_key():
            raise ServiceError("model_active", f"'{trained.key}' is the active model; activate another one first.",
                               status_code=409)  # fmt: skip
        if trained.status == TrainedModel.Status.RUNNING:
            raise ServiceError("model_training", f"'{trained.key}' is being trained; wait for it to end.",
                               status_code=409)  # fmt: skip
        if IndexJob.objects.filter(model=trained.key).exclude(state__in=IndexJob.TERMINAL).exists():
            raise ServiceError("model_indexing", f"'{trained.key}' is being indexed; cancel the job first.",
                               status_code=409)  # fmt: skip
        names = [name for name in [trained.weights, *trained.plots.values()] if name]
        Embedding.objects.filter(model=trained.key).delete()
        EmbeddingFailure.objects.filter(model=trained.key).delete()
        SearchTuning.objects.filter(model=trained.key).delete()  # a new model of that name has another graph
        SearchQuerySample.objects.filter(model=trained.key).delete()
        trained.delete()
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(trained.key)}")
        _delete_after_commit(names)


def _delete_after_commit(names: Sequence[str]) -> None:
    """Delete these stored files once the transaction commits, each on its own: a file that
    cannot be deleted is logged and left to the orphan sweep, never failing what committed."""
    for name in names:
        transaction.on_commit(lambda name=name: default_storage.delete(name), robust=True)


def trained_models_reconcile() -> dict[str, int]:
    """Re-send training runs whose message was lost; fail those whose worker stopped
    reporting (killed, out of memory). Part of the periodic reconciler."""
    stalled, resent = training_runs_reconcile(
        TrainedModel, stall_seconds=settings.EMBEDDING_TRAINING_STALL_SECONDS, task=TRAIN_TASK, queue="embed"
    )
    return {"training_resent": resent, "training_stalled": stalled}
