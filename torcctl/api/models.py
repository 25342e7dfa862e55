"""What the Python API returns: typed records (msgspec structs), never raw dicts.

`Job`, `Attempt`, `Event`, `UserData` and `RecoverResult` are the daemon's own reply types under
the names a Python user expects. (`Workflow`, which carries the client that fetched it, lives
with the client.)
"""

from __future__ import annotations

from torcd.core.limits import Adjustment
from torcd.events import Event, EventBase
from torcd.protocol import (
    ActionInfo,
    AllocationInfo,
    DatasetInfo,
    Explanation,
    FileInfo,
    Graph,
    GraphEdge,
    GraphNode,
    Ping,
    RecoverResult,
)
from torcd.protocol import AttemptInfo as Attempt
from torcd.protocol import JobInfo as Job
from torcd.protocol import UserDataInfo as UserData
from torcd.protocol import WorkerInfo as Worker

__all__ = [
    "ActionInfo",
    "Adjustment",
    "AllocationInfo",
    "Attempt",
    "DaemonInfo",
    "DatasetInfo",
    "Event",
    "EventBase",
    "Explanation",
    "FileInfo",
    "Graph",
    "GraphEdge",
    "GraphNode",
    "Job",
    "RecoverResult",
    "UserData",
    "Worker",
]

DaemonInfo = Ping

FINAL_STATES = frozenset({"done", "awaiting_classification", "canceled"})
