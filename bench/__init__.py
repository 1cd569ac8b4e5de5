"""Benchmarks of the site against baselines measured in the same run (`make bench`).

Each benchmark module has `run(options) -> Outcome`; `bench.report` turns the outcomes
into `bench/results.json`, a table on stdout and `bench/report.png`.
"""
