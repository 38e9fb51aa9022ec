"""Importing products from the seed CSV format ``id,name,category,price,image_url``.

Each row is its own transaction: bad rows are reported with their row number (the header
is row 1) and reason while good rows go in. Images are fetched a few at a time in threads,
in a bounded window, so memory stays flat however long the file is.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.conf import settings

from catalog.fetch import image_fetch
from catalog.images import IntakeImage, image_validate, read_limited
from catalog.models import Product
from catalog.services import product_create, product_update
from search.services import items_index
from simsite.errors import ServiceError

COLUMNS = ("id", "name", "category", "price", "image_url")
_LIMITS = {"id": 64, "name": 255, "category": 100}


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    failed: list[dict[str, object]] = field(default_factory=list)
    product_ids: list[int] = field(default_factory=list)
    job_id: int | None = None


@dataclass(frozen=True)
class _Row:
    number: int
    sku: str
    name: str
    category: str
    price: Decimal
    image_ref: str


def _parse(number: int, raw: dict[str | None, str | None]) -> _Row:
    if raw.get(None):
        raise ServiceError("csv_row_invalid", f"has {len(COLUMNS) + len(raw[None])} cells; expected {len(COLUMNS)}")
    values: dict[str, str] = {}
    for column in COLUMNS:
        value = (raw.get(column) or "").strip()
        if not value:
            raise ServiceError("csv_row_invalid", f"'{column}' is missing")
        if column in _LIMITS and len(value) > _LIMITS[column]:
            raise ServiceError("csv_row_invalid", f"'{column}' is longer than {_LIMITS[column]} characters")
        values[column] = value
    try:
        price = Decimal(values["price"])
    except InvalidOperation:
        raise ServiceError("csv_row_invalid", f"price '{values['price']}' is not a number") from None
    if not price.is_finite() or price < 0:
        raise ServiceError("csv_row_invalid", f"price '{values['price']}' must be zero or more")
    if price.as_tuple().exponent < -2 or price >= Decimal("1e10"):
        raise ServiceError("csv_row_invalid", f"price '{values['price']}' has more than 2 decimals or is too large")
    return _Row(number, values["id"], values["name"], values["category"], price, values["image_url"])


def _load_local(reference: str) -> IntakeImage:
    root = settings.CATALOG_IMPORT_ROOT
    if root is None:
        raise ServiceError("path_not_allowed", "local image paths need CATALOG_IMPORT_ROOT to be set")
    path = (root / reference).resolve()
    if not path.is_relative_to(root):
        raise ServiceError("path_not_allowed", f"'{reference}' is outside CATALOG_IMPORT_ROOT")
    if not path.is_file():
        raise ServiceError("file_not_found", f"'{reference}' does not exist under CATALOG_IMPORT_ROOT")
    with path.open("rb") as handle:
        return image_validate(data=read_limited(handle), filename=path.name)


def _load_image(row: _Row) -> IntakeImage:
    if "://" in row.image_ref:
        return image_fetch(url=row.image_ref)
    return _load_local(row.image_ref)


def _rows(data: bytes) -> Iterator[tuple[int, dict[str | None, str | None]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError("csv_encoding", "The CSV file is not UTF-8 text.", field="file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip().lower() for name in (reader.fieldnames or [])]
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise ServiceError(
            "csv_bad_header",
            f"The CSV header must contain {','.join(COLUMNS)}; missing: {', '.join(missing)}.",
            field="file",
        )
    reader.fieldnames = header
    for raw in reader:
        yield reader.line_num, raw


def csv_row_count(*, data: bytes) -> int:
    """Number of data rows, for progress bars."""
    return sum(1 for _ in _rows(data))


def products_import_csv(*, data: bytes, progress: Callable[[], None] | None = None) -> ImportReport:
    """Upsert products by sku from seed-format CSV bytes; see the module docstring."""
    if len(data) > settings.CSV_IMPORT_MAX_BYTES:
        raise ServiceError(
            "file_too_large", f"The CSV file is larger than {settings.CSV_IMPORT_MAX_BYTES} bytes.", field="file"
        )
    rows = _rows(data)
    report = ImportReport()
    window = settings.CSV_IMPORT_FETCH_WORKERS * 2
    # Each entry: row number, then the parsed row with its image being loaded, or the parse error.
    pending: deque[tuple[int, tuple[_Row, Future[IntakeImage]] | ServiceError]] = deque()

    def submit(pool: ThreadPoolExecutor) -> bool:
        try:
            number, raw = next(rows)
        except StopIteration:
            return False
        try:
            row = _parse(number, raw)
        except ServiceError as error:
            pending.append((number, error))
        else:
            pending.append((number, (row, pool.submit(_load_image, row))))
        return True

    with ThreadPoolExecutor(max_workers=settings.CSV_IMPORT_FETCH_WORKERS) as pool:
        more = True
        while more or pending:
            while more and len(pending) < window:
                more = submit(pool)
            if not pending:
                break
            number, entry = pending.popleft()
            try:
                if isinstance(entry, ServiceError):
                    raise entry
                row, image = entry
                _upsert(row, image.result(), report)
            except ServiceError as error:
                report.failed.append({"row": number, "code": error.code, "error": error.message})
            if progress is not None:
                progress()
    job = items_index(product_ids=report.product_ids)
    report.job_id = job.pk if job else None
    return report


def _upsert(row: _Row, image: IntakeImage, report: ImportReport) -> None:
    fields = {
        "name": row.name,
        "category": row.category,
        "price": row.price,
        "image": image,
        "source_url": row.image_ref if "://" in row.image_ref else "",
        "index": False,  # the whole import is indexed by one job at the end
    }
    existing = Product.objects.filter(sku=row.sku).first()
    if existing is None:
        product = product_create(sku=row.sku, **fields)
        report.created += 1
    else:
        product = product_update(product=existing, **fields)
        report.updated += 1
    report.product_ids.append(product.pk)
