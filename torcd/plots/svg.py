"""SVG building blocks for the resource plots: escaping, a colour-blind-safe palette, human units,
scales with ticks, and the frame (title, axes, legend) every plot shares. Strings in, strings out."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

# Okabe & Ito's palette: told apart by people with any common colour-vision deficiency.
OUTCOME_COLOURS = {
    "ok": "#0072B2",  # blue
    "near limit": "#E69F00",  # orange: within 10 % of its limit
    "over limit": "#D55E00",  # vermillion
    "oom": "#CC79A7",  # reddish purple: killed for memory
    "timeout": "#CC79A7",
    "failed": "#000000",
    "running": "#999999",
}

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def esc(text: object) -> str:
    """`text` safe inside an XML element or attribute: markup escaped, characters XML cannot hold
    (control characters, lone surrogates) replaced by U+FFFD."""
    s = _NOT_XML.sub("\ufffd", str(text))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def num(x: float) -> str:
    """A coordinate, short: one decimal at most."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def format_bytes(n: float) -> str:
    """1 KiB, 1.5 GiB: binary units, at most one decimal, none when whole."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f}".removesuffix(".0") + f" {unit}"
        n /= 1024
    raise AssertionError


def format_seconds(s: float) -> str:
    """0.5 s, 30 s, 2 min, 1.5 h, 3 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(s) >= size:
            return f"{s / size:.1f}".removesuffix(".0") + f" {unit}"
    return (f"{s:.3f}".rstrip("0").rstrip(".") or "0") + " s"


class LogScale:
    """A log axis from `lo` to `hi` (both > 0) onto pixels `a` to `b`; values at or below zero sit at `lo`."""

    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi = lo, max(hi, lo * 10)
        self.a, self.b = a, b
        self._span = math.log(self.hi) - math.log(self.lo)

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.a + (self.b - self.a) * (math.log(v) - math.log(self.lo)) / self._span

    def ticks(self, candidates: Sequence[float], most: int = 8) -> list[float]:
        inside = [t for t in candidates if self.lo <= t <= self.hi]
        step = max(1, math.ceil(len(inside) / most))
        return inside[::step]


class LinearScale:
    """A linear axis from `lo` to `hi` onto pixels `a` to `b`."""

    def __init__(self, lo: float, hi: float, a: float, b: float):
        self.lo, self.hi = lo, hi if hi > lo else lo + 1
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.a + (self.b - self.a) * (v - self.lo) / (self.hi - self.lo)


# Tick candidates in human units: powers of two of bytes, round durations.
BYTE_TICKS = [float(1 << n) for n in range(0, 61)]
SECOND_TICKS = [
    *(m * 10.0**e for e in range(-3, 0) for m in (1, 2, 5)),
    *(1, 2, 5, 10, 15, 30),
    *(60 * m for m in (1, 2, 5, 10, 15, 30)),
    *(3600 * h for h in (1, 2, 3, 6, 12)),
    *(86400 * d for d in (1, 2, 7, 14, 30, 60, 90, 180, 365, 730, 1825, 3650)),
]


def linear_second_ticks(span: float, most: int = 8) -> list[tuple[float, str]]:
    """Round durations from 0 that cut `span` seconds into at most `most` steps, each with its label
    in the unit of the step (75 s, not 1.2 min)."""
    step = next((t for t in SECOND_TICKS if span / t <= most), span / most or 1.0)
    unit, size = next(((u, n) for u, n in (("d", 86400), ("h", 3600), ("min", 60)) if step >= n), ("s", 1))
    return [(i * step, f"{round(i * step / size, 3):g} {unit}") for i in range(int(span / step) + 1)]


def legend(entries: Sequence[tuple[str, str]], x: float, y: float) -> str:
    """A row of coloured squares with their labels, left to right from (x, y)."""
    out = ['<g class="legend" font-size="12">']
    for label, colour in entries:
        out.append(f'<rect x="{num(x)}" y="{num(y - 10)}" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{num(x + 14)}" y="{num(y)}">{esc(label)}</text>')
        x += 24 + 7 * len(label)
    out.append("</g>")
    return "".join(out)


def document(width: int, height: int, title: str, subtitle: str, body: Sequence[str]) -> str:
    """A standalone SVG: scales to its container through the viewBox, titled for screen readers."""
    return "".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" font-family="sans-serif" font-size="12">',
            f"<title>{esc(title)}</title>",
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{width / 2}" y="22" font-size="16" font-weight="bold" text-anchor="middle">{esc(title)}</text>',
            f'<text x="{width / 2}" y="40" fill="#444444" text-anchor="middle">{esc(subtitle)}</text>',
            *body,
            "</svg>",
        ]
    )
