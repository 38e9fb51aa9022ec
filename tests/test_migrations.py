"""Migrations keep the data: from the schema before each app's latest migrations, with a row in
every table of the project's apps, forward to the latest, every row still there.

The models are the migrations' historical ones, filled field by field (``_Rows``), so the test
follows the migrations as they are added: nothing here names a model or a migration. Plain
``MigrationExecutor``, not django-test-migrations: its ``Migrator`` starts from an empty database
and cuts the full plan at the last target, which leaves other apps' later migrations applied.
About 3 s.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import uuid
from typing import Any

import pytest
from django.db import connection, models
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.graph import MigrationGraph
from django.utils import timezone
from pgvector.django import VectorField

APPS = ("accounts", "catalog", "search", "signatures")
Node = tuple[str, str]

pytestmark = pytest.mark.django_db(transaction=True)  # migrations run outside a test transaction


def _before_latest(graph: MigrationGraph) -> tuple[list[tuple[str, str | None]], set[Node]]:
    """Per app, the migration before its latest one, where no later migration of any app is
    still needed (a migration depending on a latest one is undone with it); and what is undone."""
    latest = [node for node in graph.leaf_nodes() if node[0] in APPS]
    undone: set[Node] = set().union(*(graph.backwards_plan(node) for node in latest))
    targets: list[tuple[str, str | None]] = []
    for app in APPS:
        kept = [node for node in graph.nodes if node[0] == app and node not in undone]
        targets.append((app, max(kept)[1] if kept else None))  # migrations are numbered
    return targets, undone


class _Rows:
    """One row per historical model, made with a value in every field that needs one."""

    def __init__(self, apps: Any) -> None:
        self.apps = apps
        self.numbers = itertools.count(1)
        self.made: dict[str, int] = {}
        self.making: set[str] = set()

    def of(self, model: type[models.Model]) -> int | None:
        label = model._meta.label
        if label in self.making:
            return None  # a model that refers to itself: its first row refers to none
        if label not in self.made:
            self.making.add(label)
            self.made[label] = model._base_manager.create(**self._values(model)).pk
            self.making.discard(label)
        return self.made[label]

    def _values(self, model: type[models.Model]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        item_columns = {"product", "gallery_image"} <= {field.name for field in model._meta.concrete_fields}
        for field in model._meta.concrete_fields:
            if field.primary_key and field.auto_created or getattr(field, "auto_now", False):
                continue
            if item_columns and field.name == "gallery_image":
                continue  # a row about an item names a product or a gallery image, not both
            if field.is_relation:
                values[field.attname] = self.of(field.related_model)
            elif not (field.has_default() or field.null or getattr(field, "auto_now_add", False)):
                values[field.attname] = self._value(field)
        return values

    def _value(self, field: models.Field) -> Any:
        n = next(self.numbers)
        if field.choices:
            return field.choices[0][0]
        if isinstance(field, VectorField):
            return [0.5] * (field.dimensions or 4)
        if isinstance(field, models.FileField):
            return f"migrated/{n}.png"
        if isinstance(field, models.BooleanField):
            return False
        if isinstance(field, models.IntegerField | models.FloatField):
            return n
        if isinstance(field, models.DecimalField):
            return decimal.Decimal(n)
        if isinstance(field, models.DateTimeField):
            return timezone.now()
        if isinstance(field, models.DurationField):
            return datetime.timedelta(seconds=n)
        if isinstance(field, models.UUIDField):
            return uuid.uuid4()
        if isinstance(field, models.GenericIPAddressField):
            return "127.0.0.1"
        if isinstance(field, models.JSONField):
            return {}
        if isinstance(field, models.CharField | models.TextField):
            return f"{n:064d}"[-(field.max_length or 64) :]  # fits a sha256, unique
        if field.get_internal_type() == "ArrayField":
            return []
        raise NotImplementedError(f"no value for {field.model._meta.label}.{field.name} ({type(field).__name__})")


def test_migrating_from_before_the_latest_migrations_keeps_a_row_in_every_table():
    executor = MigrationExecutor(connection)
    targets, undone = _before_latest(executor.loader.graph)
    executor.migrate(targets)
    old_apps = executor.loader.project_state(targets).apps
    rows = _Rows(old_apps)
    tables = [
        model
        for app in APPS
        for model in old_apps.get_app_config(app).get_models(include_auto_created=True)
        if not model._meta.proxy
    ]
    for model in tables:
        rows.of(model)

    executor = MigrationExecutor(connection)  # what is applied, read again
    executor.migrate(executor.loader.graph.leaf_nodes())
    new_apps = executor.loader.project_state(executor.loader.graph.leaf_nodes()).apps
    again = MigrationExecutor(connection)
    assert again.migration_plan(again.loader.graph.leaf_nodes()) == []  # the latest schema, all applied
    missing = []
    for label, pk in rows.made.items():
        app_label, name = label.split(".")
        if app_label not in APPS:
            continue
        model = new_apps.get_model(app_label, name)  # a model the latest migrations removed fails here
        if not model._base_manager.filter(pk=pk).exists():
            missing.append(label)
    assert missing == [], f"rows lost by {sorted(undone)}"
