"""Collects the voice accuracy figures so the terminal summary shows them without -s."""

from __future__ import annotations

from typing import Any

LINES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LINES:
        terminalreporter.section("engine voice accuracy")
        for line in LINES:
            terminalreporter.write_line(line)
