"""Talking to Slurm: the allocation script, sbatch, squeue and scancel."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import tempfile

from torcd.ownership import UnsafePath, make_private_dir
from torcd.spec import SlurmSchedulerSpec

# squeue states that mean the allocation has not started / is running.
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                  "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}


class SlurmError(Exception):
    pass


def walltime_seconds(walltime: str) -> int:
    """Slurm time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days = 0
    if "-" in walltime:
        d, walltime = walltime.split("-", 1)
        days = int(d)
        parts = [int(p) for p in walltime.split(":")] + [0, 0]
        h, m, s = parts[:3]
    else:
        parts = [int(p) for p in walltime.split(":")]
        h, m, s = {1: (0, parts[0], 0), 2: (0, parts[0], parts[1]), 3: tuple(parts)}[len(parts)]
    return ((days * 24 + h) * 60 + m) * 60 + s


def render_script(*, workflow_id: int, allocation_id: int, scheduler: SlurmSchedulerSpec, cpus: int,
                  account: str | None, url: str, token_file: str, log_dir: str, python: str = sys.executable,
                  poll_interval: float = 0.5, ca_file: str | None = None) -> str:
    """The batch script of one allocation: run a torcctl worker for the workflow."""
    account = account or scheduler.account
    _refuse_unsafe(account=account, partition=scheduler.partition, mem=scheduler.mem, walltime=scheduler.walltime,
                   log_dir=log_dir, extra=scheduler.extra)
    lines = ["#!/bin/bash", f"#SBATCH --job-name=torc_wf{workflow_id}_a{allocation_id}",
             f"#SBATCH --nodes={scheduler.nodes}", "#SBATCH --ntasks=1", f"#SBATCH --cpus-per-task={cpus}",
             f"#SBATCH --time={scheduler.walltime}", f"#SBATCH --output={log_dir}/slurm_%j.out"]
    if account:
        lines.append(f"#SBATCH --account={account}")
    if scheduler.partition:
        lines.append(f"#SBATCH --partition={scheduler.partition}")
    if scheduler.mem:
        lines.append(f"#SBATCH --mem={scheduler.mem}")
    for arg in scheduler.extra:
        lines.append(f"#SBATCH {arg}")
    worker = [python, "-m", "torcctl", "worker", "--url", url, "--token-file", token_file,
              "--workflow-id", str(workflow_id), "--allocation-id", str(allocation_id), "--cpus", str(cpus),
              "--walltime", str(walltime_seconds(scheduler.walltime)), "--poll-interval", str(poll_interval)]
    if ca_file:  # the daemon's TLS certificate, which the worker trusts
        worker += ["--ca-file", ca_file]
    lines += ["", "# Each allocation runs one torcctl worker that claims the workflow's ready jobs.",
              "exec " + " ".join(shlex.quote(w) for w in worker), ""]
    return "\n".join(lines)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ONE_WORD = {"account", "partition", "mem", "walltime"}


def _refuse_unsafe(**fields: str | int | list[str] | None) -> None:
    """Every #SBATCH value stays on its line: a newline would start a shell command in the script.
    The spec refuses these first; this wall also covers values that arrive another way."""
    for field, value in fields.items():
        for text in value if isinstance(value, list) else [value]:
            if text is None:
                continue
            text = str(text)  # mem may be a plain number of megabytes
            if _CONTROL.search(text) or (field in _ONE_WORD and (not text or text.split() != [text])):
                raise SlurmError(f"refusing to write a batch script: {field} {text!r} "
                                 + ("contains a control character" if _CONTROL.search(text) else "is not one word"))


async def _run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    try:
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} not found: is Slurm installed and on PATH?") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        raise SlurmError(f"{args[0]} did not answer within {timeout:g}s") from None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def sbatch(script_path: str, cwd: str) -> str:
    """Submit a batch script; return the Slurm job id."""
    rc, out, err = await _run("sbatch", "--parsable", f"--chdir={cwd}", script_path)
    if rc != 0:
        raise SlurmError(f"sbatch failed (exit {rc}): {err.strip() or out.strip()}")
    return out.strip().split(";")[0]


async def squeue(job_ids: list[str]) -> dict[str, str]:
    """Slurm state of each job id still known to the queue (absent ids have left it)."""
    if not job_ids:
        return {}
    rc, out, err = await _run("squeue", "-h", "--states=all", "-o", "%i|%T", "-j", ",".join(job_ids))
    if rc != 0 and "Invalid job id" not in err:
        raise SlurmError(f"squeue failed (exit {rc}): {err.strip()}")
    states = {}
    for line in out.splitlines():
        if "|" in line:
            jid, state = line.strip().split("|", 1)
            states[jid] = state
    return states


async def scancel(job_id: str) -> None:
    await _run("scancel", job_id)


def write_script(path: str, text: str) -> None:
    """Write the batch script where nobody else can change or redirect it: in a directory of ours
    that others cannot write, under a fresh name, then renamed over `path` (which replaces a
    symlink planted there instead of following it)."""
    directory = os.path.dirname(path)
    try:
        make_private_dir(directory, "the Slurm log directory")
    except UnsafePath as e:
        raise SlurmError(e.message) from None
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".alloc-", suffix=".sh")  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o700)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
