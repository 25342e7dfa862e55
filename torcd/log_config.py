"""structlog set-up: JSON lines off a terminal (journald, files), console on one."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_QUIET_LEVELS = ("debug", "info")


class RateLimit:
    """At most `burst` warnings or errors of one kind per `window` seconds; the rest are counted,
    and the next line of that kind after the window says how many were left out. A flood (a
    client retrying a refused request in a loop) must not fill the disk with the same line."""

    def __init__(self, burst: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.burst, self.window, self._clock = burst, window, clock
        self._seen: dict[str, tuple[float, int, int]] = {}  # kind -> window start, lines, left out

    def admit(self, kind: str) -> int | None:
        """None: leave this line out; else how many of its kind were left out before it."""
        now = self._clock()
        start, lines, left_out = self._seen.get(kind, (now, 0, 0))
        said = 0
        if now - start >= self.window:
            start, lines, said, left_out = now, 0, left_out, 0
        if lines >= self.burst:
            self._seen[kind] = (start, lines, left_out + 1)
            return None
        self._seen[kind] = (start, lines + 1, left_out)
        return said

    def __call__(self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if method in _QUIET_LEVELS:
            return event_dict
        said = self.admit(str(event_dict.get("event")))
        if said is None:
            raise structlog.DropEvent
        if said:
            event_dict["similar_lines_left_out"] = said
        return event_dict


class _StdlibRateLimit(logging.Filter):
    """The same for lines from the standard library (asyncio's accept errors)."""

    def __init__(self) -> None:
        super().__init__()
        self._limit = RateLimit()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or self._limit.admit(str(record.msg)) is not None


def configure(level: str = "info", json: bool | None = None, stream=None) -> None:
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            RateLimit(),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("asyncio").addFilter(_StdlibRateLimit())
