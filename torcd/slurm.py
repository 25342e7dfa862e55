"""Talking to Slurm: the allocation script, sbatch, squeue and scancel."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shlex
import sys
import tempfile

from torcd.core.slurm_plan import NodeShape
from torcd.ownership import UnsafePath, make_private_dir
from torcd.services.processes import restore_user_limits
from torcd.spec.parse import SlurmSchedulerSpec


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


def render_script(
    *,
    workflow_id: int,
    allocation_id: int,
    scheduler: SlurmSchedulerSpec,
    cpus: int,
    account: str | None,
    url: str,
    token_file: str,
    log_dir: str,
    python: str = sys.executable,
    poll_interval: float = 0.5,
    ca_file: str | None = None,
    gpus: int = 0,
) -> str:
    """The batch script of one allocation: a torcctl worker on each of its nodes. A shared
    allocation asks for `cpus` per node; otherwise it takes whole nodes (--exclusive) and each
    worker uses what its node has."""
    account = account or scheduler.account
    extra = list(scheduler.extra) if isinstance(scheduler.extra, list) else [scheduler.extra]
    _refuse_unsafe(
        account=account,
        partition=scheduler.partition,
        mem=scheduler.mem,
        walltime=scheduler.walltime,
        gres=scheduler.gres,
        qos=scheduler.qos,
        tmp=scheduler.tmp,
        log_dir=log_dir,
        extra=extra,
    )
    lines = _sbatch_lines(
        workflow_id=workflow_id,
        allocation_id=allocation_id,
        scheduler=scheduler,
        cpus=cpus,
        account=account,
        log_dir=log_dir,
        gpus=gpus,
        extra=extra,
    )
    command = _worker_command(
        workflow_id=workflow_id,
        allocation_id=allocation_id,
        scheduler=scheduler,
        cpus=cpus,
        url=url,
        token_file=token_file,
        python=python,
        poll_interval=poll_interval,
        ca_file=ca_file,
    )
    return "\n".join(lines + _launch_lines(scheduler, cpus, command))


def _sbatch_lines(
    *,
    workflow_id: int,
    allocation_id: int,
    scheduler: SlurmSchedulerSpec,
    cpus: int,
    account: str | None,
    log_dir: str,
    gpus: int,
    extra: list[str],
) -> list[str]:
    """The shebang and the #SBATCH options: what the allocation asks Slurm for."""
    shared = scheduler.is_shared
    name = f"torc_wf{workflow_id}_a{allocation_id}"
    if scheduler.serialize_allocations:  # one name per (workflow, scheduler): Slurm's singleton chains them
        name = f"torc-wf{workflow_id}-{hashlib.sha256(scheduler.name.encode()).hexdigest()[:12]}"
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={scheduler.nodes}",
        f"#SBATCH --ntasks-per-node={scheduler.ntasks_per_node or 1}",
        f"#SBATCH --cpus-per-task={cpus}" if shared else "#SBATCH --exclusive",
        f"#SBATCH --time={scheduler.walltime}",
        f"#SBATCH --output={_sbatch_path(log_dir)}",
    ]
    if scheduler.serialize_allocations:
        lines.append("#SBATCH --dependency=singleton")
    # GPUs the plan counted on must be asked for: Slurm gives none without --gres, even with --exclusive.
    gres = scheduler.gres or (f"gpu:{gpus}" if gpus else None)
    for option, value in (
        ("account", account),
        ("partition", scheduler.partition),
        ("mem", scheduler.mem),
        ("gres", gres),
        ("qos", scheduler.qos),
        ("tmp", scheduler.tmp),
    ):
        if value:
            lines.append(f"#SBATCH --{option}={value}")
    for arg in extra:
        lines.append(f"#SBATCH {arg}")
    return lines


def _worker_command(
    *,
    workflow_id: int,
    allocation_id: int,
    scheduler: SlurmSchedulerSpec,
    cpus: int,
    url: str,
    token_file: str,
    python: str,
    poll_interval: float,
    ca_file: str | None,
) -> str:
    """The torcctl worker each node runs, as one shell-quoted command."""
    worker = [
        python,
        "-m",
        "torcctl",
        "worker",
        "--url",
        url,
        "--token-file",
        token_file,
        "--workflow-id",
        str(workflow_id),
        "--allocation-id",
        str(allocation_id),
        "--walltime",
        str(walltime_seconds(scheduler.walltime)),
        "--poll-interval",
        str(poll_interval),
    ]
    if scheduler.is_shared:
        worker += ["--cpus", str(cpus)]
    if ca_file:  # the daemon's TLS certificate, which the worker trusts
        worker += ["--ca-file", ca_file]
    return " ".join(shlex.quote(w) for w in worker)


