from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import AuditEntry
from accounts.services import audit_record
from search.models import TrainedModel
from search.registry import TRAINABLE_BASES
from search.services.trained_models import (
    DEFAULT_TRAINING_EPOCHS,
    model_training_create,
    model_training_run,
    model_training_start,
)
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Fine-tune a pretrained model as a classifier of labelled images - the catalog's products by category, "
        "or a folder (labels.csv with path,class, or a sub-folder per class) - and register its last hidden layer "
        "as an embedding model. The data is split by item (70/15/15, stratified, seeded); the report compares "
        "the held-out test split with the base model's."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--from", dest="source", required=True, help="'catalog' or a folder of labelled images")
        parser.add_argument("--base", choices=TRAINABLE_BASES, default="efficientnet_lite0")
        parser.add_argument("--epochs", type=int, default=None,
                            help=f"at most this many (default {DEFAULT_TRAINING_EPOCHS}; stops early)")  # fmt: skip
        parser.add_argument("--key", help="the model's key (default: <base>_ft_<date>_<time>)")
        parser.add_argument("--dim", type=int, default=None, help="embedding dimension (default 256)")
        parser.add_argument("--seed", type=int, default=0, help="split, batches and augmentation")
        parser.add_argument("--activate", action="store_true",
                            help="index everything with it in the background, then make searches use it")  # fmt: skip
        parser.add_argument("--background", action="store_true",
                            help="queue it for a Celery worker (queue 'embed') instead of training here")  # fmt: skip

    def handle(self, *args: Any, source: str, base: str, epochs: int | None, key: str | None, dim: int | None,
               seed: int, activate: bool, background: bool, **options: Any) -> None:  # fmt: skip
        fields = {"data": source, "base": base, "epochs": epochs, "key": key, "dim": dim, "seed": seed,
                  "activate": activate}  # fmt: skip
        try:
            if background:
                trained = model_training_start(**fields)
                audit_record(user=None, action=AuditEntry.Action.MODEL_TRAIN, target=f"embedding model {trained.key}",
                             detail={"base": base, "via": "command line"})  # fmt: skip
                self.stdout.write(f"queued {trained.key}; follow it in the admin or GET /api/v1/models/trained/")
                return
            trained = model_training_create(**fields)
        except ServiceError as error:
            raise CommandError(error.message) from None
        audit_record(user=None, action=AuditEntry.Action.MODEL_TRAIN, target=f"embedding model {trained.key}",
                     detail={"base": base, "via": "command line"})  # fmt: skip
        self.stderr.write(f"training {trained.key} from {source} ({base}, at most {trained.config['epochs']} epochs)")
        trained = model_training_run(trained_id=trained.pk)
        if trained.status != TrainedModel.Status.SUCCEEDED:
            raise CommandError(f"training {trained.key} failed: {trained.message}")
        metrics = trained.metrics
        self.stdout.write(json.dumps({
            "key": trained.key, "dim": trained.dim, "classes": trained.classes, "seconds": trained.seconds,
            "split": metrics["split"], "best_epoch": metrics["best_epoch"], "test_accuracy": metrics["test_accuracy"],
            "test": metrics["test"], "base_test": metrics["base_test"],
            "test_precision@10_by_class": {label: values["precision@10"]
                                           for label, values in metrics["test_by_class"].items()},
            "base_test_precision@10_by_class": {label: values["precision@10"]
                                                for label, values in metrics["base_test_by_class"].items()},
            "activating": activate,
        }, indent=2))  # fmt: skip
