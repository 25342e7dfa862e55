"""Torc's `actions` in a spec: what fires each one and what it does, checked before anything is
stored (the jobs it names exist, its regexes match, its scheduler is defined)."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol

import msgspec
from msgspec import Meta

from torcd.core.actions import Action, ActionType, Trigger

Name = Annotated[str, Meta(min_length=1, max_length=512)]
Pattern = Annotated[str, Meta(min_length=1, max_length=1024)]
MAX_ACTIONS = 1000
MAX_WATCHED = 2_000_000  # jobs watched by all of a workflow's actions together


class Locator(Protocol):
    def error(self, message: str, field: str) -> Exception: ...


class Matcher(Protocol):
    def search(self, pattern: str, names: list[str], at: str) -> list[str]: ...


class ActionSpec(msgspec.Struct, forbid_unknown_fields=True):
    trigger_type: Trigger
    action_type: ActionType
    jobs: list[Name] | None = None
    job_name_regexes: list[Pattern] | None = None
    commands: list[Annotated[str, Meta(min_length=1, max_length=120 * 1024)]] | None = None
    scheduler: Name | None = None
    scheduler_type: Literal["slurm"] | None = None
    num_allocations: Annotated[int, Meta(ge=1, le=1000)] = 1
    start_one_worker_per_node: bool = False
    max_parallel_jobs: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    persistent: bool = False


def check_actions(
    specs: list[ActionSpec], job_names: list[str], schedulers: set[str], matcher: Matcher, loc: Locator
) -> list[tuple[Action, list[str]]]:
    """Each action with the names of the jobs it watches (none for the workflow triggers)."""
    if len(specs) > MAX_ACTIONS:
        raise loc.error(f"{len(specs):,} actions; the limit is {MAX_ACTIONS:,}", "$.actions")
    known = set(job_names)
    out, watched = [], 0
    for i, a in enumerate(specs):
        at = f"$.actions[{i}]"
        if a.action_type == "run_commands" and not a.commands:
            raise loc.error("a run_commands action needs `commands` (a list of shell commands)", at)
        if a.action_type == "schedule_nodes":
            if a.scheduler is None or a.scheduler_type is None:
                raise loc.error("a schedule_nodes action needs `scheduler` and `scheduler_type: slurm`", at)
            if a.scheduler not in schedulers:
                names = ", ".join(sorted(schedulers)) or "none are defined"
                raise loc.error(f"unknown scheduler {a.scheduler!r} ({names})", f"{at}.scheduler")
        chosen: dict[str, None] = {}
        for k, name in enumerate(a.jobs or []):
            if name not in known:
                raise loc.error(f"action names job {name!r}, which does not exist", f"{at}.jobs[{k}]")
            chosen[name] = None
        for k, pattern in enumerate(a.job_name_regexes or []):
            field = f"{at}.job_name_regexes[{k}]"
            matched = matcher.search(pattern, job_names, field)
            if not matched:
                raise loc.error(f"job_name_regexes entry {pattern!r} matches no job", field)
            chosen.update(dict.fromkeys(matched))
        jobs_trigger = a.trigger_type in ("on_jobs_ready", "on_jobs_complete")
        # Torc's layout of stages: a schedule_nodes action at the start names the jobs its allocations
        # are for (they run there); it still fires at the start, whatever they do.
        binds = a.trigger_type == "on_workflow_start" and a.action_type == "schedule_nodes"
        if jobs_trigger and not chosen:
            raise loc.error(f"an {a.trigger_type} action needs `jobs` or `job_name_regexes`", at)
        if not jobs_trigger and not binds and (a.jobs or a.job_name_regexes):
            raise loc.error(
                f"an {a.trigger_type} {a.action_type} action is about the whole workflow; it takes no "
                "`jobs` or `job_name_regexes` (only a schedule_nodes action at the start names the jobs "
                "its allocations are for)",
                at,
            )
        watched += len(chosen)
        if watched > MAX_WATCHED:
            raise loc.error(f"the actions watch more than {MAX_WATCHED:,} jobs in all", at)
        out.append(
            (
                Action(
                    i,
                    a.trigger_type,
                    a.action_type,
                    a.commands or [],
                    a.scheduler,
                    a.num_allocations,
                    a.start_one_worker_per_node,
                    a.max_parallel_jobs,
                    a.persistent,
                ),
                list(chosen),
            )
        )
    return out


def schedule_by_actions(jobs: list, named_own: list[bool], actions: list[tuple[Action, list[str]]]) -> None:
    """Give each expanded job that names no scheduler of its own (`named_own` false) the one whose
    allocations run it: the first schedule_nodes action that names it (Torc's way of giving each
    stage its own allocations), else the first on_workflow_start schedule_nodes action that names
    no jobs, whose allocations are for the workflow as a whole (where no default_scheduler is)."""
    by_name = {j.name: j for j, own in zip(jobs, named_own) if not own}
    for action, names in actions:
        if action.action_type == "schedule_nodes":
            for name in names:
                if name in by_name:  # the first action wins
                    by_name.pop(name).scheduler = action.scheduler
    whole = next(
        (
            a.scheduler
            for a, names in actions
            if a.action_type == "schedule_nodes" and a.trigger == "on_workflow_start" and not names
        ),
        None,
    )
    if whole is not None:
        for job in by_name.values():
            if job.scheduler is None:  # a default_scheduler still has its say
                job.scheduler = whole
