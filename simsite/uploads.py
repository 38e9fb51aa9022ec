"""Request bodies bounded while they arrive, before anything is buffered or spooled to disk.

``RequestSizeMiddleware`` refuses a declared body over ``REQUEST_MAX_BYTES`` before reading a
byte of it; ``LimitedUploadHandler`` (first of the upload handlers) counts what a multipart
body really delivers - chunked bodies declare nothing - and stops at the same total, and
stops any one file at ``UPLOAD_MAX_FILE_BYTES``. Both answer 413 ``request_too_large``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, HttpResponse, JsonResponse

from simsite.errors import ServiceError


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


class RequestTooLarge(RequestDataTooBig):
    """A body (or one file of it) over the limit: 413 through the API's error handler."""


class RequestSizeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared.isdigit() and int(declared) > settings.REQUEST_MAX_BYTES:
            message = f"The request body is larger than {_mb(settings.REQUEST_MAX_BYTES)}."
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {"error": {"code": "request_too_large", "message": message, "field": None}}, status=413
                )
            return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class LimitedUploadHandler(FileUploadHandler):
    """Counts a multipart body's bytes as they are parsed; passes them on to the next handler."""

    def handle_raw_input(self, input_data: Any, META: dict, content_length: int, boundary: bytes,  # noqa: N803
                         encoding: str | None = None) -> None:  # fmt: skip
        self.total = 0

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.file_bytes = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.total += len(raw_data)
        self.file_bytes += len(raw_data)
        if self.total > settings.REQUEST_MAX_BYTES:
            raise RequestTooLarge(f"The request body is larger than {_mb(settings.REQUEST_MAX_BYTES)}.")
        if self.file_bytes > settings.UPLOAD_MAX_FILE_BYTES:
            raise RequestTooLarge(f"'{self.file_name}' is larger than {_mb(settings.UPLOAD_MAX_FILE_BYTES)}.")
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None


def too_large(error: RequestDataTooBig) -> ServiceError:
    """The API's answer to a body over a limit (ours, or Django's DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    message = str(error) if isinstance(error, RequestTooLarge) else "The request's form data is too large."
    return ServiceError("request_too_large", message, status_code=413)
