"""The live view `torcctl run` and `watch` show on a terminal: progress, counts per status,
retries so far, and the latest failures, retries and recoveries."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from torcctl.render import event_line
from torcd import events as E
from torcd.protocol import IDLE_EVENTS, Event

NOTABLE = frozenset(
    {
        "job_exited",
        "retry_decided",
        "recovery_finished",
        "job_classified",
        "job_terminated",
        "job_canceled",
        "jobs_added",
    }
)
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "pending_failed": "magenta",
    "running": "cyan",
    "recovering": "yellow",
    "canceled": "dim",
    "terminated": "red",
}


class LiveView:
    def __init__(
        self,
        workflow_id: int,
        counts: Callable[[], dict[str, int]],
        order: list[str],
        recent: int = 6,
        refresh: float = 0.25,
    ):
        self.workflow_id, self._counts, self.order = workflow_id, counts, order
        self.counts = counts()
        self.retries = self.recoveries = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=recent)
        self._refresh, self._last = refresh, 0.0

    def follow(self, events: Iterable[Event]) -> Event | None:
        """Consume the stream (the daemon ends it when the workflow is idle), redrawing as it goes;
        return the last event that said the workflow was idle."""
        idle = None
        with Live(self.render(), refresh_per_second=8, transient=False) as live:
            for event in events:
                self.note(event)
                now = time.monotonic()
                if event.kind in IDLE_EVENTS:
                    idle = event
                if idle is event or now - self._last >= self._refresh:  # counts a few times a second
                    self.counts, self._last = self._counts(), now
                    live.update(self.render())
        return idle

    def note(self, event: Event) -> None:
        if isinstance(event, E.RetryDecided) and event.action in ("retry", "recover"):
            self.retries += 1
        if isinstance(event, E.RecoveryFinished):
            self.recoveries += 1
        if event.kind in NOTABLE:
            self.recent.append(event_line(event))

    def render(self) -> Group:
        total = sum(self.counts.values()) or 1
        finished = sum(self.counts.get(s, 0) for s in ("completed", "failed", "canceled", "terminated"))
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=total, completed=finished, width=40),
            Text(f"{finished}/{total} finished, workflow {self.workflow_id}"),
        )
        counts = Text()
        for s in (s for s in self.order if self.counts.get(s)):
            counts.append(f"{s} {self.counts[s]}", style=STATUS_STYLE.get(s, ""))
            counts.append("  ")
        summary = Text(f"retries so far: {self.retries}   recovery scripts run: {self.recoveries}")
        lines: list[RenderableType] = [bar, counts, summary]
        if self.recent:
            lines += [
                Text("recent:", style="bold"),
                *(Text("  " + line, overflow="ellipsis", no_wrap=True) for line in self.recent),
            ]
        return Group(*lines)
