"""The store: the daemon's only writer and the source of truth, in parts over one database.

Each part holds the one `Database` and does one thing: `queries` (reads), `workflows` (whole
workflows), `execution` (the job lifecycle: claims, starts, exits, decisions, recoveries),
`workers` (workers and their polls), `slurm` (allocations) and `actions`. A service or the RPC
handlers get only the parts they use; the daemon builds them all once, here.

Every state change and the event rows that describe it commit in one transaction; `on_commit`
(the event bus) hears of them only afterwards.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from torcd.core.attempts import Exit, Failure, Start
from torcd.events import EventBase
from torcd.store.actions import ActionStore
from torcd.store.db import Database, StoreError, Tx
from torcd.store.execution import ExecutionStore
from torcd.store.queries import Queries
from torcd.store.slurm import SlurmStore
from torcd.store.workers import WorkerStore
from torcd.store.workflows import WorkflowStore, settle

__all__ = ["Exit", "Failure", "Start", "Store", "StoreError", "Tx"]


class Store:
    """Every part of the store, built once over the one database."""

    def __init__(self, db: Database):
        self.db = db
        with_actions: set[int] = set()  # workflows that have actions, shared by the parts that keep it
        self.queries = Queries(db)
        self.workflows = WorkflowStore(db, with_actions)
        self.execution = ExecutionStore(db)
        self.workers = WorkerStore(db)
        self.slurm = SlurmStore(db)
        self.actions = ActionStore(db, with_actions)
        db.settle = lambda tx: settle(tx, with_actions)

    @classmethod
    async def open(cls, path: str) -> Store:
        return cls(await Database.open(path))

    async def close(self) -> None:
        await self.db.close()

    @property
    def on_commit(self) -> Callable[[list[EventBase]], Awaitable[None] | None] | None:
        return self.db.on_commit

    @on_commit.setter
    def on_commit(self, publish: Callable[[list[EventBase]], Awaitable[None] | None] | None) -> None:
        self.db.on_commit = publish
