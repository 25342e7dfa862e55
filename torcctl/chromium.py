"""PNG copies of the resource plots' SVGs, rendered by a headless Chromium: `$TORC_CHROMIUM`, else
`chromium`, else `chromium-browser` on PATH. Each run gets a fresh profile and reaches nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from torcd.errors import TorcError

RENDER_TIMEOUT = 120.0  # seconds for one picture
_SIZE = re.compile(r'<svg[^>]*\bwidth="(\d+)" height="(\d+)"')


class ChromiumError(TorcError):
    """No Chromium to run, or it made no picture; the message says which."""


def find_chromium() -> str:
    given = os.environ.get("TORC_CHROMIUM")
    if given:
        found = shutil.which(given)
        if found is None:
            raise ChromiumError(f"$TORC_CHROMIUM is {given!r}, which is not an executable")
        return found
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise ChromiumError("no Chromium found: set $TORC_CHROMIUM or put chromium (or chromium-browser) on PATH")


def svg_size(svg: str) -> tuple[int, int]:
    """The width and height an SVG of `torcd.plots` declares."""
    m = _SIZE.search(svg)
    return (int(m.group(1)), int(m.group(2))) if m else (800, 600)


def render_png(chromium: str, svg_path: str, size: tuple[int, int]) -> bytes:
    """A screenshot of the SVG file at `svg_path` in a window of the SVG's size, as PNG bytes."""
    with tempfile.TemporaryDirectory(prefix="torc-chromium-") as scratch:
        profile, png_path = os.path.join(scratch, "profile"), os.path.join(scratch, "shot.png")
        argv = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size={size[0]},{size[1]}",
            "file://" + os.path.abspath(svg_path),
        ]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=RENDER_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ChromiumError(f"{chromium} took over {RENDER_TIMEOUT:g}s to render {svg_path}") from None
        except OSError as e:
            raise ChromiumError(f"cannot run {chromium}: {e.strerror}") from None
        if not os.path.isfile(png_path) or os.path.getsize(png_path) == 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise ChromiumError(f"{chromium} made no picture of {svg_path}: {tail[0]}")
        with open(png_path, "rb") as f:
            return f.read()
