"""torcctl: the client of torcd, as a command line and as a Python API.

    from torcctl import Client, WorkflowSpec, Executor

The API's names load on first use, so that the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torcctl.api.async_client import AsyncClient
    from torcctl.api.client import Client, Workflow
    from torcctl.api.executor import Executor, RemoteError
    from torcctl.api.functions import map_function_to_jobs
    from torcctl.api.models import Attempt, Event, Job, RecoverResult, UserData
    from torcctl.api.orchestrator import Orchestrator, SpawnJob, SpawnJobModel
    from torcctl.errors import (
        ConnectError,
        InvalidParams,
        InvalidTransition,
        NotFound,
        RpcError,
        SpecError,
        SpecProblem,
        TooFast,
        TorcError,
    )
    from torcctl.spec_builder import WorkflowSpec

_WHERE = {
    "AsyncClient": "torcctl.api.async_client",
    "Client": "torcctl.api.client",
    "Executor": "torcctl.api.executor",
    "RemoteError": "torcctl.api.executor",
    "map_function_to_jobs": "torcctl.api.functions",
    **dict.fromkeys(("Orchestrator", "SpawnJob", "SpawnJobModel"), "torcctl.api.orchestrator"),
    "WorkflowSpec": "torcctl.spec_builder",
    "Workflow": "torcctl.api.client",
    **dict.fromkeys(("Attempt", "Event", "Job", "RecoverResult", "UserData"), "torcctl.api.models"),
    **dict.fromkeys(
        (
            "ConnectError",
            "InvalidParams",
            "InvalidTransition",
            "NotFound",
            "RpcError",
            "SpecError",
            "SpecProblem",
            "TooFast",
            "TorcError",
        ),
        "torcctl.errors",
    ),
}

__all__ = [
    "AsyncClient",
    "Attempt",
    "Client",
    "ConnectError",
    "Event",
    "Executor",
    "InvalidParams",
    "InvalidTransition",
    "Job",
    "NotFound",
    "Orchestrator",
    "RecoverResult",
    "RemoteError",
    "RpcError",
    "SpawnJob",
    "SpawnJobModel",
    "SpecError",
    "SpecProblem",
    "TooFast",
    "TorcError",
    "UserData",
    "Workflow",
    "WorkflowSpec",
    "map_function_to_jobs",
]
assert set(__all__) == set(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'torcctl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
