"""The duplicates review: groups dismissed as not duplicates, copies deleted but the one kept,
and the background scans that find the pairs of large libraries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from catalog.services import gallery_images_delete, products_delete
from search.items import GALLERY_IMAGE, PRODUCT, ItemRef
from search.models import (
    Collection,
    DuplicateDismissal,
    DuplicateDismissalItem,
    DuplicatePair,
    DuplicateScan,
    Embedding,
)
from search.selectors.duplicates import duplicate_neighbours_sql, duplicate_scan_latest
from search.selectors.embedding_models import model_spec_get
from search.selectors.embeddings import embedding_stamp, items_by_ref
from simsite.celery import task_send
from simsite.errors import ServiceError

DUPLICATES_MAX_GROUPS = 500  # groups one review request may resolve


def _groups_checked(groups: Sequence[Sequence[ItemRef]]) -> dict[ItemRef, object]:
    if not groups:
        raise ServiceError("invalid", "Name at least one group.", field="groups")
    if len(groups) > DUPLICATES_MAX_GROUPS:
        raise ServiceError("invalid", f"At most {DUPLICATES_MAX_GROUPS} groups at once.", field="groups")
    for group in groups:
        if len(set(group)) < 2:
            raise ServiceError("invalid", "A group names at least two different items.", field="groups")
    return items_by_ref([ref for group in groups for ref in group])


def duplicates_dismiss(*, groups: Sequence[Sequence[ItemRef]], user: object = None) -> int:
    """Remember each group as *not duplicates* (``duplicate_groups`` never joins two of its
    items again). Items deleted meanwhile are skipped. Returns the groups remembered."""
    found = _groups_checked(groups)
    remembered = 0
    with transaction.atomic():
        for group in groups:
            present = [ref for ref in dict.fromkeys(group) if ref in found]
            if len(present) < 2:
                continue
            dismissal = DuplicateDismissal.objects.create(created_by=user if getattr(user, "pk", None) else None)
            DuplicateDismissalItem.objects.bulk_create(
                DuplicateDismissalItem(dismissal=dismissal, **{ref.item_kind.column: ref.id}) for ref in present
            )
            remembered += 1
    return remembered


def duplicates_keep(*, groups: Sequence[tuple[ItemRef, Sequence[ItemRef]]]) -> int:
    """For each ``(keep, others)`` group delete the others (vectors and unused files with
    them), in one transaction. Refused, deleting nothing, when a copy to keep is gone or is
    also to be deleted: a review must never lose every copy. The rows are locked before the
    check, so two reviewers keeping different copies of one group cannot delete both.
    Returns the items deleted."""
    found = _groups_checked([[keep, *others] for keep, others in groups])
    keeping = {keep for keep, _ in groups}
    doomed = {ref for _, others in groups for ref in others if ref in found}
    if both := sorted(keeping & doomed):
        raise ServiceError("invalid", f"{both[0].kind} {both[0].id} is kept in one group and deleted in another.",
                           field="groups")  # fmt: skip
    with transaction.atomic():
        present: set[ItemRef] = set()
        for kind in (PRODUCT, GALLERY_IMAGE):  # in one order, by id: no deadlock between reviewers
            ids = sorted(ref.id for ref in keeping | doomed if ref.kind == kind.name)
            rows = kind.model.objects.select_for_update().filter(pk__in=ids).order_by("pk")
            present.update(ItemRef(kind.name, pk) for pk in rows.values_list("pk", flat=True))
        if lost := sorted(ref for ref in keeping if ref not in present):
            raise ServiceError("keep_missing", f"The copy to keep ({lost[0].kind} {lost[0].id}) no longer exists; "
                               "reload the groups.", status_code=409)  # fmt: skip
        gallery = [ref.id for ref in doomed if ref.kind == GALLERY_IMAGE.name and ref in present]
        products = [ref.id for ref in doomed if ref.kind == PRODUCT.name and ref in present]
        deleted = gallery_images_delete(ids=gallery) if gallery else 0
        return deleted + (products_delete(ids=products) if products else 0)


SCAN_TASK = "search.tasks.duplicate_scan_chunk"


def duplicates_scan_refresh(*, model: str, stamp: dict[str, int | None] | None = None) -> DuplicateScan | None:
    """Start a background duplicates scan where one is due: past ``DUPLICATES_SYNC_MAX_VECTORS``
    vectors, when no scan saw the current vectors and none is under way. A scan silent for
    ``DUPLICATES_SCAN_STALL_SECONDS`` (its message lost, its worker killed) is resumed where it
    stopped; after a failed scan, a new one waits as long. Idempotent: any read may call it.
    ``stamp`` (possibly read on a replica) settles the common cases; the vectors are counted
    on the primary only when a new scan may be due. Returns the scan under way, if any."""
    key = model_spec_get(model).key
    stamp = stamp or embedding_stamp(model=key)
    if stamp["count"] <= settings.DUPLICATES_SYNC_MAX_VECTORS:
        return None
    active = DuplicateScan.ACTIVE
    with transaction.atomic():  # reads the primary (simsite.replicas.ReplicaRouter)
        with connection.cursor() as cursor:  # one request decides at a time; the others read its answer
            cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [f"duplicates-scan:{key}"])
            if not cursor.fetchone()[0]:
                latest = duplicate_scan_latest(model=key)
                return latest if latest is not None and latest.state in active else None
        latest = duplicate_scan_latest(model=key)
        now = timezone.now()
        quiet = now - timedelta(seconds=settings.DUPLICATES_SCAN_STALL_SECONDS)
        if latest is not None and latest.state in active:
            if latest.progressed_at < quiet:  # resume it: chunks are claimed by position, a copy is harmless
                DuplicateScan.objects.filter(pk=latest.pk).update(progressed_at=now)
                transaction.on_commit(lambda: task_send(SCAN_TASK, latest.pk), robust=True)
            return latest

        def settled(seen: dict[str, int | None]) -> bool:  # up to date, or failed on these very vectors just now
            same = latest is not None and (latest.vectors_count, latest.vectors_last) == (seen["count"], seen["last"])
            recent_failure = latest is not None and latest.finished_at is not None and latest.finished_at > quiet
            return same and (latest.state == DuplicateScan.State.SUCCEEDED or recent_failure)

        if settled(stamp):
            return None
        stamp = embedding_stamp(model=key)  # on the primary (in this transaction): what the scan will see
        if settled(stamp):
            return None
        scan = DuplicateScan.objects.create(model=key, vectors_count=stamp["count"], vectors_last=stamp["last"])
        transaction.on_commit(lambda: task_send(SCAN_TASK, scan.pk), robust=True)
    return scan


def duplicate_scan_run(*, scan_id: int) -> bool:
    """Scan the next chunk of a duplicates scan's vectors; True when more remain (the caller
    queues the next chunk). Safe to run twice: a chunk is claimed by the scan's position."""
    scan = DuplicateScan.objects.filter(pk=scan_id).first()
    if scan is None or scan.state in (DuplicateScan.State.SUCCEEDED, DuplicateScan.State.FAILED):
        return False
    spec = model_spec_get(scan.model)
    ids = list(Embedding.objects.filter(model=spec.key, id__gt=scan.last_id, id__lte=scan.vectors_last or 0)
               .order_by("id").values_list("id", flat=True)[: settings.DUPLICATES_SCAN_CHUNK])  # fmt: skip
    with transaction.atomic():
        pairs: list[DuplicatePair] = []
        if ids:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                cursor.execute(duplicate_neighbours_sql(spec.dim, Collection.ALL, id_range=True),
                               [spec.key, settings.DUPLICATES_NEIGHBOURS, spec.key, scan.last_id, ids[-1],
                                settings.DUPLICATES_PAIR_FLOOR])  # fmt: skip
                pairs = [DuplicatePair(scan_id=scan.pk, a_product_id=row[0], a_gallery_image_id=row[1],
                                       b_product_id=row[2], b_gallery_image_id=row[3], similarity=row[4])
                         for row in cursor.fetchall()]  # fmt: skip
        more = len(ids) == settings.DUPLICATES_SCAN_CHUNK
        now = timezone.now()
        claimed = DuplicateScan.objects.filter(pk=scan.pk, last_id=scan.last_id).exclude(
            state__in=[DuplicateScan.State.SUCCEEDED, DuplicateScan.State.FAILED]
        ).update(
            last_id=ids[-1] if ids else scan.last_id, done=F("done") + len(ids), progressed_at=now,
            state=DuplicateScan.State.RUNNING if more else DuplicateScan.State.SUCCEEDED,
            finished_at=None if more else now,
        )  # fmt: skip
        if not claimed:  # another delivery scanned this chunk first
            transaction.set_rollback(True)
            return False
        DuplicatePair.objects.bulk_create(pairs, batch_size=5000)
        if not more:  # the older scans of this model are superseded
            DuplicateScan.objects.filter(model=spec.key, created_at__lt=scan.created_at).exclude(
                state__in=DuplicateScan.ACTIVE
            ).delete()
    return more


def duplicate_scan_fail(*, scan_id: int, error: str) -> None:
    DuplicateScan.objects.filter(pk=scan_id).exclude(state=DuplicateScan.State.SUCCEEDED).update(
        state=DuplicateScan.State.FAILED, error=error[:500], finished_at=timezone.now()
    )
