"""The token endpoint: `POST /api/realtime/` with the built-in engine as its upstream.

20 logged-in controllers ask for voice sessions at once. The baseline is the call the
endpoint makes on their behalf, `POST /engine/v1/realtime/client_secrets` with the same
body and the server key, at the same concurrency against the same engine: what is left
is the endpoint's own cost (session, CSRF, rate limit, VoiceSession row, the HTTP hop).

The engine is the endpoint's upstream, so it runs as one, in a Daphne of its own: as
docs/deploy.md runs it past one process (every site process mints at ENGINE_URL, the
process /engine/ is routed to), and as OpenAI is a service apart. Measured inside the
site's own process instead, each token request would also pay for the mint it waits on.

The endpoint allows each user TOKENS_PER_MINUTE sessions a minute; rather than raising
that limit for the bench, each request goes to an account that has not used it up, so
the limit's own code runs as in production.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import server
from bench.common import Entry, Options, Outcome, at_least, at_most, percentile

USERS = 20
REQUESTS = 400
WARMUP = 20
TOKENS_PER_MINUTE = 10  # voice.views.TOKENS_PER_MINUTE


@dataclass
class Load:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0


async def _load(
    requests: int,
    send: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]],
    *,
    expected: int = 200,
) -> Load:
    """`requests` calls of `send` by USERS concurrent clients; `send` gets the index.
    A response with another status than `expected` counts as an error."""
    load = Load()
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=USERS, max_keepalive_connections=USERS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def user() -> None:
            for index in counter:
                began = time.perf_counter()
                response = await send(client, index)
                elapsed = (time.perf_counter() - began) * 1000
                if response.status_code == expected:
                    load.latencies_ms.append(elapsed)
                else:
                    load.errors.append(f"{response.status_code} {response.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(USERS)))
        load.seconds = time.perf_counter() - began
    return load


async def _run(options: Options) -> Outcome:
    requests, warmup = (10, 2) if options.quick else (REQUESTS, WARMUP)
    accounts = math.ceil((requests + warmup) / TOKENS_PER_MINUTE) + USERS
    engine, engine_listener = server.prepare_site(options.workdir / "engine")
    site, listener = server.prepare_site(options.workdir / "token")
    site.env.update(ENGINE_URL=engine.engine_url, ENGINE_API_KEY=engine.api_key)
    seeded = site.manage("seed_terminal", slug="token", images=5, controllers=accounts)
    body = site.manage("mint_body", slug="token")
    server.start_site(engine, engine_listener)
    try:
        server.start_site(site, listener)
    except BaseException:
        server.stop_site(engine)
        raise
    controllers: list[dict[str, str]] = seeded["controllers"]

    async def mint(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.post(
            f"{engine.engine_url}/realtime/client_secrets",
            json=body,
            headers={"Authorization": f"Bearer {engine.api_key}"},
        )

    used = iter(range(10**9))

    async def token(client: httpx.AsyncClient, index: int) -> httpx.Response:
        cookies: dict[str, Any] = controllers[next(used) // TOKENS_PER_MINUTE]
        csrf = cookies["csrftoken"]
        return await client.post(
            f"{site.url}/api/realtime/",
            json={"terminal": seeded["slug"]},
            headers={
                "X-CSRFToken": csrf,
                "Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items()),
            },
        )

    async def login_only(client: httpx.AsyncClient, index: int) -> httpx.Response:
        """The endpoint as far as the login: session and user read, then refused for
        the missing CSRF token (403), before any rate limit, row or mint."""
        cookies = controllers[0]
        return await client.post(
            f"{site.url}/api/realtime/",
            json={"terminal": seeded["slug"]},
            headers={"Cookie": "; ".join(f"{name}={value}" for name, value in cookies.items())},
        )

    try:
        await _load(warmup, mint)
        await _load(warmup, token)
        baseline = await _load(requests, mint)
        endpoint = await _load(requests, token)
        floor = await _load(requests, login_only, expected=403)
    finally:
        server.stop_site(site)
        server.stop_site(engine)

    outcome = Outcome()
    p50, p99 = percentile(endpoint.latencies_ms, 50), percentile(endpoint.latencies_ms, 99)
    b50, b99 = percentile(baseline.latencies_ms, 50), percentile(baseline.latencies_ms, 99)
    outcome.entries += [
        Entry(
            "token.requests_per_s",
            endpoint.rate,
            "requests/s",
            baseline.rate,
            "≥ baseline / 1.3",
            at_least(endpoint.rate, baseline.rate / 1.3),
        ),
        Entry("token.p50_ms", p50, "ms", b50, "information", True),
        Entry("token.p99_ms", p99, "ms", b99, "≤ 1.3× baseline", at_most(p99, 1.3 * b99)),
        Entry(
            "token.login_only_per_s",
            floor.rate,
            "requests/s",
            baseline.rate,
            "information",
            True,
        ),
        Entry(
            "token.errors",
            len(endpoint.errors),
            "responses",
            len(baseline.errors),
            "0",
            not endpoint.errors,
        ),
    ]
    outcome.distributions["token latency (ms)"] = {
        "engine client_secrets (baseline)": baseline.latencies_ms,
        "POST /api/realtime/": endpoint.latencies_ms,
    }
    outcome.notes.append(
        f"token: {requests} requests by {USERS} concurrent users; the engine in its own Daphne"
    )
    outcome.notes.append(
        "token: login_only is the endpoint refusing a request at its CSRF check, after "
        "reading the session and the user: the least any logged-in request costs this site"
    )
    for error in sorted(set(endpoint.errors + baseline.errors))[:3]:
        outcome.notes.append(f"token error: {error}")
    return outcome


def run(options: Options) -> Outcome:
    return asyncio.run(_run(options))
