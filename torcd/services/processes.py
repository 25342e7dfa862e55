"""Starting and stopping process groups, and finding ones a crashed daemon left behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time


def job_env(base: dict[str, str], *, workflow_id: int, job_id: int, name: str, run_id: int,
            attempt_id: int, api_url: str, output_dir: str, extra: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(extra)
    env.update(TORC_WORKFLOW_ID=str(workflow_id), TORC_JOB_ID=str(job_id), TORC_JOB_NAME=name,
               TORC_API_URL=api_url, TORC_OUTPUT_DIR=output_dir, TORC_ATTEMPT_ID=str(attempt_id),
               TORC_RUN_ID=str(run_id))
    return env


def signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def stop_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """TERM the process group, then KILL it if it has not exited after `grace` seconds."""
    signal_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()
    # The leader is gone; make sure nothing it left in its group survives.
    signal_group(proc.pid, signal.SIGKILL)


def find_attempt_processes(keys: set[tuple[int, int, int]], recovery: bool = False
                           ) -> dict[tuple[int, int, int], list[int]]:
    """Map (job_id, run_id, attempt_id) to live pids whose environment carries that attempt.

    With `recovery`, only recovery-script processes (they carry TORC_RETURN_CODE) count;
    otherwise only the job's own.
    """
    found: dict[tuple[int, int, int], list[int]] = {}
    if not keys:
        return found
    me = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != me:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if b"TORC_JOB_ID=" not in raw or (b"\0TORC_RETURN_CODE=" in raw) != recovery:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        try:
            key = (int(env[b"TORC_JOB_ID"]), int(env.get(b"TORC_RUN_ID", b"1")), int(env[b"TORC_ATTEMPT_ID"]))
        except (KeyError, ValueError):
            continue
        if key in keys:
            found.setdefault(key, []).append(int(entry))
    return found


def kill_pids(pids: list[int], timeout: float = 5.0) -> None:
    """SIGKILL each pid's process group (and the pid) and wait until they are gone."""
    for pid in pids:
        signal_group(pid, signal.SIGKILL)
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline and is_alive(pid):
            time.sleep(0.01)


def is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
