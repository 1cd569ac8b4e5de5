"""Fan-out: many viewers on one terminal, one controller navigating it.

The same clients run twice: against a real Daphne serving the site (Channels, the
in-memory layer, and Redis too when REDIS_URL is set) and against the minimal
`websockets` broadcast server (`bench.broadcast_server`). Each navigation's send time
is kept; every viewer notes when the `terminal.state` of that version arrives. At most
WINDOW navigations are in flight (sent but not yet seen by every viewer), so the server
is kept busy without an unbounded queue.

The runs alternate, ROUNDS times (baseline, in-memory, Redis, baseline, ...), and each
figure pools its rounds: on a shared machine whose speed drifts from one minute to the
next, a baseline measured once, before everything else, set the ratios by luck.

Each server runs on a CPU of its own and the clients on the others (bench.common.
cpu_split), so neither side's work lands on the other's core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

from bench import server
from bench.common import (
    Entry,
    Options,
    Outcome,
    at_least,
    at_most,
    cpu_split,
    percentile,
    pinned,
)

VIEWERS = 200
NAVIGATIONS = 300
ROUNDS = 2
WINDOW = 4
CONNECTS_AT_ONCE = 20
SETTLE_QUIET_SECONDS = 0.5
# Bounds that keep the whole run short on a slow server: navigations stop being sent
# after SEND_SECONDS, and those in flight then get DRAIN_SECONDS more to arrive.
SEND_SECONDS = 60.0
DRAIN_SECONDS = 30.0


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    deliveries: int = 0
    expected: int = 0
    seconds: float = 0.0
    navigations: int = 0

    @property
    def throughput(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def pooled(cls, runs: list[Run]) -> Run:
        """The rounds as one run: every latency, and deliveries over the time they took."""
        return cls(
            latencies_ms=[latency for run in runs for latency in run.latencies_ms],
            deliveries=sum(run.deliveries for run in runs),
            expected=sum(run.expected for run in runs),
            seconds=sum(run.seconds for run in runs),
            navigations=sum(run.navigations for run in runs),
        )


@dataclass
class _Shared:
    viewers: int
    counts: Counter[int] = field(default_factory=Counter)
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    complete: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    last_message: float = 0.0
    first_state: int = 0


async def _read(ws: ClientConnection, shared: _Shared, *, is_viewer: bool) -> None:
    first = True
    async for text in ws:
        now = time.perf_counter()
        shared.last_message = now
        message = json.loads(text)
        if message.get("type") != "terminal.state":
            continue
        if first:
            first = False
            if is_viewer:
                shared.first_state += 1
            continue
        if not is_viewer:
            continue
        version = int(message["version"])
        shared.arrivals.append((version, now))
        shared.counts[version] += 1
        if shared.counts[version] == shared.viewers:
            shared.complete += 1
            shared.progress.set()


async def drive(
    *,
    viewer_url: str,
    controller_url: str,
    origin: str,
    cookie: str,
    viewers: int,
    navigations: int,
) -> Run:
    """Connect the viewers and the controller, navigate, and collect every delivery."""
    shared = _Shared(viewers=viewers)
    sockets: list[ClientConnection] = []
    readers: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)

    async def open_viewer() -> None:
        async with gate:
            ws = await connect(viewer_url, origin=origin, open_timeout=60, max_size=None)  # type: ignore[arg-type]
        sockets.append(ws)
        readers.append(asyncio.create_task(_read(ws, shared, is_viewer=True)))

    try:
        await asyncio.gather(*(open_viewer() for _ in range(viewers)))
        controller = await connect(
            controller_url,
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie} if cookie else None,
            open_timeout=60,
            max_size=None,
        )
        sockets.append(controller)
        readers.append(asyncio.create_task(_read(controller, shared, is_viewer=False)))
        # Joining makes every socket hear every other's arrival: let that storm pass.
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline and (
            shared.first_state < viewers
            or time.perf_counter() - shared.last_message < SETTLE_QUIET_SECONDS
        ):
            await asyncio.sleep(0.1)

        sent_at: dict[int, float] = {}
        start = time.perf_counter()
        stop = start + SEND_SECONDS
        for k in range(1, navigations + 1):
            while k - 1 - shared.complete >= WINDOW and time.perf_counter() < stop:
                shared.progress.clear()
                try:
                    await asyncio.wait_for(
                        shared.progress.wait(), max(0.01, stop - time.perf_counter())
                    )
                except TimeoutError:
                    break
            if time.perf_counter() >= stop:
                break
            sent_at[k] = time.perf_counter()
            await controller.send(json.dumps({"type": "terminal.navigate", "action": "next"}))
        stop = time.perf_counter() + DRAIN_SECONDS
        while shared.complete < len(sent_at) and time.perf_counter() < stop:
            shared.progress.clear()
            try:
                await asyncio.wait_for(
                    shared.progress.wait(), max(0.01, stop - time.perf_counter())
                )
            except TimeoutError:
                break
    finally:
        for ws in sockets:
            await ws.close()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    run = Run(expected=len(sent_at) * viewers, navigations=len(sent_at))
    base = _base_version(shared.arrivals)
    last = start
    for version, arrived in shared.arrivals:
        sent = sent_at.get(version - base)
        if sent is None:
            continue
        run.latencies_ms.append((arrived - sent) * 1000)
        run.deliveries += 1
        last = max(last, arrived)
    run.seconds = last - start
    return run


def _base_version(arrivals: list[tuple[int, float]]) -> int:
    """Versions count on from the terminal's version before the first navigation."""
    return min((version for version, _ in arrivals), default=1) - 1


