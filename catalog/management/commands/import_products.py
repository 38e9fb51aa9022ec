from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.csv_import import product_import_create, product_import_run
from catalog.models import ProductImport
from catalog.selectors import product_import_failures, product_import_get
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = (
        "Import products from a CSV file with header id,name,category,price,image_url (upsert by sku). "
        "The import is the same job the API makes, run here with a progress bar."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, file: Path, no_progress: bool, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a file")
        try:
            with file.open("rb") as handle:
                job = product_import_create(upload=File(handle, name=file.name), dispatch=False)
        except ServiceError as error:
            raise CommandError(error.message) from None
        with tqdm(total=None, unit="row", disable=no_progress, file=sys.stderr) as bar:

            def progress(current: ProductImport) -> None:
                bar.total = current.total
                bar.n = current.done
                bar.refresh()

            product_import_run(import_id=job.pk, progress=progress)
        job = product_import_get(pk=job.pk)
        if job.state == ProductImport.State.RUNNING:
            raise CommandError(f"import {job.pk} is being run by a worker; follow it in the admin")
        failures = product_import_failures(product_import=job)
        for failure in failures:
            self.stderr.write(f"row {failure['row']}: {failure['error']}")
        summary = f"{job.created} created, {job.updated} updated, {len(failures)} failed"
        self.stdout.write(self.style.SUCCESS(summary) if not failures else self.style.WARNING(summary))
