"""The embedding models: pretrained and trained-here specs, the active model, and how many
items each model covers."""

from __future__ import annotations

from django.conf import settings
from django.db.models import F, QuerySet

from search.datasets import CATALOG
from search.items import KINDS
from search.models import ActiveModel, Embedding, TrainedModel
from search.registry import MODELS, ModelSpec
from search.selectors.caches import ACTIVE_MODEL, remembered
from simsite.errors import ServiceError
from simsite.files import shown_path


def trained_model_spec(row: TrainedModel) -> ModelSpec:
    base = MODELS[row.base]
    return ModelSpec(
        key=row.key, dim=row.dim, architecture=f"{base.architecture} fine-tuned", weights=row.weights,
        description=f"{base.key} fine-tuned here on {row.metrics.get('dataset') or trained_model_source(trained=row)}: "
        f"{len(row.classes)} "
        f"classes, {row.dim}-d hidden layer", input_size=row.config.get("input_size") or base.input_size,
        mean=base.mean, std=base.std,
        kind="trained", base=row.base, classes=tuple(row.classes),
    )  # fmt: skip


def model_spec_get(key: str) -> ModelSpec:
    """The embedding model ``key``: pretrained, or trained here (and trained successfully)."""
    if key in MODELS:
        return MODELS[key]
    row = TrainedModel.objects.filter(key=key, status=TrainedModel.Status.SUCCEEDED).first()
    if row is None:
        known = ", ".join([*MODELS, *TrainedModel.objects.filter(status=TrainedModel.Status.SUCCEEDED)
                           .values_list("key", flat=True)])  # fmt: skip
        raise ServiceError("unknown_model", f"Unknown embedding model '{key[:100]}'; known: {known}.", field="model")
    return trained_model_spec(row)


def model_specs() -> list[ModelSpec]:
    """Every embedding model: the pretrained ones, then those trained here, oldest first."""
    trained = TrainedModel.objects.filter(status=TrainedModel.Status.SUCCEEDED).order_by("created_at", "id")
    return [*MODELS.values(), *(trained_model_spec(row) for row in trained)]


def trained_model_get(*, key: str) -> TrainedModel:
    return TrainedModel.objects.get(key=key)


def trained_model_list() -> QuerySet[TrainedModel]:
    return TrainedModel.objects.all()


def trained_model_source(*, trained: TrainedModel) -> str:
    """Where it was trained, as users may see it: 'catalog', or the folder relative to the
    training root (never the server's path)."""
    if trained.source == CATALOG:
        return CATALOG
    return shown_path(trained.source, roots=[settings.EMBEDDING_TRAINING_ROOT])


def active_model_key(*, recent: bool = False) -> str:
    """The model searches use. ``recent``: as this process read it up to a second ago (the
    search path: one query less per search; ``active_model_set`` forgets it in its process at
    once, and a switch reaches the other processes within that second)."""

    def read() -> str:
        row = ActiveModel.objects.filter(pk=1).values_list("key", flat=True).first()
        return row or settings.EMBEDDING_DEFAULT_MODEL

    return remembered(ACTIVE_MODEL, (), read, seconds=1) if recent else read()


def index_status() -> list[dict[str, object]]:
    """Coverage per collection for the active model and every model with vectors."""
    keys = [active_model_key(), *sorted(set(Embedding.objects.values_list("model", flat=True).distinct()))]
    return [row for key in dict.fromkeys(keys) for row in model_coverage(model=key)]


def model_coverage(*, model: str) -> list[dict[str, object]]:
    """Per collection: items, items with a current vector of ``model``, and the difference."""
    rows = []
    for kind in KINDS.values():
        items = kind.model.objects.count()
        embedded = Embedding.objects.filter(model=model, **{f"{kind.name}__sha256": F("sha256")}).count()
        rows.append(
            {
                "collection": kind.collection,
                "model": model,
                "items": items,
                "embedded": embedded,
                "missing": items - embedded,
            }
        )
    return rows


def embedding_model_list() -> list[dict[str, object]]:
    active = active_model_key()
    result = []
    metrics = dict(TrainedModel.objects.filter(status=TrainedModel.Status.SUCCEEDED).values_list("key", "metrics"))
    for spec in model_specs():
        coverage = model_coverage(model=spec.key)
        result.append(
            {
                "key": spec.key,
                "dim": spec.dim,
                "active": spec.key == active,
                "kind": spec.kind,
                "base": spec.base or None,
                "description": spec.description,
                "weights": spec.weights,
                "embedded": sum(int(row["embedded"]) for row in coverage),
                "missing": sum(int(row["missing"]) for row in coverage),
                "metrics": _headline(metrics.get(spec.key, {})),
            }
        )
    return result


def _headline(metrics: dict[str, object]) -> dict[str, object]:
    """A trained model's test-split figures, without the per-class detail."""
    return {name: metrics[name] for name in ("dataset", "test", "base_test", "test_accuracy") if name in metrics}
