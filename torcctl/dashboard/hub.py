"""The daemon's events, followed once per dashboard and handed to every browser, coalesced: each
browser gets at most one message per tick with the workflows that changed and (for the workflow
it shows) the new events. A browser that stops reading is dropped, never waited for; a workflow
running 1,000 jobs a second costs the daemon one stream, not one per browser tab."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from torcctl.errors import TorcError

TICK = 0.25  # seconds between messages to a browser
EVENTS_PER_MESSAGE = 200  # a browser's event log shows the latest; the rest are counted
KEPT = 5000  # events held between ticks (more are counted, not kept)
QUEUE = 32  # messages a browser may be behind before it is dropped


@dataclass(eq=False)
class Subscriber:
    workflow_id: int | None  # the workflow whose events it wants; None: only what changed
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    dropped: bool = False


class Hub:
    """Follows `follow(after)` (every workflow's events after a sequence number) in a thread."""

    def __init__(self, follow: Callable[[int], Iterator[Any]], tick: float = TICK) -> None:
        self.follow = follow
        self.tick = tick
        self.subscribers: set[Subscriber] = set()
        self.pending: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self.changed: set[int] = set()
        self.skipped = 0
        self.last_seq = 0
        self.upstream_error = ""
        self.since = time.time()  # the first stream opens on the daemon's recent events: not news
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()

    def subscribe(self, workflow_id: int | None) -> Subscriber:
        self._start()
        sub = Subscriber(workflow_id)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def _start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._flush_forever())
        threading.Thread(target=self._pump, name="torc-dashboard-events", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    def _pump(self) -> None:
        """The upstream stream, resumed from the last event after a cut (a daemon restart)."""
        assert self._loop is not None
        while not self._stop.is_set():
            try:
                for event in self.follow(self.last_seq):
                    if self._stop.is_set():
                        return
                    self._loop.call_soon_threadsafe(self._arrive, msgspec.to_builtins(event))
            except (TorcError, OSError) as e:
                self.upstream_error = str(e)
            except RuntimeError:  # the loop closed under us
                return
            time.sleep(1.0)

    def _arrive(self, event: dict[str, Any]) -> None:
        self.last_seq = max(self.last_seq, event.get("seq", 0))
        self.upstream_error = ""
        if event.get("time", self.since) < self.since:
            return
        self.changed.add(event["workflow_id"])
        if len(self.pending) == self.pending.maxlen:
            self.skipped += 1
        self.pending.append(event)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            if self.changed:
                self.flush()

    def flush(self) -> None:
        changed, events, skipped = sorted(self.changed), list(self.pending), self.skipped
        self.changed.clear()
        self.pending.clear()
        self.skipped = 0
        by_workflow: dict[int, list[dict[str, Any]]] = {}
        for e in events:
            by_workflow.setdefault(e["workflow_id"], []).append(e)
        for sub in list(self.subscribers):
            mine = by_workflow.get(sub.workflow_id, []) if sub.workflow_id is not None else []
            message = {
                "changed": changed,
                "events": mine[-EVENTS_PER_MESSAGE:],
                "skipped": max(0, len(mine) - EVENTS_PER_MESSAGE) + (skipped if mine else 0),
            }
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                sub.dropped = True
                self.subscribers.discard(sub)
