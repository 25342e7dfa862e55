"""The Slurm part of a spec: schedulers (Torc's fields), `slurm_defaults`, and their checks.

Every value here ends up on an `#SBATCH` line, so each is one line without control
characters, and one word where sbatch takes a word.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Any, Protocol

import msgspec
from msgspec import Meta

from torcd.core.resources import parse_memory
from torcd.core.slurm_plan import NodeShape


class Locator(Protocol):
    """What the checks need of the spec's locator: an error naming the line of a field."""

    def error(self, message: str, field: str) -> Exception: ...


WALLTIME = re.compile(r"(\d+-)?\d{1,2}(:\d{2}){0,2}")
SBATCH_MEMORY = re.compile(r"\d+([KMGTkmgt][Bb]?)?")  # what sbatch --mem takes (Slurm's str_to_mbytes)
_CHAIN_BREAKERS = re.compile(r"(--dependency|--job-name|-d|-J)(=|$)|-[dJ]\S")  # sbatch's long and short forms
ONE_WORD = re.compile(r"[^\s\x00-\x1f\x7f-\x9f]+")
_OPTION = re.compile(r"[a-z][a-z0-9-]*")
_GPUS = re.compile(r"gpu(?::[^:,]+)?:(\d+)")  # gres gpu:2 or gpu:a100:2
# What torcd writes itself for each allocation: slurm_defaults may not set these.
FORBIDDEN_DEFAULTS = frozenset(
    {
        "job-name",
        "output",
        "error",
        "chdir",
        "wrap",
        "array",
        "parsable",
        "dependency",
        "nodes",
        "ntasks",
        "ntasks-per-node",
        "cpus-per-task",
        "time",
        "mem",
        "exclusive",
        "export",
        "test-only",
        "hold",
        "wait",
        "input",
    }
)
SlurmDefaults = dict[str, str | int | bool]


class SlurmSchedulerSpec(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=512)]
    account: str | None = None
    partition: str | None = None
    walltime: str = "01:00:00"
    nodes: Annotated[int, Meta(ge=1, le=10_000)] = 1
    cpus: Annotated[int, Meta(ge=1, le=100_000)] | None = None  # per allocation (a shared one)
    mem: str | int | None = None  # sbatch --mem: megabytes, or a number with a unit
    gres: str | None = None
    qos: str | None = None
    tmp: str | int | None = None
    ntasks_per_node: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    extra: str | list[str] = []  # more sbatch options; a string is split as a shell would
    max_allocations: Annotated[int, Meta(ge=1, le=10_000)] = 4
    # Whole nodes (exclusive) unless shared; a scheduler that sizes its allocations (`cpus`) is shared.
    shared: bool | None = None
    node_cpus: Annotated[int, Meta(ge=1, le=100_000)] | None = None  # the partition's node shape, when
    node_memory: str | None = None  # not read from Slurm
    node_gpus: Annotated[int, Meta(ge=0, le=1024)] | None = None
    # Torc's chained allocations: one Slurm job name for all of them and --dependency=singleton, so
    # Slurm runs them one at a time, each starting as the last ends, queued (and ageing) meanwhile.
    serialize_allocations: bool = False

    @property
    def is_shared(self) -> bool:
        return self.shared if self.shared is not None else self.cpus is not None

    def gres_gpus(self) -> int | None:
        m = _GPUS.search(self.gres or "")
        return int(m[1]) if m else None

    def node_shape(self, seen: NodeShape | None, widest_job: int = 1) -> NodeShape | None:
        """The shape jobs are packed into: a shared allocation's own size, or a whole node's, from
        the spec or else from what Slurm reports for the partition (`seen`); None if unknown."""
        memory = parse_memory(self.node_memory) if self.node_memory else _sbatch_bytes(self.mem)
        gpus = self.node_gpus if self.node_gpus is not None else self.gres_gpus()
        if self.is_shared:
            return NodeShape(self.cpus or widest_job, memory, gpus or 0)
        cpus = self.node_cpus or (seen.cpus if seen else None)
        if cpus is None:
            return None
        return NodeShape(
            cpus,
            memory if memory is not None else (seen.memory if seen else None),
            gpus if gpus is not None else (seen.gpus if seen else 0),
        )


def _sbatch_bytes(mem: str | int | None) -> int | None:
    """Bytes of an sbatch --mem value (a bare number is megabytes); None for 0 (Slurm's "all of
    the node's memory": its size comes from the node)."""
    if mem is None:
        return None
    text = str(mem)
    if text.rstrip("KMGTkmgtBb").lstrip("0") == "":
        return None
    return parse_memory(text + "m") if text.isdigit() else parse_memory(text)


