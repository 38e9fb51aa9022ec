"""Files in the media storage that rows name: the lock their writers and deleters share, and the
sweep of the files no row names.

Catalog images, their thumbnails and signature files are content-addressed
(``<folder>/<sha256[:2]>/<sha256>.<ext>``) and shared by every row with those bytes; a trained
model's files are under its key. A file is stored before the row naming it commits, and a new
row with the same bytes reuses a stored file, so the sweep deletes only files older than
``ORPHAN_FILE_GRACE_SECONDS``, and a content-addressed one under its ``content_lock``, after asking
the rows again. Files nobody deleted come from a cleanup that failed (on-commit callbacks are
robust: they log and go on), a worker killed between two writes, or a restored database.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import Storage, storages
from django.db import connection, transaction
from django.db.models import Field, JSONField, Model
from django.utils import timezone

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFolder:
    """A folder of a storage whose files rows name, and the columns that name them."""

    folder: str
    # "app_label.Model.field": a file or text column holding storage names, or a JSON object
    # whose values are storage names (a trained model's plots).
    columns: tuple[str, ...]
    storage: str = "default"  # an alias of settings.STORAGES
    # Names are <sha256[:2]>/<sha256>.<ext>, shared by rows with the same bytes: deleted under
    # the content lock of that sha256, which writers hold until their row commits.
    content_addressed: bool = True
    # The columns hold the sha256 a file's name is made of (thumbnails), not the name itself.
    by_sha256: bool = False


# Every folder the sweep looks in; files anywhere else are never touched. Signatures are in the
# private storage (simsite.files), never under MEDIA_ROOT.
STORED_FOLDERS: tuple[StoredFolder, ...] = (
    StoredFolder("images", ("catalog.Product.image", "catalog.GalleryImage.file")),
    StoredFolder("thumbs", ("catalog.Product.sha256", "catalog.GalleryImage.sha256"), by_sha256=True),
    StoredFolder("signatures", ("signatures.Reference.file", "signatures.Verification.questioned"), storage="private"),
    StoredFolder("imports", ("catalog.ProductImport.file",), content_addressed=False),
    StoredFolder("models/embeddings", ("search.TrainedModel.weights", "search.TrainedModel.plots"),
                 content_addressed=False),
    StoredFolder("models/signatures", ("signatures.SignatureEncoder.weights", "signatures.SignatureEncoder.background",
                                       "signatures.SignatureEncoder.plots"), content_addressed=False),
)  # fmt: skip

# Names asked about in one query per column, and files looked at per folder in one sweep: the
# next sweep goes on from there (a million images take some 200 reconciler runs, each short).
ORPHAN_BATCH = 500
ORPHAN_FILES_PER_RUN = 5000


def content_lock(*, sha256: str) -> None:
    """Hold a transaction-scoped lock on one content hash.

    Files are shared by every row with the same bytes. A writer takes this lock before it
    stores the file and keeps it until its row commits; whoever deletes such a file
    (``catalog.storage.content_discard``, the orphan sweep) takes it before it checks for users.
    So a file is never deleted between being stored for a new row and that row becoming
    visible. Must run inside a transaction.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"content:{sha256}"])


def orphan_files_sweep(*, folders: Sequence[StoredFolder] = STORED_FOLDERS, limit: int = ORPHAN_FILES_PER_RUN) -> int:
    """Delete the files of ``folders`` that no row names and that are older than
    ORPHAN_FILE_GRACE_SECONDS, looking at ``limit`` files per folder, after those the last sweep
    looked at (the cache remembers where; without it a sweep starts again from the first).
    Returns how many were deleted. Must run outside a transaction."""
    cutoff = timezone.now() - timedelta(seconds=settings.ORPHAN_FILE_GRACE_SECONDS)
    deleted = 0
    for folder in folders:
        storage = storages[folder.storage]
        where = f"orphan-sweep:{folder.storage}:{folder.folder}"
        after = cache.get(where) or ""
        names = list(itertools.islice(_names_after(storage, folder.folder, tuple(after.split("/")) if after else ()),
                                      limit))  # fmt: skip
        cache.set(where, names[-1] if len(names) == limit else "", timeout=None)
        swept = 0
        for start in range(0, len(names), ORPHAN_BATCH):
            batch = names[start : start + ORPHAN_BATCH]
            named = _named(folder, batch)
            swept += sum(_delete_if_orphan(storage, folder, name, cutoff) for name in batch if name not in named)
        if swept:
            logger.info("deleted %s orphan files (old, named by no row) from %s", swept, folder.folder)
        deleted += swept
    return deleted


def _names_after(storage: Storage, folder: str, after: tuple[str, ...]) -> Iterator[str]:
    """The names of the files under ``folder``, depth first in name order, from after the one
    whose parts are ``after`` (empty: from the first)."""
    try:
        directories, files = storage.listdir(folder)
    except FileNotFoundError:
        return
    for name, is_directory in sorted([(name, True) for name in directories] + [(name, False) for name in files]):
        path = f"{folder}/{name}"
        parts = tuple(path.split("/"))
        if not is_directory:
            if parts > after:
                yield path
        elif parts > after[: len(parts)]:  # wholly after the last one looked at
            yield from _names_after(storage, path, ())
        elif parts == after[: len(parts)]:  # the last one looked at is in here
            yield from _names_after(storage, path, after)


def _column(label: str) -> tuple[type[Model], Field]:
    app_label, model_name, field_name = label.split(".")
    model = apps.get_model(app_label, model_name)
    return model, model._meta.get_field(field_name)


def _named(folder: StoredFolder, names: Sequence[str]) -> set[str]:
    """Those of ``names`` that a row names."""
    keys = {PurePosixPath(name).stem if folder.by_sha256 else name: name for name in names}
    found: set[str] = set()
    for label in folder.columns:
        model, field = _column(label)
        if isinstance(field, JSONField):
            table, column = (connection.ops.quote_name(part) for part in (model._meta.db_table, field.column))
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT DISTINCT v.value FROM {table}, jsonb_each_text({table}.{column}) v "  # noqa: S608
                               "WHERE v.value = ANY(%s)", [list(keys)])  # fmt: skip
                found.update(row[0] for row in cursor.fetchall())
        else:
            rows = model._default_manager.filter(**{f"{field.name}__in": list(keys)})
            found.update(rows.values_list(field.name, flat=True).distinct())
    return {keys[key] for key in found if key in keys}


def _delete_if_orphan(storage: Storage, folder: StoredFolder, name: str, cutoff: datetime) -> bool:
    """Delete ``name`` (named by no row when asked) if it is older than ``cutoff``; a
    content-addressed file only if no row names it under its content lock either."""
    try:
        if storage.get_modified_time(name) >= cutoff:
            return False  # perhaps being written for a row not committed yet
        if not folder.content_addressed:
            storage.delete(name)
            return True
        with transaction.atomic():
            content_lock(sha256=PurePosixPath(name).stem)
            if _named(folder, [name]):
                return False  # a row with the same bytes committed meanwhile
            storage.delete(name)
            return True
    except OSError as error:  # gone meanwhile, or cannot be deleted: the next sweep sees it again
        logger.warning("orphan file %s not deleted: %s", name, error)
        return False
