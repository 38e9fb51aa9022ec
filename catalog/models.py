from __future__ import annotations

from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from simsite.jobs import Job


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=255)
    category = models.CharField(max_length=100, db_index=True)
    price = models.DecimalField(max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))])
    # Content-addressed: the name is derived from the sha256 of the bytes.
    image = models.FileField(max_length=255)
    source_url = models.URLField(max_length=2048, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [models.CheckConstraint(condition=models.Q(price__gte=0), name="product_price_not_negative")]

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class GalleryImage(models.Model):
    file = models.FileField(max_length=255)
    original_filename = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    uploaded_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-uploaded_at", "-id"]

    def __str__(self) -> str:
        return self.original_filename


class ProductImport(Job):
    """A CSV import: the stored file, its progress and the per-row report (its state, counters
    and timestamps: ``simsite.jobs.Job``; ``done``: data rows processed).

    Runs on the ``default`` queue (``catalog.tasks.product_import_run``). The runner holds a
    lease it renews with every chunk, so an import whose worker died is resumed (from
    ``done``) by the reconciler, never run twice at once.
    """

    file = models.FileField(max_length=255)
    filename = models.CharField(max_length=255)
    total = models.PositiveIntegerField(null=True, blank=True)  # data rows, once counted
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    lease_until = models.DateTimeField(null=True, blank=True)
    runner = models.CharField(max_length=32, blank=True)  # the lease holder's token
    dispatched_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"import {self.pk} of {self.filename} ({self.state})"


class ProductImportFailure(models.Model):
    """One CSV record that was not imported, and why."""

    product_import = models.ForeignKey(ProductImport, on_delete=models.CASCADE, related_name="failures")
    row = models.PositiveIntegerField()  # the CSV record number; the header is 1
    code = models.CharField(max_length=64)
    error = models.CharField(max_length=500)

    class Meta:
        ordering = ["row"]
        constraints = [models.UniqueConstraint(fields=["product_import", "row"], name="import_failure_row")]

    def __str__(self) -> str:
        return f"row {self.row}: {self.error}"
