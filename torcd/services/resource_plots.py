"""ResourcePlotWriter: when a workflow that asked for them (`resource_monitor.generate_plots`) ends
(done, awaiting classification or canceled), writes its resource plots into
`<output_dir>/resource_plots/`. Rendering and writing run in a thread, never on the event loop;
a write that fails is logged and leaves the daemon as it was."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import structlog

from torcd.bus import EventBus
from torcd.errors import TorcError
from torcd.events import IDLE
from torcd.plots.files import write_plot_files
from torcd.plots.page import plot_files
from torcd.protocol import AttemptInfo
from torcd.store.queries import Queries

log = structlog.get_logger("torcd.resource_plots")
MAX_ATTEMPTS = 10_000_000  # every attempt of the run: the plots sample what they draw


def render_and_write(directory: str, attempts: list[AttemptInfo], title: str) -> list[str]:
    return write_plot_files(directory, dict(plot_files(attempts, title, now=time.time())))


class ResourcePlotWriter:
    def __init__(self, queries: Queries, bus: EventBus):
        self.queries = queries
        self._sub = bus.subscribe("resource_plots", maxsize=10_000, kinds=IDLE)
        self._writing = asyncio.Lock()

    async def run(self) -> None:
        while True:
            first = await self._sub.get()
            await self._write_for([first, *self._sub.drain()])

    async def flush(self) -> None:
        """Write what ended before the daemon stops (after any write under way)."""
        await self._write_for(self._sub.drain())

    async def _write_for(self, batch: list) -> None:
        self._sub.overflowed.clear()  # a lost end only costs its plots; the next end writes them
        async with self._writing:
            for wf in dict.fromkeys(e.workflow_id for e in batch):
                await self.write_plots(wf)

    async def write_plots(self, wf: int) -> None:
        try:
            directory = await self.queries.plot_directory(wf)
            if directory is None:
                return
            info = await self.queries.workflow(wf)
            attempts = await self.queries.results(wf, False, False, None, MAX_ATTEMPTS)
            title = f"Workflow {wf} {info.name}: resource use"
            written = await asyncio.to_thread(render_and_write, directory, attempts, title)
        except (OSError, TorcError, sqlite3.Error) as e:
            log.warning("resource_plots_not_written", workflow_id=wf, error=str(e))
            return
        log.info("resource_plots_written", workflow_id=wf, files=written)
