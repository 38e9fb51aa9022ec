from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.csv_import import csv_row_count, products_import_csv
from simsite.errors import ServiceError


class Command(BaseCommand):
    help = "Import products from a CSV file with header id,name,category,price,image_url (upsert by sku)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--no-progress", action="store_true", help="Do not draw a progress bar.")

    def handle(self, *args: Any, file: Path, no_progress: bool, **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file} is not a file")
        data = file.read_bytes()
        try:
            total = csv_row_count(data=data)
            with tqdm(total=total, unit="row", disable=no_progress, file=sys.stderr) as bar:
                report = products_import_csv(data=data, progress=lambda: bar.update(1))
        except ServiceError as error:
            raise CommandError(error.message) from None
        for failure in report.failed:
            self.stderr.write(f"row {failure['row']}: {failure['error']}")
        summary = f"{report.created} created, {report.updated} updated, {len(report.failed)} failed"
        self.stdout.write(self.style.SUCCESS(summary) if not report.failed else self.style.WARNING(summary))
