from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class SearchConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "search"

    def ready(self) -> None:
        from search import receivers  # noqa: F401 - connects the catalog's signals
        from search.registry import MODELS

        # Every process (web, worker, beat, manage.py) stops at start on an unknown model key.
        if settings.EMBEDDING_DEFAULT_MODEL not in MODELS:
            raise ImproperlyConfigured(
                f"EMBEDDING_DEFAULT_MODEL is {settings.EMBEDDING_DEFAULT_MODEL!r}, which is not a known embedding "
                f"model; known: {', '.join(sorted(MODELS))}"
            )
