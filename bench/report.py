"""The run's output: `results.json`, a table on stdout, and `report.png`.

The picture is drawn with Pillow (no plotting library needed): one panel per latency
distribution, each series as a cumulative distribution on a shared millisecond axis.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from bench.common import Entry, Outcome

PANEL_WIDTH = 1200
PANEL_HEIGHT = 300
MARGIN_LEFT = 70
MARGIN_RIGHT = 400
MARGIN_TOP = 34
MARGIN_BOTTOM = 40
COLOURS = ["#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#495057"]


def results_dict(entries: list[Entry]) -> dict[str, dict[str, object]]:
    return {entry.name: entry.as_dict() for entry in entries}


def write_json(path: Path, entries: list[Entry]) -> None:
    path.write_text(json.dumps(results_dict(entries), indent=2, ensure_ascii=False) + "\n")


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def table(entries: list[Entry]) -> str:
    """Every figure beside its baseline, the ratio, the target and whether it is met."""
    rows = [("name", "value", "unit", "baseline", "ratio", "target", "ok")]
    for entry in entries:
        rows.append(
            (
                entry.name,
                _number(entry.value),
                entry.unit,
                _number(entry.baseline),
                _number(entry.ratio) + "×" if math.isfinite(entry.ratio) else "—",
                entry.target,
                "yes" if entry.ok else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i in (0, 2, 5) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine() -> str:
    """nproc, CPU model and Python version, as the README quotes them."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs, {model}, Python {platform.python_version()}"


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _ascii(text: str) -> str:
    """Pillow's built-in font has no arrows or dashes."""
    return text.replace("→", "->").replace("—", "-").replace("“", '"').replace("”", '"')


def _panel(title: str, series: dict[str, list[float]]) -> Image.Image:
    image = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    draw.text(
        (MARGIN_LEFT, 8), _ascii(f"{title}: cumulative distribution"), fill="black", font=font
    )
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = PANEL_WIDTH - MARGIN_RIGHT, PANEL_HEIGHT - MARGIN_BOTTOM
    draw.rectangle((left, top, right, bottom), outline="#888888")
    values = [v for samples in series.values() for v in samples if math.isfinite(v)]
    if not values:
        draw.text((left + 10, top + 10), "no samples", fill="black", font=font)
        return image
    # A log axis when the series span orders of magnitude, so each stays readable.
    low, high = max(min(values), 0.01), max(values)
    logarithmic = high / low > 50
    if logarithmic:
        lo, hi = math.log10(low), math.log10(high)

        def x_of(v: float) -> float:
            return left + (math.log10(max(v, low)) - lo) / max(hi - lo, 1e-9) * (right - left)
    else:
        lo, hi = 0.0, high

        def x_of(v: float) -> float:
            return left + (v - lo) / max(hi - lo, 1e-9) * (right - left)

    for fraction in (0.0, 0.5, 0.9, 1.0):
        y = bottom - fraction * (bottom - top)
        draw.line((left, y, right, y), fill="#eeeeee")
        draw.text((8, y - 7), f"{fraction:.2f}", fill="#444444", font=font)
    ticks = 6
    for i in range(ticks + 1):
        position = lo + (hi - lo) * i / ticks
        value = 10**position if logarithmic else position
        x = x_of(value)
        draw.line((x, bottom, x, bottom + 4), fill="#444444")
        draw.text((x - 15, bottom + 8), _number(value), fill="#444444", font=font)
    draw.text(
        (right - 120, bottom + 22), "ms (log)" if logarithmic else "ms", fill="#444444", font=font
    )
    for index, (label, samples) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        ordered = sorted(v for v in samples if math.isfinite(v))
        if ordered:
            points = [
                (x_of(v), bottom - (i + 1) / len(ordered) * (bottom - top))
                for i, v in enumerate(ordered)
            ]
            if len(points) > 1:
                draw.line(points, fill=colour, width=2)
        y = top + 8 + index * 20
        draw.line((right + 12, y + 7, right + 32, y + 7), fill=colour, width=3)
        draw.text((right + 38, y), _ascii(f"{label} (n={len(ordered)})"), fill="black", font=font)
    return image


def write_png(path: Path, outcomes: list[Outcome]) -> None:
    panels = [
        _panel(title, series)
        for outcome in outcomes
        for title, series in outcome.distributions.items()
    ]
    if not panels:
        panels = [_panel("no distributions", {})]
    sheet = Image.new("RGB", (PANEL_WIDTH, PANEL_HEIGHT * len(panels) + 24), "white")
    ImageDraw.Draw(sheet).text((MARGIN_LEFT, 4), machine(), fill="#444444", font=_font())
    for index, panel in enumerate(panels):
        sheet.paste(panel, (0, 24 + index * PANEL_HEIGHT))
    sheet.save(path, optimize=True)
