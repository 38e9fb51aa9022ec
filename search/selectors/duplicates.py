"""Duplicates: the neighbour pairs (found now, or by a background scan), joined into groups
(union-find, minus dismissed groups), and the rules that pick the copy to keep."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import OperationalError, transaction
from django.db.models import Count, Max

from search.items import GALLERY_IMAGE, ItemRef, kinds_of
from search.models import Collection, DuplicateDismissalItem, DuplicatePair, DuplicateScan
from search.registry import ModelSpec
from search.selectors.embedding_models import model_spec_get
from search.selectors.embeddings import embedding_stamp, items_by_ref
from simsite.errors import ServiceError
from simsite.replicas import read_connection, replica_read


@replica_read  # a transaction on the replica
def _neighbour_pairs_now(spec: ModelSpec, collection: str, threshold: float, count: int) -> list[tuple]:
    timeout = settings.DUPLICATES_STATEMENT_TIMEOUT_MS
    try:
        database = read_connection()
        with transaction.atomic(using=database.alias), database.cursor() as cursor:
            cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [str(timeout)])
            cursor.execute(duplicate_neighbours_sql(spec.dim, collection),
                           [spec.key, settings.DUPLICATES_NEIGHBOURS, spec.key, threshold])  # fmt: skip
            return cursor.fetchall()
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", None) != "57014":  # query_canceled
            raise
        raise ServiceError("duplicates_timeout", f"Finding duplicates among {count} vectors took longer "
                           f"than {timeout / 1000:g} s; try a narrower collection, or again later.",
                           status_code=503) from None  # fmt: skip


def duplicate_neighbours_sql(dim: int, collection: str, *, id_range: bool = False) -> str:
    """Each vector's nearest neighbours at least a similarity apart: one LATERAL k-NN join on
    the HNSW index (about n log n, never an n-squared loop). Parameters: model, neighbours,
    model, [first id, last id,] floor."""
    condition = "" if collection == Collection.ALL else f"AND {{t}}.{kinds_of(collection)[0].column} IS NOT NULL"
    ids = "AND a.id > %s AND a.id <= %s" if id_range else ""
    return f"""
        SELECT a.product_id, a.gallery_image_id, n.product_id, n.gallery_image_id, n.similarity
        FROM search_embedding a
        CROSS JOIN LATERAL (
            SELECT b.product_id, b.gallery_image_id,
                   1 - (b.vector::vector({dim}) <=> a.vector::vector({dim})) AS similarity
            FROM search_embedding b
            WHERE b.model = %s AND b.id <> a.id {condition.format(t="b")}
            ORDER BY b.vector::halfvec({dim}) <=> a.vector::halfvec({dim})
            LIMIT %s
        ) n
        WHERE a.model = %s {condition.format(t="a")} {ids} AND n.similarity >= %s
    """  # noqa: S608 - only fixed fragments are interpolated


def duplicate_scan_latest(*, model: str, finished: bool = False) -> DuplicateScan | None:
    scans = DuplicateScan.objects.filter(model=model)
    if finished:
        scans = scans.filter(state=DuplicateScan.State.SUCCEEDED)
    return scans.order_by("-created_at", "-id").first()


def _scanned_pairs(scan: DuplicateScan, collection: str, threshold: float) -> list[tuple]:
    if threshold < settings.DUPLICATES_PAIR_FLOOR:
        raise ServiceError("threshold_below_scan", f"This library's duplicates are found in the background at "
                           f"{settings.DUPLICATES_PAIR_FLOOR:g} or more; ask for a threshold of at least that.",
                           field="threshold")  # fmt: skip
    pairs = DuplicatePair.objects.filter(scan=scan, similarity__gte=threshold)
    if collection != Collection.ALL:
        column = kinds_of(collection)[0].column
        pairs = pairs.filter(**{f"a_{column}__isnull": False, f"b_{column}__isnull": False})
    return list(pairs.values_list("a_product_id", "a_gallery_image_id", "b_product_id", "b_gallery_image_id",
                                  "similarity"))  # fmt: skip


def duplicate_groups(
    *, model: str, collection: str, threshold: float, stamp: dict[str, int | None] | None = None
) -> list[dict[str, object]]:
    """Groups of items whose vectors are at least ``threshold`` similar, most similar first.

    Each item's nearest neighbours come from the HNSW index (``duplicate_neighbours_sql``);
    pairs above the threshold are joined into groups (connected components). A group's
    similarity is its weakest joining pair. Up to ``DUPLICATES_SYNC_MAX_VECTORS`` vectors the
    pairs are found during the request, under ``DUPLICATES_STATEMENT_TIMEOUT_MS`` (503 past it);
    beyond, they come from the newest finished background scan (``DuplicateScan``; 503
    ``duplicates_scanning`` until the first one is done). The threshold snaps down to a 0.001
    grid (so the cache serves every nearby request), and a group lists at most
    ``DUPLICATES_MAX_GROUP_ITEMS`` items (``size`` says how many it has). Items of a group
    someone marked as not duplicates (``DuplicateDismissal``) never share a group. Cached until the
    vectors, the scan or the dismissals change. ``stamp``: the model's ``embedding_stamp`` if
    the caller has it.
    """
    threshold = math.floor(round(threshold * 1000, 6)) / 1000
    spec = model_spec_get(model)
    stamp = stamp or embedding_stamp(model=spec.key)
    scan = None
    if stamp["count"] > settings.DUPLICATES_SYNC_MAX_VECTORS:
        scan = duplicate_scan_latest(model=spec.key, finished=True)
        if scan is None:
            running = duplicate_scan_latest(model=spec.key)
            progress = f" ({running.percent:g}% done)" if running is not None else ""
            raise ServiceError("duplicates_scanning", f"Duplicates among {stamp['count']} vectors are being found "
                               f"in the background{progress}; try again in a while.", status_code=503)  # fmt: skip
    dismissed = DuplicateDismissalItem.objects.aggregate(count=Count("id"), last=Max("id"))
    key = (f"duplicates:{spec.key}:{collection}:{threshold}:{stamp['count']}:{stamp['last']}"
           f":{dismissed['count']}:{dismissed['last']}:{scan.pk if scan else ''}")  # fmt: skip
    cached = cache.get(key)
    if cached is not None:
        return cached
    if scan is not None:
        pairs = _scanned_pairs(scan, collection, threshold)
    else:
        pairs = _neighbour_pairs_now(spec, collection, threshold, stamp["count"])
    dismissals: dict[ItemRef, set[int]] = {}
    if dismissed["count"]:
        for dismissal, product, gallery_image in DuplicateDismissalItem.objects.values_list(
            "dismissal_id", "product_id", "gallery_image_id"
        ):
            dismissals.setdefault(ItemRef.from_columns(product, gallery_image), set()).add(dismissal)
    parent: dict[ItemRef, ItemRef] = {}

    def root(node: ItemRef) -> ItemRef:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    weakest: dict[ItemRef, float] = {}
    # Dismissals are cannot-link rules: two items of one dismissed group never end up in one
    # group, not even through a third item. The strongest pairs are joined first.
    cannot: dict[ItemRef, set[int]] = {}
    for a_product, a_gallery, b_product, b_gallery, similarity in sorted(pairs, key=lambda row: -row[4]):
        a, b = ItemRef.from_columns(a_product, a_gallery), ItemRef.from_columns(b_product, b_gallery)
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        for node, top in ((a, ra), (b, rb)):
            cannot.setdefault(top, set(dismissals.get(node, ())))
        if cannot[ra] & cannot[rb]:
            continue
        parent[ra] = rb
        cannot[rb] |= cannot.pop(ra)
        weakest[rb] = min(weakest.get(ra, 1.0), weakest.get(rb, 1.0), float(similarity))
    members: dict[ItemRef, list[ItemRef]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    cap = settings.DUPLICATES_MAX_GROUP_ITEMS
    groups = [{"similarity": round(weakest.get(top, 1.0), 4), "size": len(items), "items": sorted(items)[:cap]}
              for top, items in members.items() if len(items) > 1]  # fmt: skip
    groups.sort(key=lambda group: (-group["similarity"], -group["size"], group["items"][0]))
    cache.set(key, groups, 600)
    return groups


# How the duplicates review picks the copy to keep: the first of these keys wins, then the next.
KEEP_RULES: dict[str, str] = {
    "resolution": "the largest resolution, then the largest file, then the oldest",
    "size": "the largest file, then the largest resolution, then the oldest",
    "oldest": "the first added",
    "newest": "the last added",
}


@dataclass(frozen=True)
class DuplicateCopy:
    """One item of a duplicate group as the review shows it."""

    ref: ItemRef
    item: object
    label: str
    width: int
    height: int
    bytes: int
    added_at: object

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _copy_of(ref: ItemRef, item: object) -> DuplicateCopy:
    file = ref.item_kind.file_of(item)
    try:
        size = file.storage.size(file.name)
    except OSError:  # the stored file is gone: it is the copy not to keep
        size = 0
    label = item.original_filename if ref.kind == GALLERY_IMAGE.name else f"{item.sku} {item.name}"
    added = item.uploaded_at if ref.kind == GALLERY_IMAGE.name else item.created_at
    return DuplicateCopy(ref, item, label, item.width, item.height, size, added)


def _keep_order(rule: str):  # noqa: ANN202 - a sort key
    if rule == "size":
        return lambda copy: (-copy.bytes, -copy.pixels, copy.added_at, copy.ref)
    if rule == "oldest":
        return lambda copy: (copy.added_at, copy.ref)
    if rule == "newest":
        return lambda copy: (-copy.added_at.timestamp(), copy.ref)
    return lambda copy: (-copy.pixels, -copy.bytes, copy.added_at, copy.ref)


def duplicate_groups_detailed(groups: Sequence[dict[str, object]], *, rule: str) -> list[dict[str, object]]:
    """The groups (a page of ``duplicate_groups``) with each copy's resolution, file size and
    date, the copy to keep first (by ``rule``, one of ``KEEP_RULES``); items deleted meanwhile
    are left out, and groups left with one item dropped."""
    items = items_by_ref([ref for group in groups for ref in group["items"]])
    detailed = []
    for group in groups:
        copies = sorted((_copy_of(ref, items[ref]) for ref in group["items"] if ref in items), key=_keep_order(rule))
        if len(copies) > 1:
            detailed.append({"similarity": group["similarity"], "percent": round(group["similarity"] * 100, 1),
                             "size": group["size"], "copies": copies})  # fmt: skip
    return detailed
