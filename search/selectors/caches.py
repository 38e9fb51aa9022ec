"""Process caches: reads that steer plan choices or that each search would repeat, remembered
for up to a minute per process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


# Counts that steer plan choices only, so one up to a minute old is good enough and saves a
# query per search: key -> (when counted, count), per process.
CANDIDATE_COUNTS: dict[tuple, tuple[float, int]] = {}
INDEX_SIZES: dict[tuple, tuple[float, int]] = {}
TUNINGS: dict[tuple, tuple[float, tuple[int, int] | None]] = {}
ACTIVE_MODEL: dict[tuple, tuple[float, str]] = {}
_COUNT_SECONDS = 60


def remembered(
    counts: dict[tuple, tuple[float, T]], key: tuple, count: Callable[[], T], *, seconds: float = _COUNT_SECONDS
) -> T:
    now = time.monotonic()
    cached = counts.get(key)
    if cached is None or now - cached[0] > seconds:
        if len(counts) > 10_000:
            counts.clear()
        cached = counts[key] = (now, count())
    return cached[1]


def search_caches_forget() -> None:
    """Count and read again on the next search (tests, which change the data wholesale, call it;
    so does ``active_model_set``)."""
    CANDIDATE_COUNTS.clear()
    INDEX_SIZES.clear()
    TUNINGS.clear()
    ACTIVE_MODEL.clear()
