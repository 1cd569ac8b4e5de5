"""`make bench`: run every benchmark, then write results.json, the table and report.png.

`python -m bench --quick` shrinks each benchmark to a smoke test; `--only a,b` runs
some of them; `--output DIR` writes the results elsewhere than beside this file. Such a
partial run only prints its table unless given `--output`: the committed results are
those of a whole run, the figures the README quotes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench import report
from bench.common import Entry, Options, Outcome

BENCHMARKS = ("fanout", "token", "voice", "calls", "gallery")
HERE = Path(__file__).resolve().parent


def results_dir(*, quick: bool, only: str, output: Path | None) -> Path | None:
    """Where a run writes results.json and report.png: None for a partial run not told."""
    if output is not None:
        return output
    return None if quick or only else HERE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny configurations")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--output", type=Path, default=None, help="where results go")
    args = parser.parse_args(argv)
    names = [name for name in args.only.split(",") if name] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")

    outcomes: list[Outcome] = []
    failed: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="artterminal-bench-") as workdir:
        for name in names:
            print(f"== {name}", flush=True)
            begun = time.monotonic()
            module = importlib.import_module(f"bench.{name}")
            options = Options(workdir=Path(workdir) / name, quick=args.quick)
            try:
                outcome: Outcome = module.run(options)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            outcomes.append(outcome)
            print(f"   {time.monotonic() - begun:.1f} s", flush=True)

    entries: list[Entry] = [entry for outcome in outcomes for entry in outcome.entries]
    output = results_dir(quick=args.quick, only=args.only, output=args.output)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        report.write_json(output / "results.json", entries)
        report.write_png(output / "report.png", outcomes)
    print()
    print(report.table(entries))
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"  · {note}")
    print(f"\n{report.machine()}; {time.monotonic() - started:.0f} s in all")
    if output is None:
        print("A partial run: bench/results.json and report.png are left as they were.")
    if failed:
        print(f"Benchmarks that crashed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
