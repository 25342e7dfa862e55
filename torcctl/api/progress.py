"""A progress bar of a workflow's finished jobs, shown while a client waits (by default only in
a notebook)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torcd.protocol import WorkflowSummary


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where a progress bar is wanted by default)."""
    import sys

    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = getattr(shell, "get_ipython", lambda: None)()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class ProgressBar:
    """A rich progress bar of finished jobs (rich renders in a notebook too)."""

    def __init__(self, wf: WorkflowSummary) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
        )
        self.task = self.progress.add_task(f"workflow {wf.id} {wf.name}", total=sum(wf.counts.values()))
        self.progress.start()
        self.update(wf)

    def update(self, wf: WorkflowSummary) -> None:
        ended = sum(n for s, n in wf.counts.items() if s in _ENDED)
        self.progress.update(self.task, completed=ended, total=sum(wf.counts.values()))

    def close(self, wf: WorkflowSummary) -> None:
        self.update(wf)
        self.progress.stop()


_ENDED = frozenset({"completed", "failed", "canceled", "terminated", "disabled", "pending_failed"})
