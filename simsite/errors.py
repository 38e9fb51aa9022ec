"""The one exception type services raise for bad input; the API turns it into the error body."""

from __future__ import annotations

import re


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


# An absolute file-system path inside a message (a POSIX one, or a Windows drive path).
_PATH = re.compile(r"(?<![\w:/.])(?:/[^\s'\"():,;]+)+|\b[A-Za-z]:\\[^\s'\"]+")


def failure_reason(error: BaseException, limit: int = 300) -> str:
    """Why something failed, fit to show to users: a ServiceError's message, else the exception
    type and text with server paths left out (they say nothing to a user and tell an attacker
    where things live)."""
    if isinstance(error, ServiceError):
        return error.message[:limit]
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = _PATH.sub("<path>", str(error))
    return f"{type(error).__name__}: {text}"[:limit]
