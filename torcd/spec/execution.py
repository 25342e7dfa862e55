"""Torc's `execution_config`: how jobs are stopped at their time limit, which exit codes a job
stopped for its time or memory is recorded with, whether memory limits are enforced, and where
jobs' output goes (`stdio`, applied per job by the parser). What torc-py runs of it is read into
`Execution`; in a Slurm workflow, `mode: slurm` (or `auto`) runs each job as an srun step of its
worker's allocation. What it does not run is refused with the field named, never accepted and
ignored."""

from __future__ import annotations

import signal
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from torcd.core.attempts import SrunOptions
from torcd.core.exits import SIGKILL_EXIT, SIGXCPU_EXIT
from torcd.core.srun import SRUN_SIGNAL

ExitCode = Annotated[int, Meta(ge=0, le=255)]


class StdioSpec(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["separate", "combined", "no_stdout", "no_stderr", "none"] = "separate"
    delete_on_success: bool = False


class ExecutionConfigSpec(msgspec.Struct, forbid_unknown_fields=True):
    mode: Literal["direct", "slurm", "auto"] = "direct"
    limit_resources: bool = True
    termination_signal: Annotated[str, Meta(max_length=16)] = "SIGTERM"
    sigterm_lead_seconds: Annotated[int, Meta(ge=0, le=86_400)] | None = None
    sigkill_headroom_seconds: Annotated[int, Meta(ge=0, le=86_400)] | None = None
    timeout_exit_code: ExitCode = SIGXCPU_EXIT  # Torc's default: 152, what Slurm's time limit leaves
    oom_exit_code: ExitCode = SIGKILL_EXIT
    staggered_start: bool | None = None
    enable_cpu_bind: bool = False
    srun_termination_signal: Annotated[str, Meta(max_length=64)] | None = None
    srun_mpi: Annotated[str, Meta(max_length=64)] | None = None
    stdio: StdioSpec | None = None


class Execution(msgspec.Struct, frozen=True):
    """What a workflow's jobs get at their time limit, and the exit codes of those stopped."""

    term_signal: int = signal.SIGTERM
    term_grace: float | None = None  # None: 5 % of the runtime, 1 to 10 s
    timeout_exit_code: int | None = None  # None: the code the job ended with
    oom_exit_code: int | None = None
    limit_resources: bool = True  # false: memory is sampled but never a reason to kill a job
    srun: SrunOptions | None = None  # jobs run as srun steps in their allocations


def execution_of(spec: ExecutionConfigSpec, on_slurm: bool) -> tuple[Execution | None, tuple[str, str] | None]:
    """The execution a config asks for, or (None, (field, why)) where torc-py does not run it."""
    at = "$.execution_config"
    steps = spec.mode == "slurm" or (spec.mode == "auto" and on_slurm)
    if spec.mode == "slurm" and not on_slurm:
        return None, (
            f"{at}.mode",
            "srun steps run in Slurm allocations, and this workflow has no `slurm_schedulers`: use `mode: "
            "direct` (or `auto`), or add a scheduler and `torcctl submit-slurm` it",
        )
    direct_only = "an srun option, for `mode: slurm` (jobs run directly here)"
    refused = {
        "sigkill_headroom_seconds": (
            spec.sigkill_headroom_seconds is not None,
            "the margin before an allocation's end is `compute_node_expiration_buffer_seconds`",
        ),
        "enable_cpu_bind": (spec.enable_cpu_bind and not steps, direct_only),
        "srun_termination_signal": (spec.srun_termination_signal is not None and not steps, direct_only),
        "srun_mpi": (
            spec.srun_mpi is not None,
            "workers on several nodes are started by one srun without an MPI plugin; start MPI programs with "
            "srun --mpi=... in the job's command",
        ),
        "limit_resources": (
            steps and not spec.limit_resources,
            "srun steps always ask for the job's CPUs and memory (as in Torc, where it is an error)",
        ),
    }
    for field, (is_refused, why) in refused.items():
        if is_refused:
            return None, (f"{at}.{field}", f"`{field}` as given is not supported by torc-py: {why}")
    name = spec.termination_signal.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    sig = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if sig is None or sig in (signal.SIGKILL, signal.SIGSTOP):
        return None, (
            f"{at}.termination_signal",
            f"{spec.termination_signal!r} is not a signal a job can catch (SIGTERM, SIGINT, SIGUSR1, ...)",
        )
    term = spec.srun_termination_signal
    if steps and term is not None and not SRUN_SIGNAL.fullmatch(term):
        return None, (
            f"{at}.srun_termination_signal",
            f"{term!r} is not srun's --signal=[R:]SIGNAL[@SECONDS] (TERM@120, R:USR1@60, 10)",
        )
    grace = None if spec.sigterm_lead_seconds is None else float(spec.sigterm_lead_seconds)
    srun = SrunOptions(spec.enable_cpu_bind, term) if steps else None
    return Execution(int(sig), grace, spec.timeout_exit_code, spec.oom_exit_code, spec.limit_resources, srun), None
