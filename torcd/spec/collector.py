"""The cyclic garbage collector paused while a spec's tree is built.

A 100,000-job spec makes millions of objects, none of them garbage yet; each collection the
allocations trigger walks them all, and collecting cost more than building. Specs are parsed in
two threads at once, so the last one out turns the collector back on, and only if it was on.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
