from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from tests.images import png_bytes

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """A read-replica alias, a mirror of the test database (so tests may open it), which
    tests/test_replicas.py points at a real standby; unused (no DATABASE_REPLICAS) elsewhere."""
    from django.conf import settings

    settings.DATABASES.setdefault("replica_0", {**settings.DATABASES["default"], "TEST": {"MIRROR": "default"}})
    _redis_of_this_worker(settings)


def _redis_of_this_worker(settings) -> None:
    """Under pytest-xdist (`make test-fast`), each worker process gets its own test database
    from pytest-django and here its own two Redis databases (broker, cache): one worker's
    cache.clear() or queue count never sees another's."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    from simsite.env import redis_url_with_db

    number = int(worker[2:])
    if 2 * number + 1 > 15:  # Redis has databases 0-15
        raise pytest.UsageError("at most 8 pytest-xdist workers: each takes two of Redis's 16 databases")
    url = redis_url_with_db(settings.REDIS_URL, offset=2 * number)
    os.environ["REDIS_URL"] = url  # child processes (manage.py, workers) read the same ones
    os.environ.pop("CACHE_URL", None)  # ...and the cache beside it, not one shared by every worker
    settings.REDIS_URL = settings.CELERY_BROKER_URL = settings.CELERY_RESULT_BACKEND = url
    settings.CACHES["default"]["LOCATION"] = redis_url_with_db(url, offset=1)


# Test tiers (README, "Testing"): `make test` runs them all, `make test-fast` leaves out these.
# Browser tests are the page tests; worker tests use the `workers` fixture or start their own
# processes; slow ones are named here.
WORKER_MODULES = {"tests/search/test_workers_reliability.py"}
SLOW_MODULES = {
    "tests/test_api_contract.py",  # the schema fuzzer
    "tests/pages/test_gallery_scale.py",  # the 50,000-image gallery
    "tests/search/test_quality.py",  # the real model's retrieval quality
    "tests/test_replicas.py",  # a streaming standby PostgreSQL server per test
}  # and tests marked @pytest.mark.slow where they are (the end-to-end trainings)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        if module.startswith("tests/pages/"):
            item.add_marker(pytest.mark.browser)
        if module in WORKER_MODULES or "workers" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.workers)
        if module in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def private_media_root(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.PRIVATE_MEDIA_ROOT


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Users are made and logged in all over the suite; PBKDF2's deliberate slowness would
    cost seconds per test and tests nothing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def clear_cache() -> Iterator[None]:
    from search.selectors.caches import search_caches_forget
    from simsite import apis

    cache.clear()
    search_caches_forget()  # the search plan's per-process counts: each test has its own data
    apis._workers_seen.clear()  # the workers health last counted (per process): each test has its own
    yield
    cache.clear()
    search_caches_forget()


@pytest.fixture
def child_env(settings) -> dict[str, str]:
    """Environment for a child process (manage.py, a Celery worker) that must see this test's
    database and media folder."""
    db = connection.settings_dict
    credentials = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "")
    host = quote(db["HOST"] or "localhost", safe="") + (f":{db['PORT']}" if db.get("PORT") else "")
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{credentials}@{host}/{db['NAME']}",
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "PRIVATE_MEDIA_ROOT": str(settings.PRIVATE_MEDIA_ROOT),
    }


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_user(django_user_model):
    """An administrator: a superuser has every permission (tests of one role use ``role_user``)."""
    return django_user_model.objects.create_superuser(username="staff", password="pw-staff-123")


@pytest.fixture
def role_user():
    """``role_user("name", "catalog_editor", ...)``: a user in those groups (roles), password
    ``s3cret-pass`` (``tests.factories.UserFactory``). The groups come from the migration, made
    again after a flush."""
    from tests.factories import UserFactory

    def make(username: str, *roles: str, **fields: object):
        return UserFactory(username=username, roles=roles, **fields)

    return make


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(staff_user)
    return client


Route = Callable[[BaseHTTPRequestHandler], None]


class LocalServer:
    """A real HTTP server on 127.0.0.1 with routes the test registers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(self.path)
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"

    def add_bytes(self, path: str, body: bytes, content_type: str = "image/png") -> str:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

        self.routes[path] = route
        return self.url(path)

    def add_redirect(self, path: str, location: str) -> str:
        def route(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        self.routes[path] = route
        return self.url(path)


@pytest.fixture
def local_server(settings) -> Iterator[LocalServer]:
    """Serves on 127.0.0.1; 'localhost' is allow-listed so fetches by that name go through."""
    settings.IMAGE_FETCH_ALLOWED_HOSTS = ["localhost"]
    server = LocalServer()
    server.thread.start()
    server.add_bytes("/image.png", png_bytes(seed=7))
    yield server
    server.server.shutdown()
    server.server.server_close()


class Workers:
    """Real Celery worker processes (solo pool, both queues) on this test's database."""

    def __init__(self, env: dict[str, str]):
        self.env = {
            **env,
            # Redeliver a dead worker's task within seconds, not the production hour.
            "CELERY_VISIBILITY_TIMEOUT": "4",
            "CELERY_UNACKED_RESTORE_INTERVAL": "1",
            "CELERY_UNACKED_RESTORE_THROTTLE": "1",
            # A worker killed while it held the restore lock (it restores every second here)
            # must not block the next worker's restores for kombu's default 5 minutes.
            "CELERY_UNACKED_MUTEX_EXPIRE": "3",
            # Leave a core to the test process that watches the worker.
            "EMBEDDING_TORCH_THREADS": "1",
        }
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str = "w1", *, wait: bool = True) -> subprocess.Popen:
        """Start a worker; with ``wait`` return once it answers a ping (a solo worker busy
        with a task answers only after it)."""
        from simsite.celery import app

        hostname = f"{name}-{os.getpid()}@test"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "simsite", "worker", "-Q", "query,embed,default", "--pool", "solo",
             "--hostname", hostname, "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            cwd=ROOT, env=self.env,
        )  # fmt: skip
        self.processes.append(process)
        if not wait:
            return process
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[hostname], timeout=0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Celery worker {hostname} did not start")
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def workers(child_env) -> Iterator[Workers]:
    from simsite.celery import app

    app.control.purge()  # tasks left by earlier tests name rows that no longer exist
    pool = Workers(child_env)
    yield pool
    pool.stop_all()


def wait_for(predicate: Callable[[], bool], timeout: float = 120, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
