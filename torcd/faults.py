"""Crash points for tests: `TORCD_CRASH_AT=name` makes the daemon die there like `kill -9`.

Lets the crash-safety tests stop the real daemon at exact moments (between
recording an exit and deciding on it, say) instead of racing a timer.
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("TORCD_CRASH_AT", "")


def crash_point(name: str) -> None:
    if _AT and name == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
