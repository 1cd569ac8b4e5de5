"""Gallery pages at scale: the gallery grid and a terminal page with 10 000 images,
against the same pages with 10 images.

Render time is measured over HTTP against a real Daphne (sequential requests, so it is
the page's own cost, not queueing); the SQL query count comes from Django's test client
on the same database (`bench.site count_queries`).
"""

from __future__ import annotations

import time

import httpx

from bench import server
from bench.common import Entry, Options, Outcome, at_most, percentile

LARGE = 10_000
SMALL = 10
REQUESTS = 60
WARMUP = 3
PAGES = {"index": "/", "terminal": "/terminals/gallery/"}


def _site(options: Options, images: int) -> tuple[server.Site, dict[str, int]]:
    site, listener = server.prepare_site(options.workdir / f"gallery-{images}")
    site.manage("seed_terminal", slug="gallery", images=images)
    queries = site.manage("count_queries", paths=list(PAGES.values()))
    server.start_site(site, listener)
    return site, {name: queries[path] for name, path in PAGES.items()}


def _time_ms(client: httpx.Client, path: str) -> float:
    began = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - began) * 1000
    response.raise_for_status()
    return elapsed


def _measure(
    small: server.Site, large: server.Site, requests: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Requests alternate between the two sites, so a load that comes and goes on the
    machine weighs on both sides alike."""
    small_times: dict[str, list[float]] = {name: [] for name in PAGES}
    large_times: dict[str, list[float]] = {name: [] for name in PAGES}
    with (
        httpx.Client(base_url=small.url, timeout=60) as to_small,
        httpx.Client(base_url=large.url, timeout=60) as to_large,
    ):
        for name, path in PAGES.items():
            for attempt in range(WARMUP + requests):
                small_ms, large_ms = _time_ms(to_small, path), _time_ms(to_large, path)
                if attempt >= WARMUP:
                    small_times[name].append(small_ms)
                    large_times[name].append(large_ms)
    return small_times, large_times


def run(options: Options) -> Outcome:
    large, requests = (200, 3) if options.quick else (LARGE, REQUESTS)
    small_site, small_queries = _site(options, SMALL)
    try:
        large_site, large_queries = _site(options, large)
        try:
            small_times, large_times = _measure(small_site, large_site, requests)
        finally:
            server.stop_site(large_site)
    finally:
        server.stop_site(small_site)
    outcome = Outcome()
    for name in PAGES:
        value, baseline = percentile(large_times[name], 50), percentile(small_times[name], 50)
        outcome.entries.append(
            Entry(
                f"gallery.{name}_ms",
                value,
                "ms",
                baseline,
                "≤ 1.5× baseline",
                at_most(value, 1.5 * baseline),
            )
        )
        outcome.entries.append(
            Entry(
                f"gallery.{name}_queries",
                large_queries[name],
                "queries",
                small_queries[name],
                "= baseline",
                large_queries[name] == small_queries[name],
            )
        )
        outcome.distributions[f"gallery {name} page render (ms)"] = {
            f"{SMALL} images": small_times[name],
            f"{large} images": large_times[name],
        }
    outcome.notes.append(
        f"gallery: median of {requests} sequential requests per page, alternating between "
        f"{large} and {SMALL} images"
    )
    return outcome
