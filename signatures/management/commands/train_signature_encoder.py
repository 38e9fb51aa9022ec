from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import AuditEntry
from accounts.services import audit_record
from signatures.datasets import LAYOUTS, source_parse
from signatures.models import SignatureEncoder
from signatures.services.encoders import (
    DEFAULT_EPOCHS,
    DEFAULT_MINUTES,
    encoder_training_create,
    encoder_training_run,
    encoder_training_start,
)
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Train a writer-independent signature encoder on one or several sources of signatures (each split by "
        "writer into training and validation writers, seeded), calibrate it on the validation writers and "
        "register it; --activate makes compare and verify use it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--data", action="append", required=True, metavar="LAYOUT:DIR",
                            help=f"a folder of signatures and its layout ({', '.join(LAYOUTS)}); repeat it to train "
                                 "on several sources at once")  # fmt: skip
        parser.add_argument("--layout", choices=LAYOUTS, help="the layout of each --data given as a bare DIR")
        parser.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_EPOCHS}")
        parser.add_argument(
            "--minutes",
            type=float,
            default=None,
            help=f"time budget: stop training after this many minutes (default {DEFAULT_MINUTES:g}; the best epoch "
            "so far is kept)",
        )
        parser.add_argument("--key", help="the encoder's key (default: signet-<date>-<time>)")
        parser.add_argument("--loss", choices=["triplet", "contrastive"], default="triplet")
        parser.add_argument("--seed", type=int, default=0, help="writer split, batches and augmentation")
        parser.add_argument("--activate", action="store_true", help="make it the active encoder when trained")
        parser.add_argument("--background", action="store_true",
                            help="queue it for a Celery worker (queue 'embed') instead of training here")  # fmt: skip

    def handle(self, *args: Any, data: list[str] | str, layout: str | None, epochs: int | None, minutes: float | None,
               key: str | None, loss: str, seed: int, activate: bool, background: bool,
               **options: Any) -> None:  # fmt: skip
        try:
            texts = [data] if isinstance(data, str) else data  # call_command(data="DIR") passes a string
            sources = [source_parse(text, layout=layout) for text in texts]
            options_ = {"sources": sources, "epochs": epochs, "minutes": minutes, "key": key, "activate": activate,
                        "loss": loss, "seed": seed}  # fmt: skip
            encoder = (encoder_training_start if background else encoder_training_create)(**options_)
        except ServiceError as error:
            raise CommandError(error.message) from None
        audit_record(user=None, action=AuditEntry.Action.ENCODER_TRAIN, target=f"signature encoder {encoder.key}",
                     detail={"sources": encoder.sources_text(), "via": "command line"})  # fmt: skip
        if background:
            self.stdout.write(f"queued {encoder.key}; follow it in the admin or GET /api/v1/signatures/models/")
            return
        self.stderr.write(f"training {encoder.key} on {encoder.sources_text()}, {encoder.config['epochs']} epochs")
        encoder = encoder_training_run(encoder_id=encoder.pk)
        if encoder.status != SignatureEncoder.Status.SUCCEEDED:
            raise CommandError(f"training {encoder.key} failed: {encoder.message}")
        metrics = {k: v for k, v in encoder.metrics.items() if k not in ("training_writers", "validation_writers")}
        self.stdout.write(json.dumps({"key": encoder.key, "threshold": encoder.threshold, "seconds": encoder.seconds,
                                      "active": activate, "metrics": metrics}, indent=2))  # fmt: skip
