"""Celery tasks of the catalog: thin, taking ids (see catalog/csv_import.py for the work)."""

from __future__ import annotations

from celery import shared_task

from catalog import csv_import


# A big import runs for hours; its lease, not a time limit, decides when it is resumed.
@shared_task(acks_late=True, reject_on_worker_lost=True, queue="default", soft_time_limit=86_400, time_limit=86_460)
def product_import_run(import_id: int) -> None:
    """Run or resume a CSV import (its lease stops two deliveries from running at once)."""
    csv_import.product_import_run(import_id=import_id)
