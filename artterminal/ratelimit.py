"""Fixed-window rate limits in Django's cache, shared by every process when it is Redis."""

from __future__ import annotations

import math
import time

from django.core.cache import cache


def rate_limit_hit(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Count one hit; None while under `limit`, else the seconds until the window resets.

    `add` then `incr` are both atomic in Redis (and under the lock of the local memory
    cache), so concurrent requests on different processes never share a count.
    """
    now = time.time()
    window = int(now // window_seconds)
    bucket = f"ratelimit:{key}:{window}"
    # The entry outlives its window a little so a slow request still finds it.
    cache.add(bucket, 0, timeout=window_seconds + 5)
    try:
        count = cache.incr(bucket)
    except ValueError:  # evicted between add and incr: this hit starts the count again
        cache.add(bucket, 1, timeout=window_seconds + 5)
        count = 1
    if count <= limit:
        return None
    return max(1, math.ceil((window + 1) * window_seconds - now))


def rate_limit_reached(*, key: str, limit: int, window_seconds: int) -> int | None:
    """Without counting: the seconds until the window resets when `key` already has
    `limit` hits in it, else None."""
    now = time.time()
    window = int(now // window_seconds)
    if (cache.get(f"ratelimit:{key}:{window}") or 0) < limit:
        return None
    return max(1, math.ceil((window + 1) * window_seconds - now))
