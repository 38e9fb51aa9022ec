"""OpenAPI naming: nested ``InputSerializer`` classes are named after their API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema


class AutoSchema(BaseAutoSchema):
    def get_serializer_name(self, serializer: Any, direction: str) -> str:
        qualname = type(serializer).__qualname__
        if "." not in qualname:
            return super().get_serializer_name(serializer, direction)
        # "GalleryDeleteApi.InputSerializer" -> "GalleryDeleteInput"
        outer, inner = qualname.rsplit(".", 1)
        return outer.removesuffix("Api") + inner.removesuffix("Serializer")
