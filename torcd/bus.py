"""In-process event bus: committed events fan out to subscribers' own queues.

Publishing never waits. A subscriber whose queue fills is marked overflowed
and gets no more events: watch streams are then cut off, and services
reconcile from the tables instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from torcd.protocol import Event


class Subscription:
    def __init__(self, bus: "EventBus", name: str, maxsize: int,
                 accept: Callable[[Event], bool] | None):
        self.bus, self.name = bus, name
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.accept = accept
        self.overflowed = asyncio.Event()

    def offer(self, event: Event) -> None:
        if self.overflowed.is_set() or (self.accept is not None and not self.accept(event)):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed.set()

    async def get(self) -> Event:
        return await self.queue.get()

    def drain(self) -> list[Event]:
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self.published = 0

    def subscribe(self, name: str, maxsize: int = 10_000,
                  accept: Callable[[Event], bool] | None = None) -> Subscription:
        sub = Subscription(self, name, maxsize, accept)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            self.published += 1
            for sub in self._subs:
                sub.offer(event)
