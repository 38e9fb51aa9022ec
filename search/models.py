from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.utils import timezone
from pgvector.django import VectorField

from simsite.jobs import Job
from simsite.training_runs import TrainingRun

# The offline default model, whose HNSW index the migrations create.
DEFAULT_MODEL_KEY = "efficientnet_lite0"
DEFAULT_MODEL_DIM = 1280


def exactly_one_item(name: str) -> models.CheckConstraint:
    """A row about an item names a product or a gallery image, never both, never neither."""
    return models.CheckConstraint(
        condition=(
            models.Q(product__isnull=False, gallery_image__isnull=True)
            | models.Q(product__isnull=True, gallery_image__isnull=False)
        ),
        name=name,
    )


def model_key_checked(model_key: str) -> str:
    """``model_key``, refused unless it is identifier characters only: keys are written into
    SQL text (index names and predicates; the search's statement names its model literally so
    that PostgreSQL can match it to the model's partial index in a cached plan)."""
    if not model_key.replace("_", "").isalnum():
        raise ValueError(f"invalid model key {model_key!r}")
    return model_key


def hnsw_index_name(model_key: str) -> str:
    return f"embedding_{model_key}_hnsw"[:63]


# pgvector's parallel HNSW build made a worse graph on clustered real embeddings (recall@10
# 0.96 against 1.00 for a serial build of the same 30,000 vectors) and was no faster on
# two cores: indexes over existing rows are built serially.
HNSW_BUILD_SETTING = "SET max_parallel_maintenance_workers = 0"


# Candidates kept while linking each vector into the graph: 128 against pgvector's default 64
# took 1.36x the build time at 1,000,000 vectors and raised recall@10 at ef_search 160 from
# 0.942 to 0.963 (benchmarks/search.py; the index size is the same).
HNSW_EF_CONSTRUCTION = 128


def hnsw_index_sql(model_key: str, dim: int, *, concurrently: bool = False) -> str:
    """SQL for one model's partial HNSW cosine index over the column cast to ``halfvec(dim)``.

    The graph holds half-precision copies: half the memory of a ``vector`` index with the
    same recall (benchmarks/search.py: 391 against 781 MB for 100,000 x 1280, recall@10
    0.984 against 0.978); the column keeps full precision for exact scans and for the
    similarities returned. Raw SQL because Django cannot render an operator class after a
    cast expression. ``model_key`` comes from the model registry (identifier characters only).
    """
    model_key_checked(model_key)
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS {hnsw_index_name(model_key)} "
        f"ON search_embedding USING hnsw ((vector::halfvec({int(dim)})) halfvec_cosine_ops) "
        f"WITH (m = 16, ef_construction = {HNSW_EF_CONSTRUCTION}) WHERE model = '{model_key}'"
    )


class Embedding(models.Model):
    """One item's vector under one embedding model.

    The column has no fixed dimension so that models of different sizes share the table;
    each model gets a partial HNSW index on the column cast to ``halfvec`` of its dimension
    (``hnsw_index_sql``), so a query filtered on ``model`` and ordered by the cast distance
    uses that model's index only.

    ``category`` and ``price`` are the product's, copied by database triggers (migration
    0010): on every insert from the product row, and into every vector of a product when its
    category or price changes, however it is changed (services, admin, ``QuerySet.update``).
    Filtered searches test them on the row the index scan already reads instead of looking up
    each candidate's product (100,000 vectors, a 10% category: see benchmarks/search.py).
    Writers lock the product rows first (``embedding_upsert``), so a change racing an insert
    waits for it rather than missing it. Both are NULL for gallery images.
    """

    product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.CASCADE)
    gallery_image = models.ForeignKey("catalog.GalleryImage", null=True, blank=True, on_delete=models.CASCADE)
    model = models.CharField(max_length=64)
    vector = VectorField()
    sha256 = models.CharField(max_length=64)
    category = models.CharField(max_length=100, null=True, blank=True, editable=False)
    price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            exactly_one_item("embedding_exactly_one_item"),
            # NULLs are distinct, so each holds for its own kind of item only; plain (not
            # partial) constraints so that upserts can name them in ON CONFLICT.
            models.UniqueConstraint(fields=["product", "model"], name="embedding_product_model"),
            models.UniqueConstraint(fields=["gallery_image", "model"], name="embedding_gallery_model"),
        ]
        indexes = [
            models.Index(fields=["model"], name="embedding_model"),
            # Counting the vectors a category or a price range leaves (the plan choice: a count
            # that stops at SEARCH_EXACT_MAX_ROWS + 1 reads the index, not the table, however
            # selective the filter) and exact scans of the few rows.
            models.Index(fields=["model", "category"], name="embedding_model_category"),
            models.Index(fields=["model", "price"], name="embedding_model_price"),
        ]

    def __str__(self) -> str:
        item = f"product {self.product_id}" if self.product_id else f"gallery image {self.gallery_image_id}"
        return f"{self.model} vector of {item}"