def _launch_lines(scheduler: SlurmSchedulerSpec, cpus: int, command: str) -> list[str]:
    """The script's body: exec the worker, through srun on each node when there are several."""
    nodes, shared = scheduler.nodes, scheduler.is_shared
    if nodes == 1:
        return [
            "",
            "# One torcctl worker claims the workflow's ready jobs that fit this node.",
            f"exec {command}",
            "",
        ]
    # a step of one task per node, each with the node's CPUs for the jobs it starts
    return [
        "",
        "# A torcctl worker on each node claims the workflow's ready jobs that fit it.",
        f"exec srun --nodes={nodes} --ntasks={nodes} --ntasks-per-node=1 --kill-on-bad-exit=0 "
        + (f"--cpus-per-task={cpus} " if shared else '--cpus-per-task="$SLURM_CPUS_ON_NODE" ')
        + command,
        "",
    ]


def _sbatch_path(log_dir: str) -> str:
    """The output file in the log directory, as one #SBATCH word whatever the directory's name:
    sbatch reads a double-quoted value (\\" for a quote), and Slurm's file name patterns take %%
    for a % of the name. A backslash cannot be said: in a file name, Slurm drops it."""
    if "\\" in log_dir:
        raise SlurmError(
            f"refusing to write a batch script: Slurm cannot write into {log_dir!r}, whose path contains a backslash"
        )
    return '"' + log_dir.replace("%", "%%").replace('"', '\\"') + '/slurm_%j.out"'


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ONE_WORD = {"account", "partition", "mem", "walltime", "gres", "qos", "tmp"}


def _refuse_unsafe(**fields: str | int | list[str] | None) -> None:
    """Every #SBATCH value stays on its line: a newline would start a shell command in the script.
    The spec refuses these first; this wall also covers values that arrive another way."""
    for field, value in fields.items():
        for text in value if isinstance(value, list) else [value]:
            if text is None:
                continue
            text = str(text)  # mem may be a plain number of megabytes
            if _CONTROL.search(text) or (field in _ONE_WORD and (not text or text.split() != [text])):
                raise SlurmError(
                    f"refusing to write a batch script: {field} {text!r} "
                    + ("contains a control character" if _CONTROL.search(text) else "is not one word")
                )


async def _run(*args: str, timeout: float = 60, stdin: bytes | None = None) -> tuple[int, str, str]:
    try:
        # With the user's own limits: Slurm copies the submitter's to the allocation.
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=restore_user_limits,
        )
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} not found: is Slurm installed and on PATH?") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        proc.kill()
        raise SlurmError(f"{args[0]} did not answer within {timeout:g}s") from None
    assert proc.returncode is not None  # communicate() returns once the process has exited
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def sbatch(script: str, cwd: str) -> str:
    """Submit a batch script's text (on sbatch's stdin: read from a file by its path, it could be
    swapped between writing and reading by whoever can rename a directory above it); return the
    Slurm job id."""
    rc, out, err = await _run("sbatch", "--parsable", f"--chdir={cwd}", stdin=script.encode())
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


async def scancel_pending(job_ids: list[str]) -> None:
    """Cancel these Slurm jobs if they are still pending: one that has just started is left to
    run (its worker finds nothing and leaves)."""
    if not job_ids:
        return
    rc, out, err = await _run("scancel", "--state=PENDING", *job_ids)
    if rc != 0:
        raise SlurmError(f"scancel failed (exit {rc}): {err.strip() or out.strip()}")


def private_dir(path: str, what: str) -> None:
    """Make (or check) a directory only the user can write, or SlurmError saying why not."""
    try:
        make_private_dir(path, what)
    except UnsafePath as e:
        raise SlurmError(e.message) from None


def write_script(path: str, text: str) -> None:
    """Write the batch script where nobody else can change or redirect it: in a directory of ours
    that others cannot write, under a fresh name, then renamed over `path` (which replaces a
    symlink planted there instead of following it)."""
    directory = os.path.dirname(path)
    private_dir(directory, "the Slurm log directory")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=".alloc-", suffix=".sh")  # O_EXCL, mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o700)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


async def partition_node_shape(partition: str | None) -> NodeShape | None:
    """The shape of the partition's nodes as sinfo reports them (the most common one), or None."""
    args = ["sinfo", "-h", "-N", "-o", "%c|%m|%G"] + (["-p", partition] if partition else [])
    try:
        rc, out, _ = await _run(*args, timeout=30)
    except SlurmError:
        return None
    shapes: dict[NodeShape, int] = {}
    for line in out.splitlines():
        try:
            cpus, mem, gres = line.strip().split("|")
            m = re.search(r"gpu(?::[^:,(]+)?:(\d+)", gres)
            # Slurm's RealMemory defaults to 1 (MB) where nobody set it: that is "unknown", not 1 MiB.
            shape = NodeShape(int(cpus), int(mem) << 20 if int(mem) > 1 else None, int(m[1]) if m else 0)
        except ValueError:
            continue
        shapes[shape] = shapes.get(shape, 0) + 1
    return max(shapes, key=shapes.__getitem__) if rc == 0 and shapes else None
