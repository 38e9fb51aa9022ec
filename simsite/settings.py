"""simsite settings, driven by environment variables (see the README's configuration table)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from simsite.env import env_bool, env_choice, env_float, env_int, env_list, env_rate, env_str, redis_url_with_db

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-only-used-with-debug-on"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here: the docs work offline
    "axes",  # login lockout (accounts.backends)
    "accounts",
    "catalog",
    "search",
    "signatures",
    "web",  # the pages
    "legacy",  # the earlier tools' routes
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "simsite.uploads.RequestSizeMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # It turns a lockout found while logging in into the lockout page.
    "axes.middleware.AxesMiddleware",
    # A lost database connection under a view: 503 with Retry-After, not a 500.
    "simsite.outages.DatabaseOutageMiddleware",
]

ROOT_URLCONF = "simsite.urls"
WSGI_APPLICATION = "simsite.wsgi.application"
ASGI_APPLICATION = "simsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.access",
            ],
        },
    },
]

# PostgreSQL with pgvector everywhere, tests included. `make run` / `make test` start an
# embedded server and set DATABASE_URL when it is not set.
_database_url = env_str("DATABASE_URL")
if not _database_url:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Use `make run` / `make test` (they start an embedded "
        "PostgreSQL with pgvector) or point DATABASE_URL at a PostgreSQL server with pgvector."
    )
_database = dj_database_url.parse(_database_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0))
if _database["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(f"DATABASE_URL must be a PostgreSQL URL, got engine {_database['ENGINE']}")
DATABASES = {"default": _database}
# Read replicas (streaming standbys of the primary) for the read-only work: searches,
# duplicates, lists. simsite.replicas routes them; writes stay on the primary.
DATABASE_REPLICAS: list[str] = []
for _number, _url in enumerate(env_list("DATABASE_REPLICA_URLS", [])):
    _replica = dj_database_url.parse(_url, conn_max_age=_database["CONN_MAX_AGE"])
    if _replica["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"DATABASE_REPLICA_URLS must hold PostgreSQL URLs, got engine {_replica['ENGINE']}")
    # A replica that is down must not hold a request for long: it is skipped.
    _replica["OPTIONS"] = {**_replica.get("OPTIONS", {}), "connect_timeout": 2}
    _replica["TEST"] = {"MIRROR": "default"}  # in tests, a replica reads the test database
    DATABASES[f"replica_{_number}"] = _replica
    DATABASE_REPLICAS.append(f"replica_{_number}")
DATABASE_ROUTERS = ["simsite.replicas.ReplicaRouter"]
# Seconds a replica that failed is left out before it is tried again.
DATABASE_REPLICA_RETRY_SECONDS = env_int("DATABASE_REPLICA_RETRY_SECONDS", 30, minimum=1)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# The cache lives in its own Redis database (REDIS_URL's database + 1 unless CACHE_URL is
# set), so that clearing the cache never drops queued tasks. A cache that cannot be reached
# is a miss, not an error: uploads and searches keep answering while Redis is down.
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": env_str("CACHE_URL") or redis_url_with_db(REDIS_URL, offset=1),
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "simsite"),
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 2, "IGNORE_EXCEPTIONS": True},
    }
}
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True

# Celery: `embed` carries model work (GPU nodes), `query` the embedding of search queries
# (short-lived, never behind a reindex), `default` the rest.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", REDIS_URL)
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "search.tasks.embed_batch": {"queue": "embed"},
    "search.tasks.embed_query": {"queue": "query"},
    "signatures.tasks.encoder_train": {"queue": "embed"},
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 30 * 60, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 25 * 60, minimum=1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A request that queues work must not hang on a broker that is down: try briefly, then
# leave the work to the reconciler (the rows that describe it are already committed).
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
}
# A task whose worker died is redelivered after this many seconds (it must exceed the
# longest task: an embed batch takes seconds).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=1),
    # How often a worker looks for such abandoned tasks (seconds x throttle).
    "unacked_restore_interval": env_int("CELERY_UNACKED_RESTORE_INTERVAL", 10, minimum=1),
    "unacked_restore_throttle": env_int("CELERY_UNACKED_RESTORE_THROTTLE", 10, minimum=1),
    # A worker killed while it restores abandoned tasks leaves the restore lock held this long.
    "unacked_mutex_expire": env_int("CELERY_UNACKED_MUTEX_EXPIRE", 300, minimum=1),
    "socket_connect_timeout": 2,
}
# The reconciler (search.tasks.reconcile) runs on Celery beat: it re-sends work whose
# message was lost, ends stuck jobs, embeds items that lack vectors and prunes old jobs.
RECONCILE_INTERVAL_SECONDS = env_int("RECONCILE_INTERVAL_SECONDS", 30, minimum=1)
# How often beat looks for search indexes to tune again (SEARCH_TUNE_RECALL_PERCENT below).
SEARCH_TUNE_INTERVAL_SECONDS = env_int("SEARCH_TUNE_INTERVAL_SECONDS", 3600, minimum=60)
CELERY_BEAT_SCHEDULE = {
    "reconcile": {
        "task": "search.tasks.reconcile",
        "schedule": RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": RECONCILE_INTERVAL_SECONDS},
    },
    "reconcile-signatures": {
        "task": "signatures.tasks.reconcile",
        "schedule": RECONCILE_INTERVAL_SECONDS,
        "options": {"expires": RECONCILE_INTERVAL_SECONDS},
    },
    "search-tune": {
        "task": "search.tasks.search_tune_due",
        "schedule": SEARCH_TUNE_INTERVAL_SECONDS,
        "options": {"expires": SEARCH_TUNE_INTERVAL_SECONDS},
    },
}
CELERY_TASK_ALWAYS_EAGER = False
# /api/v1/health/ broadcasts a ping to the workers at most this often per process (seconds; the
# broker connection itself is checked on every call).
HEALTH_CACHE_SECONDS = env_int("HEALTH_CACHE_SECONDS", 5, minimum=0)

# Who may do what (README, "Users and permissions"): permissions granted through the groups
# viewer, catalog_editor, signature_officer and model_manager (accounts migration 0002).
# PUBLIC_READ names what anonymous visitors may read: "catalog", "gallery", both, or "none".
_public_read = [area.strip().lower() for area in env_list("PUBLIC_READ", ["catalog", "gallery"])]
if _public_read == ["none"]:
    _public_read = []
if not set(_public_read) <= {"catalog", "gallery"}:
    raise ImproperlyConfigured(f"PUBLIC_READ must name catalog, gallery, both or none, got {','.join(_public_read)!r}")
PUBLIC_READ = frozenset(_public_read)
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
# Failed logins (the login page, the admin's, the token endpoint) lock the account from that
# address after AXES_FAILURE_LIMIT failures for LOGIN_LOCKOUT_MINUTES (django-axes; admins
# unlock in the admin's "Access attempts" or with `manage.py axes_reset_username NAME`).
AUTHENTICATION_BACKENDS = [
    "accounts.backends.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 403
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_CLIENT_IP_CALLABLE = "accounts.backends.client_address"  # the address the rate limits see
AXES_VERBOSE = False  # the lockout itself is logged (accounts.receivers) and audited

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
MEDIA_URL = env_str("MEDIA_URL", "/media/")
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
# Media is served by Django through the storage API unless a front server takes it over.
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)
# Signatures (references, questioned images) live apart from MEDIA_ROOT, never under a public
# URL: an authorised view serves them, itself or through the front server (PRIVATE_MEDIA_ACCEL:
# "x-accel-redirect:/internal-prefix/" for nginx, "x-sendfile" for Apache's mod_xsendfile).
PRIVATE_MEDIA_ROOT = Path(env_str("PRIVATE_MEDIA_ROOT", str(BASE_DIR / "private")))
PRIVATE_MEDIA_ACCEL = (env_str("PRIVATE_MEDIA_ACCEL") or "").strip()
if PRIVATE_MEDIA_ACCEL and not (
    PRIVATE_MEDIA_ACCEL == "x-sendfile"
    or (PRIVATE_MEDIA_ACCEL.startswith("x-accel-redirect:/") and PRIVATE_MEDIA_ACCEL.endswith("/"))
):
    raise ImproperlyConfigured(
        f"PRIVATE_MEDIA_ACCEL must be 'x-sendfile' or 'x-accel-redirect:/prefix/', got {PRIVATE_MEDIA_ACCEL!r}"
    )
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed names (cached for ever) once collectstatic has run: `make run` and the
    # image set STATIC_MANIFEST; tests and `make dev` serve the files as they are.
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env_bool("STATIC_MANIFEST", False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
    "private": {"BACKEND": "simsite.files.PrivateStorage"},
}

# Image intake limits.
IMAGE_MAX_UPLOAD_BYTES = env_int("IMAGE_MAX_UPLOAD_BYTES", 16 * 1024 * 1024, minimum=1)
IMAGE_MAX_PIXELS = env_int("IMAGE_MAX_PIXELS", 64_000_000, minimum=1)
GALLERY_MAX_FILES_PER_REQUEST = env_int("GALLERY_MAX_FILES_PER_REQUEST", 500, minimum=1)
DATA_UPLOAD_MAX_NUMBER_FILES = GALLERY_MAX_FILES_PER_REQUEST
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
# A request body, files included, and any one file in it: refused (413) as it arrives, before
# it is buffered or spooled (simsite/uploads.py).
REQUEST_MAX_BYTES = env_int("REQUEST_MAX_BYTES", 64 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_HANDLERS = [
    "simsite.uploads.LimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
THUMBNAIL_SIZE = 200
THUMBNAIL_QUALITY = 75

# Images by URL.
IMAGE_FETCH_ALLOWED_HOSTS = env_list("IMAGE_FETCH_ALLOWED_HOSTS", [])
IMAGE_FETCH_CONNECT_TIMEOUT = env_int("IMAGE_FETCH_CONNECT_TIMEOUT", 5, minimum=1)
IMAGE_FETCH_READ_TIMEOUT = env_int("IMAGE_FETCH_READ_TIMEOUT", 15, minimum=1)
# The whole fetch of one URL, redirects included: a server dripping bytes is cut off here.
IMAGE_FETCH_TOTAL_TIMEOUT = env_int("IMAGE_FETCH_TOTAL_TIMEOUT", 30, minimum=1)
IMAGE_FETCH_MAX_REDIRECTS = env_int("IMAGE_FETCH_MAX_REDIRECTS", 3, minimum=0, maximum=10)
IMAGE_URL_CACHE_SECONDS = env_int("IMAGE_URL_CACHE_SECONDS", 24 * 3600, minimum=0)

# CSV import (a job on the `default` queue; the uploaded file is kept until the job is pruned).
_import_root = env_str("CATALOG_IMPORT_ROOT")
CATALOG_IMPORT_ROOT = Path(_import_root).resolve() if _import_root else None
CSV_IMPORT_MAX_BYTES = env_int("CSV_IMPORT_MAX_BYTES", 20 * 1024 * 1024, minimum=1)
UPLOAD_MAX_FILE_BYTES = max(IMAGE_MAX_UPLOAD_BYTES, CSV_IMPORT_MAX_BYTES)
SEARCH_BATCH_MAX_FILES = env_int("SEARCH_BATCH_MAX_FILES", 32, minimum=1, maximum=256)
CSV_IMPORT_FETCH_WORKERS = env_int("CSV_IMPORT_FETCH_WORKERS", 8, minimum=1, maximum=64)
# Rows between progress writes; the products of each chunk are queued for embedding at once.
CSV_IMPORT_CHUNK_ROWS = env_int("CSV_IMPORT_CHUNK_ROWS", 50, minimum=1, maximum=10_000)
# An import whose runner stops renewing its lease this long is resumed by another worker.
CSV_IMPORT_LEASE_SECONDS = env_int("CSV_IMPORT_LEASE_SECONDS", 300, minimum=5)
# Imports fetch every URL again (a changed image behind the same URL is picked up).
CSV_IMPORT_URL_CACHE = env_bool("CSV_IMPORT_URL_CACHE", False)

# The earlier Flask tools' routes take writes from anyone only when this is on.
SEED_ROUTES_OPEN_WRITES = env_bool("SEED_ROUTES_OPEN_WRITES", False)

# Embeddings.
EMBEDDING_DEFAULT_MODEL = env_str("EMBEDDING_DEFAULT_MODEL", "efficientnet_lite0")
EMBEDDING_DEVICE = env_choice("EMBEDDING_DEVICE", "auto", {"auto", "cpu", "cuda"})
# Each process runs one forward at a time (a web process's batcher, a solo worker's task), so the
# cores are shared out between the processes that run them: `make run` sets cores // (web
# processes + workers), at least 1 (scripts/stack.py). 0: torch's default (every core).
EMBEDDING_TORCH_THREADS = env_int("EMBEDDING_TORCH_THREADS", 0, minimum=0)
EMBEDDING_DECODE_THREADS = env_int("EMBEDDING_DECODE_THREADS", 4, minimum=1, maximum=64)
EMBEDDING_CPU_FORWARD_BATCH = env_int("EMBEDDING_CPU_FORWARD_BATCH", 4, minimum=1, maximum=1024)
EMBEDDING_CUDA_FORWARD_BATCH = env_int("EMBEDDING_CUDA_FORWARD_BATCH", 128, minimum=1, maximum=4096)
EMBEDDING_BATCH_SIZE = env_int("EMBEDDING_BATCH_SIZE", 32, minimum=1, maximum=1024)
# A batch whose worker died this many times fails its items, so the queue moves on.
EMBEDDING_BATCH_MAX_ATTEMPTS = env_int("EMBEDDING_BATCH_MAX_ATTEMPTS", 3, minimum=1, maximum=100)
EMBEDDING_BATCH_SOFT_TIME_LIMIT = env_int("EMBEDDING_BATCH_SOFT_TIME_LIMIT", 600, minimum=1)
# The reconciler re-sends a batch not started this long after it was sent, when its queue is empty.
EMBEDDING_BATCH_RESEND_SECONDS = env_int("EMBEDDING_BATCH_RESEND_SECONDS", 60, minimum=1)
# A job with no progress for this long is ended, its remaining items failed.
INDEX_JOB_STALL_SECONDS = env_int("INDEX_JOB_STALL_SECONDS", 6 * 3600, minimum=10)
# Finished index and import jobs are deleted after this many days.
JOB_RETENTION_DAYS = env_int("JOB_RETENTION_DAYS", 30, minimum=1)
# Items the reconciler queues per run when they lack a vector of a model in use.
RECONCILE_SWEEP_LIMIT = env_int("RECONCILE_SWEEP_LIMIT", 5000, minimum=1)
# The reconciler deletes stored files no row names once they are this old (seconds): a younger
# one may be being written for a row that has not committed yet (simsite.stored_files).
ORPHAN_FILE_GRACE_SECONDS = env_int("ORPHAN_FILE_GRACE_SECONDS", 3600, minimum=60)
# Candidates HNSW keeps per query (at least 2k): higher finds more true neighbours, slower.
# "auto": the value measured on the model's own index (search.models.SearchTuning, kept by the
# tune_search command and the periodic task below), else by its size (search.selectors.
# hnsw.EF_SEARCH_BY_SIZE: 80 up to 200,000 vectors, 160 up to 500,000, 320 up to 2,000,000, ...);
# doubled under product filters. A number from 10 to 1000 fixes it.
SEARCH_HNSW_EF_SEARCH = (
    None
    if (env_str("SEARCH_HNSW_EF_SEARCH") or "auto").strip().lower() == "auto"
    else env_int("SEARCH_HNSW_EF_SEARCH", 0, minimum=10, maximum=1000)
)
# Tuning ef_search (search.services.tuning.search_tune) on the queries users send: this percentage of
# searches by image keep their query vector (not the image), the newest SEARCH_TUNE_QUERIES per
# model; tuning aims at this recall@10 against an exact search (percent). Celery beat tunes the
# indexes of at least SEARCH_TUNE_MIN_VECTORS vectors (every SEARCH_TUNE_INTERVAL_SECONDS) when
# they were never tuned, have grown or shrunk by a quarter since, or have twice the queries.
# More queries, a closer estimate: the margin tuning keeps is 0.02 at 200, 0.01 at 1,000.
SEARCH_TUNE_SAMPLE_PERCENT = env_int("SEARCH_TUNE_SAMPLE_PERCENT", 25, minimum=0, maximum=100)
SEARCH_TUNE_QUERIES = env_int("SEARCH_TUNE_QUERIES", 1000, minimum=50, maximum=10_000)
SEARCH_TUNE_RECALL = env_int("SEARCH_TUNE_RECALL_PERCENT", 95, minimum=50, maximum=100) / 100
SEARCH_TUNE_MIN_VECTORS = env_int("SEARCH_TUNE_MIN_VECTORS", 50_000, minimum=1)
# Searches whose filters leave at most this many vectors scan them exactly instead of using the
# index (an exact scan reads about 5 us per 1280-d vector here: 1,000 rows ~ one index query).
SEARCH_EXACT_MAX_ROWS = env_int("SEARCH_EXACT_MAX_ROWS", 1000, minimum=0)
# The nearest-neighbour statements are prepared once per database connection (0.1-0.3 ms less
# per search). Turn off behind a pooler that cannot keep prepared statements (PgBouncer in
# transaction mode before 1.21, or without max_prepared_statements).
SEARCH_PREPARED_STATEMENTS = env_bool("SEARCH_PREPARED_STATEMENTS", True)
SEARCH_QUERY_EMBEDDER = env_choice("SEARCH_QUERY_EMBEDDER", "web", {"web", "worker"})
SEARCH_QUERY_TIMEOUT = env_int("SEARCH_QUERY_TIMEOUT", 5, minimum=1)
# Query images embedded in a web process are batched (search.query_batcher): a forward takes
# the images of every request that arrived within QUERY_BATCH_WINDOW_MS of the first (the window
# closes early when no other request of the process is being prepared), up to
# QUERY_BATCH_MAX_IMAGES images (0: the model's pass, EMBEDDING_CPU_FORWARD_BATCH or
# EMBEDDING_CUDA_FORWARD_BATCH: a larger batch runs as several passes, and every request of it
# waits for the last one).
QUERY_BATCH_WINDOW_MS = env_int("QUERY_BATCH_WINDOW_MS", 5, minimum=0, maximum=1000)
QUERY_BATCH_MAX_IMAGES = env_int("QUERY_BATCH_MAX_IMAGES", 0, minimum=0, maximum=4096)
DUPLICATES_NEIGHBOURS = env_int("DUPLICATES_NEIGHBOURS", 10, minimum=1, maximum=100)
DUPLICATES_STATEMENT_TIMEOUT_MS = env_int("DUPLICATES_STATEMENT_TIMEOUT_MS", 20000, minimum=100)
DUPLICATES_MAX_GROUP_ITEMS = env_int("DUPLICATES_MAX_GROUP_ITEMS", 50, minimum=2, maximum=1000)
# Past this many vectors of a model, duplicates are found by a background scan (search.models.
# DuplicateScan) instead of during the request; the scan keeps pairs at least DUPLICATES_PAIR_FLOOR similar.
DUPLICATES_SYNC_MAX_VECTORS = env_int("DUPLICATES_SYNC_MAX_VECTORS", 20_000, minimum=0)
DUPLICATES_PAIR_FLOOR = float(env_str("DUPLICATES_PAIR_FLOOR", "0.8"))
if not 0.5 <= DUPLICATES_PAIR_FLOOR <= 1:
    raise ImproperlyConfigured(f"DUPLICATES_PAIR_FLOOR must be between 0.5 and 1, got {DUPLICATES_PAIR_FLOOR}")
DUPLICATES_SCAN_CHUNK = env_int("DUPLICATES_SCAN_CHUNK", 2000, minimum=1)
DUPLICATES_SCAN_STALL_SECONDS = env_int("DUPLICATES_SCAN_STALL_SECONDS", 600, minimum=5)
# Which copy of a duplicate group the review page pre-selects to keep (search.selectors.duplicates.KEEP_RULES).
DUPLICATES_KEEP_RULE = env_choice("DUPLICATES_KEEP_RULE", "resolution", {"resolution", "size", "oldest", "newest"})
JOB_EVENTS_POLL_SECONDS = 0.5
# Progress streams (server-sent events) hold a server thread each: they live at most
# JOB_EVENTS_TIMEOUT seconds (EventSource reconnects after JOB_EVENTS_RETRY_MS), send a
# heartbeat every JOB_EVENTS_HEARTBEAT_SECONDS (a client that left is noticed then), and a
# process serves at most JOB_EVENTS_MAX_STREAMS at once (keep it under its threads; 503 past it).
JOB_EVENTS_TIMEOUT = env_int("JOB_EVENTS_TIMEOUT", 300, minimum=1)
JOB_EVENTS_RETRY_MS = env_int("JOB_EVENTS_RETRY_MS", 3000, minimum=100)
JOB_EVENTS_HEARTBEAT_SECONDS = env_int("JOB_EVENTS_HEARTBEAT_SECONDS", 10, minimum=1)
JOB_EVENTS_MAX_STREAMS = env_int("JOB_EVENTS_MAX_STREAMS", 4, minimum=1)
# Training embedding models (train_embedding_model, the API, the admin): the folder the API
# and the admin may name training data in besides the catalog (unset: the catalog only), the
# task's time limit, and how long a running training may go without reporting progress
# before the reconciler calls its worker dead.
_embedding_training_root = env_str("EMBEDDING_TRAINING_ROOT")
EMBEDDING_TRAINING_ROOT = Path(_embedding_training_root).resolve() if _embedding_training_root else None
EMBEDDING_TRAINING_TIME_LIMIT = env_int("EMBEDDING_TRAINING_TIME_LIMIT", 3 * 3600, minimum=60)
EMBEDDING_TRAINING_STALL_SECONDS = env_int("EMBEDDING_TRAINING_STALL_SECONDS", 1800, minimum=10)
# Weights files for the torchvision models, where they are not in the torch hub cache.
EMBEDDING_WEIGHTS = {
    key: value for key in ("resnet18", "resnet50", "resnet101") if (value := env_str(f"{key.upper()}_WEIGHTS"))
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first so that an anonymous write gets 401 with WWW-Authenticate, not 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.access.AccessPolicy"],
    "DEFAULT_PAGINATION_CLASS": "simsite.drf.PageNumberPagination",
    "PAGE_SIZE": 24,
    "DEFAULT_SCHEMA_CLASS": "simsite.schema.AutoSchema",
    "EXCEPTION_HANDLER": "simsite.drf.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["simsite.drf.ScopedThrottle"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "simsite.drf.ContentNegotiation",
    # Proxies in front of the app whose X-Forwarded-For is trusted to name the client (0: none).
    "NUM_PROXIES": env_int("THROTTLE_NUM_PROXIES", 0, minimum=0, maximum=10) or None,
}
# Requests per client (user, else address) and scope; 429 with Retry-After past them.
# THROTTLE_<SCOPE>=<n>/<s|min|hour|day> or "off" (simsite.drf.ScopedThrottle).
API_THROTTLE_RATES = {
    scope: env_rate(f"THROTTLE_{scope.upper()}", default)
    for scope, default in {
        "search": "120/min",  # image searches (one model pass each)
        "search_batch": "20/min",  # batch searches (a model pass per file)
        "duplicates": "30/min",
        "upload": "120/min",  # product, gallery, CSV and reference uploads
        "signatures": "120/min",  # compare and verify
        "token": "10/min",  # password guesses
    }.items()
}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "simsite API",
    "DESCRIPTION": "Self-hosted visual similarity search: catalog, gallery and signatures.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "Collection": "search.models.Collection",
        # Index jobs and CSV imports have the same states: one enum.
        "JobState": "search.models.IndexJob.State",
        "JobMode": "search.models.IndexJob.Mode",
    },
}

# Security: on by default whenever DEBUG is off; each can be turned off behind a proxy.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health/$"]
if env_bool("USE_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
# Content-Security-Policy (django-csp) on every response: scripts and styles only from static/,
# never inline. Images may also be data: URLs (signature previews) and blob: URLs (a chosen
# file shown before it is sent); the search page adds http(s) images for a pasted URL's preview
# (web.views.search.search_page). The one exemption: Swagger UI at /api/v1/docs/ (simsite/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "connect-src": [SELF],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
        "base-uri": [SELF],
        "object-src": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # django-axes reports every login at INFO; lockouts are logged by accounts.receivers.
    "loggers": {"axes": {"level": "WARNING"}},
}

# Signatures.
SIGNATURE_MAX_SIDE = env_int("SIGNATURE_MAX_SIDE", 6000, minimum=100)
_signature_root = env_str("SIGNATURE_FILES_ROOT")
# Folder the earlier tool's clients name files in (`image_path1`/`image_path2`); unset: uploads only.
SIGNATURE_FILES_ROOT = Path(_signature_root).resolve() if _signature_root else None
SIGNATURE_DEFAULT_ENCODER = env_str("SIGNATURE_DEFAULT_ENCODER", "efficientnet_lite0_strokes")
# Training signature encoders (train_signature_encoder, the admin): the folder the admin may
# name training data in (unset: SIGNATURE_FILES_ROOT; neither: training from the command only),
# the task's time limit, and how long a running training may go without reporting progress
# before the reconciler calls its worker dead.
_training_root = env_str("SIGNATURE_TRAINING_ROOT")
SIGNATURE_TRAINING_ROOT = Path(_training_root).resolve() if _training_root else SIGNATURE_FILES_ROOT
SIGNATURE_TRAINING_TIME_LIMIT = env_int("SIGNATURE_TRAINING_TIME_LIMIT", 3 * 3600, minimum=60)
SIGNATURE_TRAINING_STALL_SECONDS = env_int("SIGNATURE_TRAINING_STALL_SECONDS", 1800, minimum=10)
# The operating point verify decides at, for encoders calibrated here: the lowest threshold at
# which at most this share of skilled forgeries of the validation writers was accepted (e.g.
# 0.01); 0 = the equal-error point (as many genuine signatures refused as forgeries accepted).
SIGNATURE_TARGET_FAR = env_float("SIGNATURE_TARGET_FAR", 0.0, minimum=0.0, maximum=0.5)
