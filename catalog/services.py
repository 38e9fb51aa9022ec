"""Writes to the catalog: products and gallery images, always with a validated image.

Every write that stores a new or changed image sends ``catalog.signals.images_changed`` in
its transaction; the catalog does not know what is done with it (the search app embeds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from catalog.fetch import image_fetch
from catalog.images import ImageRejected, IntakeImage, image_validate, read_limited
from catalog.models import GalleryImage, Product
from catalog.signals import images_changed
from catalog.storage import content_lock, image_discard, image_name_for, image_store
from simsite.errors import ServiceError


def image_from_upload(*, file: UploadedFile, field: str = "image", decode_min_side: int | None = None) -> IntakeImage:
    """Validate an uploaded file as an image (reading no more than the size limit); with
    ``decode_min_side``, keep it decoded for a model (``IntakeImage.decoded``)."""
    file.seek(0)
    return image_validate(data=read_limited(file, field=field), filename=file.name, field=field,
                          decode_min_side=decode_min_side)  # fmt: skip


def image_from_source(
    *, file: UploadedFile | None, url: str | None, field: str = "image", decode_min_side: int | None = None
) -> IntakeImage:
    """Exactly one of an uploaded file or an http(s) URL, validated."""
    if file is not None and url:
        raise ServiceError("ambiguous_image", "Send either an image file or an image_url, not both.", field=field)
    if file is not None:
        return image_from_upload(file=file, field=field, decode_min_side=decode_min_side)
    if url:
        return image_fetch(url=url, field="image_url", decode_min_side=decode_min_side)
    raise ServiceError("image_required", "An image file or an image_url is required.", field=field)


def images_changed_send(*, product_ids: Iterable[int] = (), gallery_ids: Iterable[int] = ()) -> None:
    """Announce new or changed images (inside the transaction that stored them)."""
    product_ids, gallery_ids = list(product_ids), list(gallery_ids)
    if product_ids or gallery_ids:
        images_changed.send(sender=Product if product_ids else GalleryImage, product_ids=product_ids,
                            gallery_ids=gallery_ids)  # fmt: skip


def _raise_first(error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        field, errors = next(iter(error.error_dict.items()))
        raise ServiceError(errors[0].code or "invalid", f"{field}: {errors[0].messages[0]}", field=field) from None
    raise ServiceError("invalid", error.messages[0]) from None


def _discard_after_commit(*, name: str, sha256: str) -> None:
    # Robust: the rows are gone once this runs; a file that cannot be deleted is logged (the
    # orphan sweep takes it later) and neither stops the other discards nor fails the request.
    transaction.on_commit(lambda: image_discard(name=name, sha256=sha256), robust=True)


def _save_with_image(
    instance: Product | GalleryImage, *, image: IntakeImage, file_attr: str, then: Callable[[], None] | None = None
) -> None:
    """Store the image and save the row (then run ``then``) in one transaction.

    The content lock is held from storing the file until the row commits, so a concurrent
    delete of another row with the same bytes cannot remove the file in between. If the row
    is refused, the file goes again unless another row uses it.
    """
    try:
        with transaction.atomic():
            content_lock(sha256=image.sha256)
            stored = image_store(image=image)
            setattr(instance, file_attr, stored)
            instance.sha256, instance.width, instance.height = image.sha256, image.width, image.height
            # Field validation here; uniqueness and checks are the database's (the sku is
            # checked up front for a clear 409; a race ends as an IntegrityError below).
            instance.full_clean(validate_unique=False, validate_constraints=False)
            instance.save()
            if then is not None:
                then()
    except BaseException as error:
        image_discard(name=image_name_for(sha256=image.sha256, extension=image.extension), sha256=image.sha256)
        if isinstance(error, ValidationError):
            _raise_first(error)
        if isinstance(error, IntegrityError):
            raise ServiceError("conflict", "The row conflicts with an existing one.", status_code=409) from None
        raise


def product_create(
    *,
    sku: str,
    name: str,
    category: str,
    price: Decimal,
    image: IntakeImage,
    source_url: str = "",
    notify: bool = True,
) -> Product:
    """Create a product; its image is embedded in the background. Bulk callers turn
    ``notify`` off and announce their items together (``images_changed_send``)."""
    if Product.objects.filter(sku=sku).exists():
        raise ServiceError("duplicate_sku", f"A product with sku '{sku}' already exists.", field="sku", status_code=409)
    product = Product(sku=sku, name=name, category=category, price=price, source_url=source_url)
    _save_with_image(
        product,
        image=image,
        file_attr="image",
        then=(lambda: images_changed_send(product_ids=[product.pk])) if notify else None,
    )
    return product


def product_update(
    *,
    product: Product,
    image: IntakeImage | None = None,
    source_url: str | None = None,
    notify: bool = True,
    **fields: object,
) -> Product:
    """Change a product's fields and/or image; the old image file goes once nothing uses it,
    and a new image is embedded in the background."""
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
        except IntegrityError:
            product.refresh_from_db()
            raise ServiceError("conflict", "The change conflicts with an existing product.", status_code=409) from None
        return product
    changed = old_sha != image.sha256

    def then() -> None:
        if old_name != product.image.name:
            _discard_after_commit(name=old_name, sha256=old_sha)
        if notify and changed:
            images_changed_send(product_ids=[product.pk])

    try:
        _save_with_image(product, image=image, file_attr="image", then=then)
    except ServiceError:
        product.refresh_from_db()
        raise
    return product


def product_delete(*, product: Product) -> None:
    name, sha = product.image.name, product.sha256
    with transaction.atomic():
        product.delete()
        _discard_after_commit(name=name, sha256=sha)


def _delete_with_files(queryset: QuerySet, file_field: str) -> int:
    """Delete the rows (their vectors cascade) and, once committed, their unused files."""
    with transaction.atomic():
        files = list(queryset.values_list(file_field, "sha256").distinct())
        deleted = queryset.delete()[1].get(queryset.model._meta.label, 0)
        for name, sha in files:
            _discard_after_commit(name=name, sha256=sha)
    return deleted


def products_delete(*, ids: Iterable[int]) -> int:
    """Delete these products with their vectors and unused image files, in one statement."""
    return _delete_with_files(Product.objects.filter(pk__in=list(ids)), "image")


def gallery_image_create(*, image: IntakeImage, original_filename: str, notify: bool = True) -> GalleryImage:
    gallery_image = GalleryImage(original_filename=original_filename[:255])
    _save_with_image(
        gallery_image,
        image=image,
        file_attr="file",
        then=(lambda: images_changed_send(gallery_ids=[gallery_image.pk])) if notify else None,
    )
    return gallery_image


def gallery_images_upload(*, files: Iterable[UploadedFile]) -> tuple[list[GalleryImage], list[dict[str, str]]]:
    """Add every acceptable file, reporting each refused one with its reason; the accepted
    ones are announced together (one embedding job for the upload)."""
    created: list[GalleryImage] = []
    rejected: list[dict[str, str]] = []
    for file in files:
        try:
            image = image_from_upload(file=file, field="files")
            created.append(gallery_image_create(image=image, original_filename=file.name or image.sha256, notify=False))
        except ImageRejected as refusal:
            rejected.append({"filename": file.name or "", "code": refusal.code, "error": refusal.message})
    with transaction.atomic():
        images_changed_send(gallery_ids=[image.pk for image in created])
    return created, rejected


def gallery_image_replace(*, image: IntakeImage, filename: str) -> GalleryImage:
    """Add an image under ``filename``, replacing the images of that name (the earlier
    gallery tool addressed images by name), in one transaction."""
    with transaction.atomic():
        replaced = list(GalleryImage.objects.filter(original_filename=filename).values_list("pk", flat=True))
        created = gallery_image_create(image=image, original_filename=filename)
        if replaced:
            gallery_images_delete(ids=replaced)
    return created


def gallery_images_delete(*, ids: Iterable[int] | None = None, delete_all: bool = False) -> int:
    """Delete the given images (or all of them) with their vectors and unused files."""
    queryset = GalleryImage.objects.all() if delete_all else GalleryImage.objects.filter(pk__in=list(ids or []))
    return _delete_with_files(queryset, "file")


def gallery_images_delete_named(*, filename: str) -> int:
    """Delete every gallery image uploaded under ``filename``."""
    ids = GalleryImage.objects.filter(original_filename=filename).values_list("pk", flat=True)
    return gallery_images_delete(ids=list(ids))
