"""Simultaneous voice calls: how many the engine carries while keeping up with real time.

N aiortc callers (`bench.rtc`) call the engine in one real Daphne and each says a
command every few seconds, staggered so the turns overlap as a room's would. A call
keeps up when the engine reports the end of each turn (`speech_stopped`) on time: at
most LAG_LIMIT_MS after the speech ended plus the session's silence, and no later in
the last round than in the first (a growing lag is audio piling up unprocessed).
N grows through LEVELS until a level falls behind; the baseline is one call.

The callers run in this process on the same two cores as the server, so the figure is
a floor for a server with the machine to itself.
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench import rtc, server
from bench.common import Entry, Options, Outcome, at_least, percentile

LEVELS = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32)
ROUNDS = 3
GAP_SECONDS = 1.5
LAG_LIMIT_MS = 300.0
GROWTH_LIMIT_MS = 150.0
TARGET_CALLS = 8
PHRASE = "show the next picture"


@dataclass
class Level:
    calls: int
    lags_ms: list[list[float]] = field(default_factory=list)  # per round
    function_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def all_lags(self) -> list[float]:
        return [lag for round_lags in self.lags_ms for lag in round_lags]

    @property
    def keeps_up(self) -> bool:
        if self.failures or not self.lags_ms or not all(self.lags_ms):
            return False
        growth = statistics.median(self.lags_ms[-1]) - statistics.median(self.lags_ms[0])
        return max(self.all_lags) <= LAG_LIMIT_MS and growth <= GROWTH_LIMIT_MS


async def _call(
    caller: rtc.Caller, pcm: bytes, silence_s: float, offset: float, rounds: int, level: Level
) -> None:
    period = len(pcm) / (2 * rtc.RATE) + silence_s + GAP_SECONDS
    await asyncio.sleep(offset)
    for number in range(rounds):
        began = asyncio.get_running_loop().time()
        mark = len(caller.arrivals)
        caller.microphone.say(pcm)
        try:
            stopped = await caller.wait_for(
                "input_audio_buffer.speech_stopped", after=mark, timeout=20
            )
            called = await caller.wait_for(
                "response.function_call_arguments.done", after=mark, timeout=20
            )
            await caller.wait_for("response.done", after=mark, timeout=20)
        except TimeoutError as error:
            level.failures.append(str(error))
            return
        ended = caller.microphone.ended_at or stopped.at
        level.lags_ms[number].append((stopped.at - ended - silence_s) * 1000)
        level.function_ms.append((called.at - stopped.at) * 1000)
        rest = period - (asyncio.get_running_loop().time() - began)
        if rest > 0:
            await asyncio.sleep(rest)


async def _level(
    site: server.Site, body: dict[str, Any], pcm: bytes, silence_s: float, calls: int, rounds: int
) -> Level:
    level = Level(calls=calls, lags_ms=[[] for _ in range(rounds)])
    callers = [rtc.Caller() for _ in range(calls)]
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for caller in callers:
                minted = await http.post(
                    f"{site.engine_url}/realtime/client_secrets",
                    json=body,
                    headers={"Authorization": f"Bearer {site.api_key}"},
                )
                minted.raise_for_status()
                await caller.connect(f"{site.engine_url}/realtime/calls", minted.json()["value"])
        await asyncio.sleep(1.0)  # each detector learns the (silent) noise floor
        period = len(pcm) / (2 * rtc.RATE) + silence_s + GAP_SECONDS
        await asyncio.gather(
            *(
                _call(caller, pcm, silence_s, period * index / calls, rounds, level)
                for index, caller in enumerate(callers)
            )
        )
    except Exception as error:  # a call the engine refused or dropped
        level.failures.append(f"{type(error).__name__}: {error}")
    finally:
        await asyncio.gather(*(caller.close() for caller in callers), return_exceptions=True)
    return level


async def _run(options: Options) -> Outcome:
    levels, rounds = ((1, 2), 1) if options.quick else (LEVELS, ROUNDS)
    site, listener = server.prepare_site(
        options.workdir / "calls", ENGINE_MAX_CALLS=str(max(levels) + 4)
    )
    site.manage("seed_terminal", slug="calls", images=5)
    body = site.manage("mint_body", slug="calls")
    silence_s = body["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] / 1000
    pcm = rtc.utterance(PHRASE)
    server.start_site(site, listener)
    results: list[Level] = []
    try:
        # A first call loads the speech models, as the first caller of the day would.
        await _level(site, body, pcm, silence_s, 1, 1)
        for calls in levels:
            level = await _level(site, body, pcm, silence_s, calls, rounds)
            results.append(level)
            if not level.keeps_up:
                break
    finally:
        server.stop_site(site)

    outcome = Outcome()
    single = results[0]
    kept = [level for level in results if level.keeps_up]
    best = kept[-1] if kept else single
    most = best.calls if kept else 0
    outcome.entries += [
        Entry(
            "calls.max_realtime",
            most,
            "calls",
            1 if single.keeps_up else 0,
            f"≥ {TARGET_CALLS}",
            at_least(most, TARGET_CALLS),
        ),
        Entry(
            "calls.lag_p95_ms",
            percentile(best.all_lags, 95),
            "ms",
            percentile(single.all_lags, 95),
            f"≤ {LAG_LIMIT_MS:.0f} ms (at the most calls kept up)",
            bool(kept),
        ),
        Entry(
            "calls.function_p95_ms",
            percentile(best.function_ms, 95),
            "ms",
            percentile(single.function_ms, 95),
            "information",
            True,
        ),
    ]
    outcome.distributions["speech_stopped lag behind real time (ms)"] = {
        f"{level.calls} call{'s' if level.calls > 1 else ''}": level.all_lags for level in results
    }
    for level in results:
        state = "keeps up" if level.keeps_up else "falls behind"
        lag = percentile(level.all_lags, 95)
        call = percentile(level.function_ms, 95)
        outcome.notes.append(
            f"calls: {level.calls} → {state}; lag p95 {lag:.0f} ms, "
            f"function call p95 {call:.0f} ms"
            + (f"; {level.failures[0][:160]}" if level.failures else "")
        )
    return outcome


def run(options: Options) -> Outcome:
    return asyncio.run(_run(options))
