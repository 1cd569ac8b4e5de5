"""Servers die under live sockets: a Daphne process is SIGKILLed and restarted on its
port, or Redis restarts empty. Clients that reconnect like the pages converge on the
stored state; no navigation or voice tool call runs twice; nothing acknowledged is lost.

The task worker killed mid-image is covered by
tests/gallery/test_generation.py::test_a_worker_killed_mid_job_leaves_no_image_generating_forever
(the image is retried by the next worker; after three lost attempts it fails with a reason,
tests/gallery/test_generation.py::test_stale_generating_images_are_requeued_then_failed_after_three_attempts).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.faults.conftest import Daphnes
from tests.faults.scenario import assert_converged, drive
from tests.live import RedisServer

pytestmark = pytest.mark.timeout(600)

# (faults, seconds of load): a quick run in `make test`, the long one in `make test-faults`.
RUNS = [
    pytest.param(1, 4.0, id="quick", marks=pytest.mark.slow),
    pytest.param(5, 60.0, id="minute", marks=pytest.mark.faults),
]


async def _sigkill_and_restart(site: Daphnes, index: int) -> None:
    await asyncio.to_thread(site.kill, index)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(site.start, index)


@pytest.mark.parametrize(("faults", "seconds"), RUNS)
async def test_default_site_survives_its_daphne_being_killed(
    sqlite_daphne: Daphnes, faults: int, seconds: float
) -> None:
    outcome = await drive(
        sqlite_daphne,
        tag=f"kill-{faults}",
        terminals=3,
        seconds=seconds,
        faults=faults,
        fault=lambda: _sigkill_and_restart(sqlite_daphne, 0),
    )
    assert_converged(outcome, faults=faults, site=sqlite_daphne)
    assert all(c.connections == faults + 1 for c in outcome.controllers)
    assert sqlite_daphne.failures() == []


@pytest.mark.parametrize(("faults", "seconds"), RUNS)
async def test_two_processes_survive_one_being_killed(
    redis_daphnes: Daphnes, faults: int, seconds: float
) -> None:
    killed: list[int] = []

    async def kill_in_turn() -> None:
        killed.append(len(killed) % 2)  # the controllers' process, then the viewers'
        await _sigkill_and_restart(redis_daphnes, killed[-1])

    outcome = await drive(
        redis_daphnes,
        tag=f"pair-kill-{faults}",
        terminals=3,
        seconds=seconds,
        faults=faults,
        fault=kill_in_turn,
    )
    assert_converged(outcome, faults=faults, site=redis_daphnes)
    assert redis_daphnes.failures() == []


@pytest.mark.parametrize(("faults", "seconds"), RUNS)
async def test_two_processes_survive_redis_restarting_empty(
    redis_daphnes: Daphnes, own_redis: RedisServer, faults: int, seconds: float
) -> None:
    async def restart_redis() -> None:
        await asyncio.to_thread(own_redis.kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(own_redis.start)

    outcome: Any = await drive(
        redis_daphnes,
        tag=f"redis-{faults}",
        terminals=3,
        seconds=seconds,
        faults=faults,
        fault=restart_redis,
    )
    # Redis going away closes the sockets (4503); once it is back, each process finds
    # its pooled connections to the old server dead at their first use, which may
    # close a socket once more.
    assert_converged(outcome, faults=faults, site=redis_daphnes, cuts_per_fault=2)
    # An outage to ride out, not a bug: warnings only, no error, no traceback.
    assert redis_daphnes.failures() == [], redis_daphnes.logs()