def _bind() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    return listener


@contextlib.contextmanager
def baseline_server(cpus: frozenset[int] | None = None) -> Iterator[str]:
    """The `websockets` broadcast server in its own process (on `cpus`), as the site
    runs in its own; yields its URL."""
    listener = _bind()
    port = listener.getsockname()[1]
    with pinned(cpus):
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.broadcast_server", "--fd", str(listener.fileno())],
            cwd=server.REPO_ROOT,
            pass_fds=(listener.fileno(),),
        )
    listener.close()
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _baseline(viewers: int, navigations: int) -> Run:
    split = cpu_split()
    with baseline_server(split and split.server) as url, pinned(split and split.clients):
        return await drive(
            viewer_url=url,
            controller_url=url,
            origin=url.replace("ws://", "http://").rstrip("/"),
            cookie="",
            viewers=viewers,
            navigations=navigations,
        )


async def _site(options: Options, label: str, viewers: int, navigations: int, **env: str) -> Run:
    # One controller navigating as fast as the viewers keep up is far past what a
    # person sends; the per-socket rate limit would rightly close it.
    env.setdefault("WEBSOCKET_MESSAGES_PER_SECOND", "1000")
    env.setdefault("WEBSOCKET_MESSAGE_BURST", "1000")
    site, listener = server.prepare_site(options.workdir / f"fanout-{label}", **env)
    seeded = site.manage("seed_terminal", slug="fanout", images=20)
    split = cpu_split()
    with pinned(split and split.server):
        server.start_site(site, listener)
    try:
        cookie = "; ".join(f"{name}={value}" for name, value in seeded["owner"].items())
        url = f"{site.ws_url}/ws/terminals/{seeded['slug']}/"
        with pinned(split and split.clients):
            return await drive(
                viewer_url=url,
                controller_url=url,
                origin=site.url,
                cookie=cookie,
                viewers=viewers,
                navigations=navigations,
            )
    finally:
        server.stop_site(site)


def _entries(label: str, run: Run, baseline: Run) -> list[Entry]:
    p50, p99 = percentile(run.latencies_ms, 50), percentile(run.latencies_ms, 99)
    base_p50, base_p99 = (
        percentile(baseline.latencies_ms, 50),
        percentile(baseline.latencies_ms, 99),
    )
    lost = run.expected - run.deliveries
    return [
        Entry(f"{label}.p50_ms", p50, "ms", base_p50, "information", True),
        Entry(f"{label}.p99_ms", p99, "ms", base_p99, "≤ 2× baseline", at_most(p99, 2 * base_p99)),
        Entry(
            f"{label}.throughput",
            run.throughput,
            "deliveries/s",
            baseline.throughput,
            "≥ 0.5× baseline",
            at_least(run.throughput, 0.5 * baseline.throughput),
        ),
        Entry(
            f"{label}.lost",
            lost,
            "deliveries",
            baseline.expected - baseline.deliveries,
            "0",
            lost == 0,
        ),
    ]


async def _run(options: Options) -> Outcome:
    viewers, navigations = (5, 10) if options.quick else (VIEWERS, NAVIGATIONS)
    rounds = 1 if options.quick else ROUNDS
    redis_url = os.environ.get("REDIS_URL", "")
    runs: dict[str, list[Run]] = {"baseline": [], "memory": [], "redis": []}
    # The clients' first run is a third slower than the next ones, whatever the server
    # (their process warming up): a run thrown away first keeps that off the baseline,
    # which always goes first.
    await _baseline(viewers, navigations)
    for number in range(1, rounds + 1):
        runs["baseline"].append(await _baseline(viewers, navigations))
        runs["memory"].append(
            await _site(options, f"memory-{number}", viewers, navigations, REDIS_URL="")
        )
        if redis_url:
            runs["redis"].append(
                await _site(options, f"redis-{number}", viewers, navigations, REDIS_URL=redis_url)
            )
    baseline, memory = Run.pooled(runs["baseline"]), Run.pooled(runs["memory"])

    outcome = Outcome()
    outcome.entries += _entries("fanout", memory, baseline)
    outcome.distributions["fanout latency (ms)"] = {
        "websockets baseline": baseline.latencies_ms,
        "Daphne + in-memory layer": memory.latencies_ms,
    }
    if redis_url:
        redis = Run.pooled(runs["redis"])
        outcome.entries += _entries("fanout_redis", redis, baseline)
        outcome.distributions["fanout latency (ms)"]["Daphne + Redis layer"] = redis.latencies_ms
    outcome.notes.append(
        f"fanout: {viewers} viewers, at most {WINDOW} navigations in flight, {rounds} "
        f"alternating rounds pooled; navigations sent within {SEND_SECONDS:.0f} s: "
        f"baseline {baseline.navigations}, Daphne {memory.navigations} of "
        f"{navigations * rounds}"
    )
    for label in ("baseline", "memory", "redis"):
        if len(runs[label]) > 1:
            rates = ", ".join(f"{run.throughput:,.0f}" for run in runs[label])
            tails = ", ".join(f"{percentile(run.latencies_ms, 99):.1f}" for run in runs[label])
            outcome.notes.append(f"fanout: {label} by round: deliveries/s {rates}; p99 ms {tails}")
    return outcome


def run(options: Options) -> Outcome:
    return asyncio.run(_run(options))