class ActiveModel(models.Model):
    """The embedding model searches use (one row; absent means the configured default)."""

    key = models.CharField(max_length=64)
    activated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.key


class Collection(models.TextChoices):
    PRODUCTS = "products"
    GALLERY = "gallery"
    ALL = "all"


class IndexJob(Job):
    """Embedding a collection's items with one model, in batches on the ``embed`` queue
    (its state, counters and timestamps: ``simsite.jobs.Job``)."""

    class Mode(models.TextChoices):
        MISSING = "missing"
        ALL = "all"

    collection = models.CharField(max_length=16, choices=Collection.choices)
    model = models.CharField(max_length=64)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.MISSING)
    # Make ``model`` the active model when the job succeeds (a model switch with no downtime).
    activate_when_done = models.BooleanField(default=False)
    total = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Last time a batch of the job finished; the reconciler ends jobs stalled past a deadline.
    progressed_at = models.DateTimeField(null=True, blank=True)

    class Meta(Job.Meta):
        indexes = [models.Index(fields=["finished_at"], name="index_job_finished")]

    def __str__(self) -> str:
        return f"index job {self.pk}: {self.collection} with {self.model} ({self.state})"

    def progress_counts(self) -> tuple[int, int | None]:
        return self.done + self.failed, self.total


class IndexBatch(models.Model):
    """A slice of a job's items; ``done`` flips once, together with its vectors."""

    job = models.ForeignKey(IndexJob, on_delete=models.CASCADE, related_name="batches")
    number = models.PositiveIntegerField()
    product_ids = ArrayField(models.BigIntegerField(), default=list)
    gallery_ids = ArrayField(models.BigIntegerField(), default=list)
    done = models.BooleanField(default=False)
    # Items that could not be embedded: [{"type", "id", "error"}].
    failures = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When the message was last handed to the broker (null: never, e.g. the broker was down).
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # Deliveries that reached a worker; past EMBEDDING_BATCH_MAX_ATTEMPTS the items fail.
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    # The Celery worker (its node name) that last took its message: when a worker of that name
    # starts again, the batches its dead predecessor left unfinished are sent again at once.
    worker = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="index_batch_job_number")]
        indexes = [models.Index(fields=["done"], name="index_batch_pending", condition=models.Q(done=False))]

    def __str__(self) -> str:
        return f"batch {self.number} of job {self.job_id}"

    @property
    def size(self) -> int:
        return len(self.product_ids) + len(self.gallery_ids)

    def ids_of(self, kind: str) -> list[int]:
        return self.product_ids if kind == "product" else self.gallery_ids


class EmbeddingFailure(models.Model):
    """An item whose current image could not be embedded with a model, and why.

    The reconciler's sweep skips it until the image changes (a corrupt file is not retried
    every minute); an explicit index job still tries again, and a vector written clears it.
    """

    product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.CASCADE)
    gallery_image = models.ForeignKey("catalog.GalleryImage", null=True, blank=True, on_delete=models.CASCADE)
    model = models.CharField(max_length=64)
    sha256 = models.CharField(max_length=64)
    error = models.CharField(max_length=500)
    failed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "model"], name="embedding_failure_product_model"),
            models.UniqueConstraint(fields=["gallery_image", "model"], name="embedding_failure_gallery_model"),
        ]

    def __str__(self) -> str:
        item = f"product {self.product_id}" if self.product_id else f"gallery image {self.gallery_image_id}"
        return f"{self.model} failed on {item}: {self.error}"


class TrainedModel(TrainingRun):
    """An embedding model trained here: the training run (``simsite.training_runs``), then the
    model (weights under MEDIA_ROOT/models/embeddings/<key>/<run>/).

    Queued by ``train_embedding_model``, the API or the admin; a worker (queue ``embed``)
    trains it with progress per epoch. Once it has succeeded it is an embedding model like the
    pretrained ones (``search.selectors.embedding_models.model_spec_get``): indexed in the background, activated
    without downtime. Immutable from then on.
    """

    files_root = "models/embeddings"
    # Identifier characters only: the key names a partial HNSW index (hnsw_index_name).
    key = models.CharField(max_length=40, unique=True)
    base = models.CharField(max_length=64)
    source = models.CharField(max_length=1024, help_text="'catalog' or the training data folder")
    classes = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return self.key


