"""The signature encoder's single data folder becomes a list of sources (migration 0004)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)  # migrations run outside a test transaction


def _migrate(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def test_each_encoder_keeps_its_folder_as_its_one_source():
    old = _migrate(("signatures", "0003_private_files"))
    old.get_model("signatures", "SignatureEncoder").objects.create(
        key="bank-v1", data="/srv/scans", layout="cedar", status="succeeded"
    )
    try:
        new = _migrate(("signatures", "0004_encoder_sources"))
        encoder = new.get_model("signatures", "SignatureEncoder").objects.get(key="bank-v1")
        assert encoder.sources == [{"layout": "cedar", "data": "/srv/scans"}]
        back = _migrate(("signatures", "0003_private_files"))
        encoder = back.get_model("signatures", "SignatureEncoder").objects.get(key="bank-v1")
        assert (encoder.layout, encoder.data) == ("cedar", "/srv/scans")
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