def check_schedulers(
    schedulers: list[SlurmSchedulerSpec], default: str | None, defaults: SlurmDefaults, loc: Locator
) -> str | None:
    """Validate schedulers and `slurm_defaults`; return the default scheduler (explicit, or the only one)."""
    names: set[str] = set()
    for i, sched in enumerate(schedulers):
        at = f"$.slurm_schedulers[{i}]"
        if sched.name in names:
            raise loc.error(f"duplicate scheduler name {sched.name!r}", f"{at}.name")
        names.add(sched.name)
        if not WALLTIME.fullmatch(sched.walltime):
            raise loc.error(
                f"`walltime` {sched.walltime!r} is not a Slurm time: write HH:MM:SS, MM:SS, "
                "MM or D-HH:MM:SS, like 01:30:00",
                f"{at}.walltime",
            )
        for field in ("mem", "tmp"):
            value = getattr(sched, field)
            if isinstance(value, int):
                value = str(value)
                setattr(sched, field, value)
            if value is not None and not SBATCH_MEMORY.fullmatch(value):
                raise loc.error(
                    f"`{field}` {value!r} must be a number with an optional unit K, M, G or T, like 240G",
                    f"{at}.{field}",
                )
            try:
                _sbatch_bytes(value)
            except ValueError as e:
                raise loc.error(str(e), f"{at}.{field}") from None
        for field in ("account", "partition", "gres", "qos"):
            value = getattr(sched, field)
            if value is not None and not ONE_WORD.fullmatch(value):
                raise loc.error(f"`{field}` {value!r} must be one word without spaces", f"{at}.{field}")
        if sched.node_memory is not None:
            try:
                parse_memory(sched.node_memory)
            except ValueError as e:
                raise loc.error(str(e), f"{at}.node_memory") from None
        if isinstance(sched.extra, str):
            try:
                sched.extra = shlex.split(sched.extra)
            except ValueError as e:
                raise loc.error(f"`extra` is not a list of options: {e}", f"{at}.extra") from None
        for j, option in enumerate(sched.extra):
            where = f"{at}.extra[{j}]" if len(sched.extra) > 1 else f"{at}.extra"
            if not option or re.search(r"[\x00-\x1f\x7f-\x9f]", option) or not option.startswith("-"):
                raise loc.error(
                    f"`extra` option {option!r} must be one sbatch option on one line, like --constraint=ib", where
                )
            if sched.serialize_allocations and _CHAIN_BREAKERS.match(option):
                raise loc.error(
                    f"`extra` option {option!r} would break the chain of serialize_allocations (torcd sets the "
                    "job name and --dependency=singleton)",
                    where,
                )
    _check_defaults(defaults, loc)
    if default is not None:
        if default not in names:
            raise loc.error(f"unknown scheduler {default!r}", "$.default_scheduler")
        return default
    return schedulers[0].name if len(schedulers) == 1 else None


def _check_defaults(defaults: SlurmDefaults, loc: Locator) -> None:
    for key, value in defaults.items():
        at = f"$.slurm_defaults.{key}"
        option = key.replace("_", "-")
        if not _OPTION.fullmatch(option):
            raise loc.error(f"slurm_defaults key {key!r} is not an sbatch long option name", at)
        taken = next((f for f in sorted(FORBIDDEN_DEFAULTS) if f.startswith(option)), None)  # sbatch takes prefixes
        if taken:
            raise loc.error(
                f"slurm_defaults may not set --{taken}: torcd sets it for each allocation (use the scheduler's fields)",
                at,
            )
        if option in _FIELDS and not ONE_WORD.fullmatch(str(value)):
            raise loc.error(f"slurm_defaults.{key} {value!r} must be one word without spaces", at)
        if isinstance(value, str) and not ONE_WORD.fullmatch(value):
            raise loc.error(
                f"slurm_defaults.{key} {value!r} must be one word without spaces (sbatch would read "
                "the rest as another option)",
                at,
            )


_FIELDS = ("account", "partition", "gres", "qos", "tmp")  # defaults that fill a scheduler's own field


def apply_defaults(defaults: dict[str, Any], schedulers: list[SlurmSchedulerSpec]) -> None:
    """Give each scheduler the workflow's `slurm_defaults`: into its fields where it leaves them
    unset, the rest as options before its own `extra` (so its own come last and win)."""
    for sched in schedulers:
        options = []
        for key, value in defaults.items():
            option = key.replace("_", "-")
            if option in _FIELDS:
                if getattr(sched, option) is None:
                    setattr(sched, option, str(value))
            elif value is not False:
                options.append(f"--{option}" if value is True else f"--{option}={value}")
        assert isinstance(sched.extra, list)
        sched.extra = options + sched.extra


def runs_on_slurm(schedulers: list) -> str | None:
    """Why a spec is meant for Slurm (Torc's `submit` sends such a spec there), or None: a
    local run of it would run HPC work on this machine by surprise. (A schedule_nodes action
    always names one of the schedulers.)"""
    return "it has slurm_schedulers" if schedulers else None
