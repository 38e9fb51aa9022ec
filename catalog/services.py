"""Writes to the catalog: products and gallery images, always with a validated image."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction

from catalog.fetch import image_fetch
from catalog.images import ImageRejected, IntakeImage, image_validate, read_limited
from catalog.models import GalleryImage, Product
from catalog.storage import image_discard, image_store
from search.services import items_index
from simsite.errors import ServiceError


def image_from_upload(*, file: UploadedFile, field: str = "image") -> IntakeImage:
    """Validate an uploaded file as an image (reading no more than the size limit)."""
    file.seek(0)
    return image_validate(data=read_limited(file, field=field), filename=file.name, field=field)


def image_from_source(*, file: UploadedFile | None, url: str | None, field: str = "image") -> IntakeImage:
    """Exactly one of an uploaded file or an http(s) URL, validated."""
    if file is not None and url:
        raise ServiceError("ambiguous_image", "Send either an image file or an image_url, not both.", field=field)
    if file is not None:
        return image_from_upload(file=file, field=field)
    if url:
        return image_fetch(url=url, field="image_url")
    raise ServiceError("image_required", "An image file or an image_url is required.", field=field)


def _raise_first(error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        field, errors = next(iter(error.error_dict.items()))
        raise ServiceError(errors[0].code or "invalid", f"{field}: {errors[0].messages[0]}", field=field) from None
    raise ServiceError("invalid", error.messages[0]) from None


def _discard_after_commit(*, name: str, sha256: str) -> None:
    transaction.on_commit(lambda: image_discard(name=name, sha256=sha256))


def _save_with_image(instance: Product | GalleryImage, *, stored_name: str, sha256: str) -> None:
    """Validate and save a row whose image is already stored; remove the file if the row fails."""
    try:
        with transaction.atomic():
            instance.full_clean()
            instance.save()
    except ValidationError as error:
        image_discard(name=stored_name, sha256=sha256)
        _raise_first(error)
    except IntegrityError:
        image_discard(name=stored_name, sha256=sha256)
        raise ServiceError("conflict", "The row conflicts with an existing one.", status_code=409) from None
    except BaseException:
        image_discard(name=stored_name, sha256=sha256)
        raise


def product_create(
    *,
    sku: str,
    name: str,
    category: str,
    price: Decimal,
    image: IntakeImage,
    source_url: str = "",
    index: bool = True,
) -> Product:
    """Create a product; its image is embedded in the background unless ``index`` is off
    (bulk callers index all their items in one job)."""
    if Product.objects.filter(sku=sku).exists():
        raise ServiceError("duplicate_sku", f"A product with sku '{sku}' already exists.", field="sku", status_code=409)
    stored = image_store(image=image)
    product = Product(
        sku=sku,
        name=name,
        category=category,
        price=price,
        image=stored,
        source_url=source_url,
        sha256=image.sha256,
        width=image.width,
        height=image.height,
    )
    _save_with_image(product, stored_name=stored, sha256=image.sha256)
    if index:
        items_index(product_ids=[product.pk])
    return product


def product_update(
    *,
    product: Product,
    image: IntakeImage | None = None,
    source_url: str | None = None,
    index: bool = True,
    **fields: object,
) -> Product:
    """Change a product's fields and/or image; the old image file goes once nothing uses it,
    and a new image is embedded in the background (unless ``index`` is off)."""
    allowed = {"sku", "name", "category", "price"}
    unknown = set(fields) - allowed
    if unknown:
        raise ServiceError("invalid", f"Unknown product fields: {', '.join(sorted(unknown))}.")
    if "sku" in fields and Product.objects.filter(sku=fields["sku"]).exclude(pk=product.pk).exists():
        raise ServiceError(
            "duplicate_sku", f"A product with sku '{fields['sku']}' already exists.", field="sku", status_code=409
        )
    old_name, old_sha = product.image.name, product.sha256
    for key, value in fields.items():
        setattr(product, key, value)
    if source_url is not None:
        product.source_url = source_url
    if image is None:
        try:
            with transaction.atomic():
                product.full_clean()
                product.save()
        except ValidationError as error:
            product.refresh_from_db()
            _raise_first(error)
        return product
    stored = image_store(image=image)
    product.image, product.sha256, product.width, product.height = stored, image.sha256, image.width, image.height
    try:
        _save_with_image(product, stored_name=stored, sha256=image.sha256)
    except ServiceError:
        product.refresh_from_db()
        raise
    if old_name != stored:
        _discard_after_commit(name=old_name, sha256=old_sha)
    if index and old_sha != image.sha256:
        items_index(product_ids=[product.pk])
    return product


def product_delete(*, product: Product) -> None:
    name, sha = product.image.name, product.sha256
    with transaction.atomic():
        product.delete()
        _discard_after_commit(name=name, sha256=sha)


def gallery_image_create(*, image: IntakeImage, original_filename: str) -> GalleryImage:
    stored = image_store(image=image)
    gallery_image = GalleryImage(
        file=stored,
        original_filename=original_filename[:255],
        sha256=image.sha256,
        width=image.width,
        height=image.height,
    )
    _save_with_image(gallery_image, stored_name=stored, sha256=image.sha256)
    return gallery_image


def gallery_images_upload(*, files: Iterable[UploadedFile]) -> tuple[list[GalleryImage], list[dict[str, str]]]:
    """Add every acceptable file; report each refused one with its reason."""
    created: list[GalleryImage] = []
    rejected: list[dict[str, str]] = []
    for file in files:
        try:
            image = image_from_upload(file=file, field="files")
            created.append(gallery_image_create(image=image, original_filename=file.name or image.sha256))
        except ImageRejected as refusal:
            rejected.append({"filename": file.name or "", "code": refusal.code, "error": refusal.message})
    job = items_index(gallery_ids=[image.pk for image in created])
    return created, rejected, job


def gallery_images_delete(*, ids: Iterable[int] | None = None, delete_all: bool = False) -> int:
    """Delete the given images (or all of them) with their vectors and unused files."""
    queryset = GalleryImage.objects.all() if delete_all else GalleryImage.objects.filter(pk__in=list(ids or []))
    with transaction.atomic():
        files = list(queryset.values_list("file", "sha256").distinct())
        deleted = queryset.delete()[1].get(GalleryImage._meta.label, 0)
        for name, sha in files:
            _discard_after_commit(name=name, sha256=sha)
    return deleted
