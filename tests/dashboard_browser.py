"""Headless Chromium for the dashboard's tests (Debian's chromium driven by Playwright), and a
dashboard served by the real `torcctl dashboard` command for a test's daemon."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM = os.environ.get("TORC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Without these, Chromium keeps trying the network at start (this machine has none).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    if CHROMIUM is None:
        message = "the dashboard tests need Chromium (Debian: apt-get install chromium)"
        if os.environ.get("TORC_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def serve_dashboard(socket: str, *extra: str) -> Iterator[str]:
    """`torcctl dashboard --no-browser` for the daemon on `socket`; yields the URL it printed first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "torcctl", "--socket", socket, "--no-autostart", "dashboard", "--no-browser", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            proc.kill()
            raise AssertionError(f"torcctl dashboard printed {url!r}; stderr: {proc.communicate()[1]}")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
