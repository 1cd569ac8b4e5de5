"""Each benchmark runs end to end in its tiny configuration (`python -m bench --quick`)
and writes results in the committed shape. Not timed: no figure is asserted, only that
every entry has a value beside a baseline, a target and a verdict."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bench.__main__ import BENCHMARKS

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"value", "unit", "baseline", "ratio", "target", "ok"}


@pytest.mark.slow
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_and_writes_results(name: str, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    env["DEBUG"] = "true"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", name, "--output", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

    results = json.loads((tmp_path / "results.json").read_text())
    assert results, "no entries"
    assert all(entry_name.startswith(f"{name}.") for entry_name in results)
    for entry_name, entry in results.items():
        assert set(entry) == FIELDS, entry_name
        assert isinstance(entry["value"], int | float), entry_name
        assert isinstance(entry["baseline"], int | float), entry_name
        assert entry["ratio"] is None or isinstance(entry["ratio"], int | float), entry_name
        assert isinstance(entry["unit"], str) and entry["unit"], entry_name
        assert isinstance(entry["target"], str) and entry["target"], entry_name
        assert isinstance(entry["ok"], bool), entry_name
    # The table names every entry, and the verdicts agree with the JSON.
    for entry_name, entry in results.items():
        line = next(row for row in done.stdout.splitlines() if row.startswith(entry_name + " "))
        assert line.rstrip().endswith("yes" if entry["ok"] else "NO")

    with Image.open(tmp_path / "report.png") as picture:
        assert picture.format == "PNG"
        assert picture.width > 0 and picture.height > 0


@pytest.mark.slow
async def test_fanout_baseline_speaks_the_same_websocket_as_the_site(tmp_path: Path) -> None:
    """The clients offer permessage-deflate; Daphne declines it. A baseline accepting it
    would deflate every frame per socket, work the site never does."""
    from websockets.asyncio.client import connect

    from bench import fanout, server

    async def extensions(url: str, origin: str) -> list[str]:
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            assert isinstance(json.loads(await ws.recv()), dict)
            return [extension.name for extension in ws.protocol.extensions]

    site, listener = server.prepare_site(tmp_path / "site")
    seeded = site.manage("seed_terminal", slug="fanout", images=2)
    server.start_site(site, listener)
    try:
        site_extensions = await extensions(
            f"{site.ws_url}/ws/terminals/{seeded['slug']}/", site.url
        )
    finally:
        server.stop_site(site)
    with fanout.baseline_server() as url:
        baseline_extensions = await extensions(url, url.replace("ws://", "http://"))
    assert site_extensions == baseline_extensions == []


def test_report_ratio_and_table() -> None:
    from bench import report
    from bench.common import Entry, percentile

    entries = [
        Entry("demo.p99_ms", 30.0, "ms", 10.0, "≤ 2× baseline", False),
        Entry("demo.rate", 5.0, "requests/s", 0.0, "information", True),
    ]
    shaped = report.results_dict(entries)
    assert shaped["demo.p99_ms"]["ratio"] == 3.0
    assert shaped["demo.rate"]["ratio"] is None
    lines = report.table(entries).splitlines()
    assert lines[2].startswith("demo.p99_ms") and lines[2].endswith("NO")
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert math.isnan(percentile([], 50))


def test_only_a_whole_run_replaces_the_committed_results(tmp_path: Path) -> None:
    from bench.__main__ import HERE, results_dir

    assert results_dir(quick=False, only="", output=None) == HERE
    # A partial run would leave results.json with some benchmarks and the README's
    # figures without their source.
    assert results_dir(quick=False, only="token", output=None) is None
    assert results_dir(quick=True, only="", output=None) is None
    assert results_dir(quick=True, only="token", output=tmp_path) == tmp_path
