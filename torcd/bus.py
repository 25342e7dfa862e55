"""In-process event bus: committed events fan out to subscribers' own queues and to listeners.

Publishing never waits. A subscriber whose queue fills is marked overflowed
and gets no more events: watch streams are then cut off, and services
reconcile from the tables instead. A listener is called at once with each
event of its kinds, for what needs no queue (waking a loop).

Subscribers and listeners choose events by class (`kinds`). An `accept`
predicate only narrows further; it changes nothing — what an event does to a
service is the service's handler's business.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import cast

from torcd.events import EventBase
from torcd.protocol import Event

Kinds = tuple[type, ...] | None  # event classes; None: every kind


class Subscription:
    def __init__(self, bus: EventBus, name: str, maxsize: int, kinds: Kinds, accept: Callable[[Event], bool] | None):
        self.bus, self.name = bus, name
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.kinds, self.accept = kinds, accept
        self.overflowed = asyncio.Event()

    def wants(self, event: Event) -> bool:
        return (self.kinds is None or isinstance(event, self.kinds)) and (self.accept is None or self.accept(event))

    def offer(self, event: Event) -> None:
        if self.overflowed.is_set() or not self.wants(event):
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


class Listener:
    def __init__(self, bus: EventBus, name: str, kinds: Kinds, handler: Callable[[Event], None]):
        self.bus, self.name, self.kinds, self.handler = bus, name, kinds, handler

    def offer(self, event: Event) -> None:
        if self.kinds is None or isinstance(event, self.kinds):
            self.handler(event)

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self) -> None:
        self._subs: list[Subscription | Listener] = []
        self.published = 0

    def subscribe(
        self, name: str, maxsize: int = 10_000, kinds: Kinds = None, accept: Callable[[Event], bool] | None = None
    ) -> Subscription:
        """A queue of the events of these kinds that `accept` (a pure filter) lets through."""
        sub = Subscription(self, name, maxsize, kinds, accept)
        self._subs.append(sub)
        return sub

    def listen(self, name: str, kinds: Kinds, handler: Callable[[Event], None]) -> Listener:
        """Call `handler` (quick, never blocking) with each event of these kinds as it is published."""
        listener = Listener(self, name, kinds, handler)
        self._subs.append(listener)
        return listener

    def unsubscribe(self, sub: Subscription | Listener) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def publish(self, events: Iterable[EventBase]) -> None:
        for event in cast("Iterable[Event]", events):  # every event is of one of the kinds that make up Event
            self.published += 1
            for sub in self._subs:
                sub.offer(event)
