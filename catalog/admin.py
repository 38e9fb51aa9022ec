from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.models import AuditEntry
from accounts.services import audit_record
from catalog.csv_import import product_import_cancel, product_import_create
from catalog.forms import GalleryUploadForm, ProductAdminForm, ProductImportForm
from catalog.models import GalleryImage, Product, ProductImport, ProductImportFailure
from catalog.selectors import product_get
from catalog.services import (
    gallery_images_delete,
    gallery_images_upload,
    product_create,
    product_delete,
    product_update,
)
from simsite.errors import ServiceError


def _thumbnail(url: str) -> str:
    return format_html('<img src="{}" width="64" height="64" loading="lazy" alt="">', url)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductAdminForm
    list_display = ["thumbnail", "sku", "name", "category", "price", "updated_at"]
    list_display_links = ["thumbnail", "sku"]
    list_filter = ["category"]
    search_fields = ["name", "sku"]
    readonly_fields = ["thumbnail_large", "source_url", "sha256", "width", "height", "created_at", "updated_at"]
    fields = ["sku", "name", "category", "price", "upload", "image_url", *readonly_fields]
    change_list_template = "admin/catalog/product/change_list.html"
    # search/admin.py registers this admin again with its *Reindex selected* action.

    @admin.display(description="Image")
    def thumbnail(self, obj: Product) -> str:
        return _thumbnail(reverse("catalog:product-thumbnail", args=[obj.pk]))

    @admin.display(description="Image")
    def thumbnail_large(self, obj: Product) -> str:
        if not obj.pk:
            return "-"
        return format_html(
            '<img src="{}" width="200" height="200" alt="">', reverse("catalog:product-thumbnail", args=[obj.pk])
        )

    def save_model(self, request: HttpRequest, obj: Product, form: ProductAdminForm, change: bool) -> None:
        values = {key: form.cleaned_data[key] for key in ("sku", "name", "category", "price")}
        url = form.cleaned_data.get("image_url") or ""
        image = form.intake_image
        if change:
            product = product_get(pk=obj.pk)
            product_update(product=product, image=image, source_url=url if image else None, **values)
        else:
            product = product_create(**values, image=image, source_url=url)
        obj.pk = product.pk

    def delete_model(self, request: HttpRequest, obj: Product) -> None:
        product_delete(product=obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for product in queryset:
            product_delete(product=product)

    def get_urls(self) -> list:
        custom = [path("import/", self.admin_site.admin_view(self.import_view), name="catalog_product_import")]
        return custom + super().get_urls()

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = ProductImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                job = product_import_create(upload=form.cleaned_data["file"])
            except ServiceError as error:
                form.add_error("file", error.message)
            else:
                audit_record(user=request.user, action=AuditEntry.Action.PRODUCT_IMPORT, target=f"import {job.pk}",
                             detail={"filename": job.filename, "via": "admin"}, request=request)  # fmt: skip
                self.message_user(request, f"Import {job.pk} of {job.filename} queued; its report follows below.")
                return HttpResponseRedirect(reverse("admin:catalog_productimport_change", args=[job.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form}
        context["title"] = "Import products from CSV"
        return TemplateResponse(request, "admin/catalog/product/import.html", context)


@admin.register(GalleryImage)
class GalleryImageAdmin(admin.ModelAdmin):
    list_display = ["thumbnail", "original_filename", "width", "height", "uploaded_at"]
    search_fields = ["original_filename", "sha256"]
    readonly_fields = ["original_filename", "file", "sha256", "width", "height", "uploaded_at"]

    @admin.display(description="Image")
    def thumbnail(self, obj: GalleryImage) -> str:
        return _thumbnail(reverse("catalog:gallery-thumbnail", args=[obj.pk]))

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """Add many images at once, through the same intake as the gallery API (each refused
        file is named with its reason; the accepted ones are embedded in the background)."""
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = GalleryUploadForm(request.POST, request.FILES) if request.method == "POST" else GalleryUploadForm()
        if request.method == "POST" and form.is_valid():
            created, rejected = gallery_images_upload(files=form.cleaned_data["files"])
            if created:
                self.message_user(request, f"{len(created)} image{'s' if len(created) != 1 else ''} added; their "
                                  "features are generated in the background.")  # fmt: skip
            for refusal in rejected:
                self.message_user(request, f"Refused {refusal['filename']}: {refusal['error']}", messages.ERROR)
            if created:
                return HttpResponseRedirect(reverse("admin:catalog_galleryimage_changelist"))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "title": "Add gallery images"}  # fmt: skip
        return TemplateResponse(request, "admin/catalog/galleryimage/upload.html", context)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an image is replaced by uploading another, not edited

    def delete_model(self, request: HttpRequest, obj: GalleryImage) -> None:
        gallery_images_delete(ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        deleted = gallery_images_delete(ids=ids)
        audit_record(user=request.user, action=AuditEntry.Action.GALLERY_DELETE, target=f"{len(ids)} gallery images",
                     detail={"deleted": deleted, "ids": ids[:1000], "via": "admin"}, request=request)  # fmt: skip


class ProductImportFailureInline(admin.TabularInline):
    model = ProductImportFailure
    fields = ["row", "code", "error"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0


@admin.register(ProductImport)
class ProductImportAdmin(admin.ModelAdmin):
    """CSV imports with their progress and per-row report (read-only: imports are made
    from the product list's *Import CSV* page)."""

    list_display = ["id", "filename", "state", "progress", "created", "updated", "failure_count", "created_at"]
    list_filter = ["state"]
    actions = ["cancel"]
    readonly_fields = ["filename", "state", "progress", "created", "updated", "failure_count", "error",
                       "created_at", "started_at", "finished_at"]  # fmt: skip
    fields = readonly_fields
    inlines = [ProductImportFailureInline]

    @admin.display(description="Progress")
    def progress(self, obj: ProductImport) -> str:
        total = "?" if obj.total is None else obj.total
        return f"{obj.done} / {total} rows ({obj.percent}%)"

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).annotate(failure_total=Count("failures"))

    @admin.display(description="Failed rows", ordering="failure_total")
    def failure_count(self, obj: ProductImport) -> int:
        return obj.failure_total

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Cancel the selected imports (rows imported so far are kept)")
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        running = list(queryset.active())
        for job in running:
            product_import_cancel(job=job)
        self.message_user(request, f"{len(running)} import{'s' if len(running) != 1 else ''} cancelled"
                          + ("; the others had finished." if len(running) < queryset.count() else "."))  # fmt: skip
