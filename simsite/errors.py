"""The one exception type services raise for bad input; the API turns it into the error body."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal that the caller can fix: becomes a 4xx with a stable ``code``."""

    status_code = 400

    def __init__(self, code: str, message: str, *, field: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code
