"""Celery tasks for signatures: thin, taking ids (the work is in signatures/services/encoders.py)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from signatures.services import encoders as services

logger = logging.getLogger(__name__)


@shared_task(
    queue="embed", acks_late=False,
    soft_time_limit=settings.SIGNATURE_TRAINING_TIME_LIMIT, time_limit=settings.SIGNATURE_TRAINING_TIME_LIMIT + 120,
)  # fmt: skip
def encoder_train(encoder_id: int) -> None:
    """Train a queued signature encoder (queue ``embed``: GPU workers). A second delivery
    finds it claimed and does nothing; a worker killed mid-run is found by ``reconcile``."""
    services.encoder_training_run(encoder_id=encoder_id)


@shared_task(queue="default", soft_time_limit=120)
def reconcile() -> dict[str, int]:
    """Periodic (Celery beat): see ``services.encoder_reconcile``."""
    report = services.encoder_reconcile()
    if any(report.values()):
        logger.info("reconcile signatures: %s", report)
    return report