class DuplicateDismissal(models.Model):
    """A group of items someone marked as *not duplicates*: no two of its items are grouped
    as near-duplicates again (under any model or threshold). An item added later that looks
    like one of them still forms a new group with it."""

    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"not duplicates #{self.pk}"


class DuplicateDismissalItem(models.Model):
    """One item of a dismissed group (deleted with the item)."""

    dismissal = models.ForeignKey(DuplicateDismissal, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.CASCADE)
    gallery_image = models.ForeignKey("catalog.GalleryImage", null=True, blank=True, on_delete=models.CASCADE)

    class Meta:
        constraints = [
            exactly_one_item("dismissal_item_exactly_one_item"),
        ]

    def __str__(self) -> str:
        return f"product {self.product_id}" if self.product_id else f"gallery image {self.gallery_image_id}"


class EmbeddingModelChoice(ActiveModel):
    """The admin's *Embedding models* page (coverage, build index, activate). A proxy: the
    models come from the registry and the trained models, the choice is ``ActiveModel``."""

    class Meta:
        proxy = True
        verbose_name = "embedding model"
        verbose_name_plural = "embedding models"


class DuplicateScan(Job):
    """Near-duplicate pairs among one model's vectors, found in the background: for libraries
    past ``DUPLICATES_SYNC_MAX_VECTORS``, where finding them during a request would time out.

    A task scans a chunk of vectors (each one's nearest neighbours at least
    ``DUPLICATES_PAIR_FLOOR`` similar) and queues the next chunk; reads group the pairs of the
    newest finished scan. ``vectors_count``/``vectors_last`` say which vectors it saw: when they
    change, a new scan starts and the finished one is served until it is done. A job
    (``simsite.jobs.Job``) that is never cancelled, nor started apart from its first chunk.
    """

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    model = models.CharField(max_length=64, db_index=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED)
    vectors_count = models.PositiveIntegerField()
    vectors_last = models.BigIntegerField(null=True)
    # ``done``: vectors scanned
    last_id = models.BigIntegerField(default=0)  # the last search_embedding id scanned
    error = models.CharField(max_length=500, blank=True)
    started_at = None
    progressed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"duplicates scan {self.pk} of {self.model} ({self.state})"

    def progress_counts(self) -> tuple[int, int | None]:
        return self.done, self.vectors_count


class DuplicatePair(models.Model):
    """Two items a scan found near-duplicate (plain ids: a deleted item changes the vectors,
    so a new scan follows, and readers drop items that are gone)."""

    scan = models.ForeignKey(DuplicateScan, on_delete=models.CASCADE, related_name="pairs")
    a_product_id = models.BigIntegerField(null=True)
    a_gallery_image_id = models.BigIntegerField(null=True)
    b_product_id = models.BigIntegerField(null=True)
    b_gallery_image_id = models.BigIntegerField(null=True)
    similarity = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["scan", "similarity"], name="duplicate_pair_scan_similarity")]


class SearchQuerySample(models.Model):
    """Query vectors of recent searches by image (a sample: ``SEARCH_TUNE_SAMPLE_PERCENT`` of
    them, the newest ``SEARCH_TUNE_QUERIES`` per model), the queries ef_search is tuned on.
    The vectors only, never the images."""

    model = models.CharField(max_length=64)
    vector = VectorField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["model", "-id"], name="search_query_sample_newest")]

    def __str__(self) -> str:
        return f"{self.model} query {self.pk}"


class SearchTuning(models.Model):
    """The ``hnsw.ef_search`` a model's searches run with, measured on its own index
    (``search.services.tuning.search_tune``): the smallest value whose recall@10 against an exact search
    reached ``target_recall`` for the recorded queries (``SearchQuerySample``), with the margin
    of the estimate. ``vectors`` is
    the index's size then: searches use the value while the index stays near that size."""

    model = models.CharField(max_length=64, unique=True)
    ef_search = models.PositiveIntegerField()
    recall = models.FloatField()  # recall@10 of the recorded queries at ef_search
    target_recall = models.FloatField()
    vectors = models.PositiveBigIntegerField()
    queries = models.PositiveIntegerField()
    # Every ef_search tried, in order: {"ef_search", "recall", "recall_low" (two standard errors
    # below), "p50_ms"}.
    steps = models.JSONField(default=list)
    tuned_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.model}: ef_search {self.ef_search} (recall@10 {self.recall:.3f} on {self.vectors:,} vectors)"
