"""A spec whose jobs are added to a workflow that exists (`workflows.add_jobs`): what it may say,
and the schedulers its jobs run under when the workflow runs on Slurm.

It is a whole spec, read by the same parser; its `name` (and what it says about itself) is
ignored. What belongs to the workflow as a whole is refused rather than ignored: files, user
data and actions, and the workflow's own settings (set when it was created).
"""

from __future__ import annotations

import msgspec

from torcd.core.resources import ComputeNode, Monitoring
from torcd.errors import InvalidParams
from torcd.spec.execution import Execution
from torcd.spec.parse import ExpandedJob, SlurmSchedulerSpec, Workflow, on_slurm, refuse_labels_on_slurm

_WHOLE_WORKFLOW = "not supported when adding jobs (they belong to the workflow as a whole)"
_OWN_SETTING = "is the workflow's own setting, given when it was created: leave it out when adding jobs"


def check_fragment(spec: Workflow) -> None:
    """Refuse (InvalidParams, naming the field) what adding these jobs cannot honour."""
    for field, given in (
        ("files", spec.files),
        ("datasets", spec.datasets),
        ("user_data", spec.user_data),
        ("actions", spec.actions),
    ):
        if given:
            raise InvalidParams(f"`{field}` are {_WHOLE_WORKFLOW}", {"field": f"$.{field}"})
    for field, differs in (
        ("execution_config", spec.execution != Execution() or spec.spawning.stdio is not None),
        ("use_pending_failed", spec.use_pending_failed is not None),
        ("output_dir", spec.output_dir != "output"),
        ("resource_monitor", spec.monitoring != Monitoring()),
        ("compute_node_*", spec.compute_node != ComputeNode()),
    ):
        if differs:
            raise InvalidParams(f"`{field}` {_OWN_SETTING}", {"field": f"$.{field}"})


def on_slurm_adding(
    spec: Workflow, stored: list[SlurmSchedulerSpec], account: str | None
) -> tuple[list[SlurmSchedulerSpec], list[ExpandedJob]]:
    """The schedulers the fragment brings and its jobs, each with its scheduler, as `on_slurm`
    gives them at creation. A fragment that declares none runs its jobs under the workflow's
    scheduler, when it has one only."""
    if spec.schedulers or not stored:
        return on_slurm(spec, account)
    refuse_labels_on_slurm(spec.jobs)
    if len(stored) > 1:
        names = ", ".join(sorted(s.name for s in stored))
        raise InvalidParams(
            f"the workflow has several slurm_schedulers ({names}): give the one these jobs run under in "
            "slurm_schedulers, as the workflow has it, and name it in each job's `scheduler`",
            {"field": "$.slurm_schedulers"},
        )
    return [], [msgspec.structs.replace(j, scheduler=stored[0].name) for j in spec.jobs]
