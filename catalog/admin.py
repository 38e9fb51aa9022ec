from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from catalog.csv_import import products_import_csv
from catalog.forms import ProductAdminForm, ProductImportForm
from catalog.models import GalleryImage, Product
from catalog.services import gallery_images_delete, product_create, product_delete, product_update
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
            product = Product.objects.get(pk=obj.pk)
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
        report = None
        form = ProductImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                report = products_import_csv(data=form.cleaned_data["file"].read())
            except ServiceError as error:
                form.add_error("file", error.message)
            else:
                level = messages.WARNING if report.failed else messages.SUCCESS
                self.message_user(
                    request,
                    f"{report.created} created, {report.updated} updated, {len(report.failed)} failed.",
                    level,
                )
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form, "report": report}
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # uploads go through the gallery API/page, which validate the image

    def delete_model(self, request: HttpRequest, obj: GalleryImage) -> None:
        gallery_images_delete(ids=[obj.pk])

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        gallery_images_delete(ids=list(queryset.values_list("pk", flat=True)))
