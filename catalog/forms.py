from __future__ import annotations

from typing import Any

from django import forms

from catalog.models import Product
from catalog.services import image_from_source
from simsite.errors import ServiceError


class ProductAdminForm(forms.ModelForm):
    """Admin form whose image comes through the same intake as every other entry point."""

    upload = forms.FileField(required=False, help_text="PNG, JPEG, GIF, BMP or WebP, up to 16 MB.")
    image_url = forms.URLField(
        required=False, max_length=2048, assume_scheme="https", help_text="Or fetch the image from this URL."
    )

    class Meta:
        model = Product
        fields = ["sku", "name", "category", "price"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        upload, url = cleaned.get("upload"), cleaned.get("image_url")
        self.intake_image = None
        if upload is None and not url and self.instance.pk:
            return cleaned
        try:
            self.intake_image = image_from_source(file=upload, url=url)
        except ServiceError as error:
            raise forms.ValidationError(error.message, code=error.code) from None
        return cleaned


class ProductImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with header id,name,category,price,image_url")


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleImageField(forms.FileField):
    """Several files in one field (Django's documented recipe for multiple uploads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": "image/*"}))
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        files = [file for file in (data if isinstance(data, list | tuple) else [data]) if file]
        if not files:
            if self.required:
                raise forms.ValidationError(self.error_messages["required"], code="required")
            return []
        return [super(MultipleImageField, self).clean(file, initial) for file in files]


class GalleryUploadForm(forms.Form):
    files = MultipleImageField(help_text="PNG, JPEG, GIF, BMP or WebP, up to 16 MB each; choose or drop many at once.")
