"""Attempts: what starts one (`Runnable`, `Recovery`), what happened to it (`Start`, `Exit`), and
the failure awaiting a decision on it.
Plain values shared by the daemon, the worker and the client; no store behind them.
"""

from __future__ import annotations

import os

import msgspec

from torcd.core.exits import Exit as Exit  # an attempt's end
from torcd.core.retry import Rule


class SrunOptions(msgspec.Struct, frozen=True, omit_defaults=True):
    """What a workflow's jobs are started with as srun steps (Torc's mode: slurm), beyond what
    each job asks for: `core.srun` makes the words."""

    cpu_bind: bool = False  # Torc's enable_cpu_bind; otherwise --cpu-bind=none
    signal: str | None = None  # Torc's srun_termination_signal: srun's --signal=[R:]SIG[@TIME]


class Runnable(msgspec.Struct):
    """A job claimed for execution, with everything needed to start it."""

    job_id: int
    workflow_id: int
    name: str
    command: str
    run_id: int
    attempt_id: int
    num_cpus: int
    env: dict[str, str]
    cwd: str
    output_dir: str
    stdout_path: str
    stderr_path: str
    runtime: float | None = None  # seconds it may run; stopped and recorded as `timeout` past it
    start_time: float | None = None  # of an attempt already running (adopted after a restart)
    num_gpus: int = 0
    gpus: list[str] | None = None  # the devices it was given (CUDA_VISIBLE_DEVICES), once started
    memory: int | None = None  # bytes its processes may use together; killed and recorded as `oom` past it
    sample_interval: float | None = None  # seconds between samples of what it uses; None: not sampled
    outputs: list[str] | None = None  # files it must have written when it exits 0 (relative to cwd)
    supports_termination: bool = True  # at its runtime limit: TERM, a grace, then KILL; else KILL at once
    term_signal: int = 15  # what it gets at its runtime limit (execution_config.termination_signal)
    term_grace: float | None = None  # seconds from that signal to KILL (sigterm_lead_seconds); None: 5 %
    delete_stdio: bool = False  # its log files are deleted when it completes (Torc's delete_on_success)
    enforce_memory: bool = True  # false: its memory is sampled, never a reason to kill it (limit_resources)
    srun: SrunOptions | None = None  # run as an srun step of its worker's allocation (Torc's mode: slurm)
    label: str | None = None  # started only while a `run --label` serves it: never sent ahead

    @property
    def log_paths(self) -> tuple[str, str]:
        return self.stdout_path, self.stderr_path


class Recovery(msgspec.Struct, frozen=True):
    """A job whose recovery script must run (again, after a restart)."""

    job_id: int
    workflow_id: int
    name: str
    run_id: int
    attempt_id: int
    return_code: int
    script: str
    timeout: float
    env: dict[str, str]
    cwd: str
    output_dir: str


class Start(msgspec.Struct, frozen=True):
    """A claimed job whose process the executor started (pid None: it could not start)."""

    job: Runnable
    pid: int | None
    time: float


class Failure(msgspec.Struct, frozen=True):
    """A recorded non-zero exit still waiting for its failure-handler decision: the input of
    `retry.decide` (the exit as the store keeps it, with the job's handler and the workflow's
    setting), not a report of an exit."""

    job_id: int
    workflow_id: int
    run_id: int
    attempt_id: int
    return_code: int
    rules: list[Rule] | None
    use_pending_failed: bool | None
    cause: str | None = None  # timeout, oom, missing_output


def stdio_paths(
    output_dir: str, prefix: str, wf: int, job: int, run: int, attempt: int, mode: str | None = None
) -> tuple[str, str]:
    """Where an attempt's stdout and stderr go (`prefix` job or recovery), as Torc's stdio `mode`
    says (None: separate): "" is not kept (/dev/null); combined writes both to one `.log`."""
    base = os.path.join(output_dir, "job_stdio", f"{prefix}_wf{wf}_j{job}_r{run}_a{attempt}")
    if mode == "combined":
        return base + ".log", base + ".log"
    out = "" if mode in ("no_stdout", "none") else base + ".o"
    err = "" if mode in ("no_stderr", "none") else base + ".e"
    return out, err
