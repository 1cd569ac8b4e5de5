"""What every benchmark shares: options, results with their baseline, percentiles."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple


@dataclass(frozen=True)
class Options:
    """How big a run is: `quick` shrinks every benchmark to a smoke test."""

    workdir: Path
    quick: bool = False


@dataclass(frozen=True)
class Entry:
    """One figure beside the baseline measured in the same run."""

    name: str
    value: float
    unit: str
    baseline: float
    target: str
    ok: bool

    @property
    def ratio(self) -> float:
        if self.baseline == 0:
            return math.inf if self.value else 1.0
        return self.value / self.baseline

    def as_dict(self) -> dict[str, object]:
        ratio = self.ratio
        return {
            "value": round(self.value, 3),
            "unit": self.unit,
            "baseline": round(self.baseline, 3),
            "ratio": round(ratio, 3) if math.isfinite(ratio) else None,
            "target": self.target,
            "ok": self.ok,
        }


@dataclass
class Outcome:
    """A benchmark's entries, the distributions behind them (for the report's
    charts, in milliseconds) and notes worth printing under the table."""

    entries: list[Entry] = field(default_factory=list)
    distributions: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def at_most(value: float, limit: float) -> bool:
    return math.isfinite(value) and value <= limit


def at_least(value: float, limit: float) -> bool:
    return math.isfinite(value) and value >= limit


class CpuSplit(NamedTuple):
    """The machine's CPUs split between a server under test and the clients driving it,
    so the clients' work does not land on the server's core, nor the other way round."""

    server: frozenset[int]
    clients: frozenset[int]


def cpu_split() -> CpuSplit | None:
    """The last CPU for the server, the rest for the clients; None with a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return CpuSplit(server=frozenset(cpus[-1:]), clients=frozenset(cpus[:-1]))


@contextlib.contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """The calling thread on `cpus` meanwhile, and so every process it starts meanwhile
    (a child inherits the mask of the thread that starts it); None changes nothing."""
    if cpus is None:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)
