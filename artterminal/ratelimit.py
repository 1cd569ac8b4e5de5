"""Fixed-window rate limits in Django's cache, shared by every process when it is Redis."""

from __future__ import annotations

import math
import time

from django.core.cache import cache


def _window(key: str, window_seconds: int) -> tuple[str, int]:
    """The cache entry counting `key` in the current window, and the seconds it has left."""
    now = time.time()
    window = int(now // window_seconds)
    return f"ratelimit:{key}:{window}", max(1, math.ceil((window + 1) * window_seconds - now))


def rate_limit_hit(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Count one hit; None while under `limit`, else the seconds until the window resets.

    `add` then `incr` are both atomic in Redis (and under the lock of the local memory
    cache), so concurrent requests on different processes never share a count.
    """
    bucket, left = _window(key, window_seconds)
    # The entry outlives its window a little so a slow request still finds it.
    cache.add(bucket, 0, timeout=window_seconds + 5)
    try:
        count = cache.incr(bucket)
    except ValueError:  # evicted between add and incr: this hit starts the count again
        cache.add(bucket, 1, timeout=window_seconds + 5)
        count = 1
    return None if count <= limit else left


def rate_limit_reached(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Without counting: the seconds until the window resets when `key` already has
    `limit` hits in it, else None."""
    bucket, left = _window(key, window_seconds)
    return None if (cache.get(bucket) or 0) < limit else left


def minutes_text(seconds: int) -> str:
    """A wait as people read it in a refusal: "1 minute", "14 minutes"."""
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
