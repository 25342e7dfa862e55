"""Starting and stopping process groups, and finding ones a crashed daemon left behind."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from torcd.core.exits import CANNOT_EXECUTE
from torcd.services.log_files import log_files

# What marks a process as a job's, a recovery script's or an action's: never inherited from the
# environment torcd itself was started in (a daemon started from a job or an action), or a
# restarted daemon would take its jobs for another's leftovers.
MARKS = ("TORC_JOB_ID", "TORC_RUN_ID", "TORC_ATTEMPT_ID", "TORC_RETURN_CODE", "TORC_ACTION_ID")


def unmarked(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in MARKS}


def job_vars(
    *,
    workflow_id: int,
    job_id: int,
    name: str,
    run_id: int,
    attempt_id: int,
    api_url: str,
    output_dir: str,
    extra: dict[str, str],
) -> dict[str, str]:
    """What a job's environment has of its own, over the daemon's (unmarked): its spec's
    variables and the TORC_* ones."""
    env = unmarked(extra) if extra else {}
    env.update(
        TORC_WORKFLOW_ID=str(workflow_id),
        TORC_JOB_ID=str(job_id),
        TORC_JOB_NAME=name,
        TORC_API_URL=api_url,
        TORC_OUTPUT_DIR=output_dir,
        TORC_ATTEMPT_ID=str(attempt_id),
        TORC_RUN_ID=str(run_id),
    )
    return env


_user_umask = -1  # -1: leave the umask of started processes alone
_user_nofile = -1  # the soft limit on open descriptors to give started processes back; -1: as ours


def prepare_to_start_processes(more_descriptors: bool = False) -> None:
    """Once, before starting jobs. Files and directories this process creates (logs, output
    dirs, scripts) follow the user's umask but are never writable by others; the jobs it
    starts keep the user's umask as it was. Descriptors it was started with stay out of jobs
    (posix_spawn closes nothing itself; the ones Python opens are close-on-exec already).

    `more_descriptors` (the daemon): raise the soft limit on open descriptors to the hard one,
    so that connections cannot use up what jobs and the owner need; jobs get the old one back."""
    global _user_umask, _user_nofile
    _user_umask = os.umask(0o022)
    os.umask(_user_umask | 0o002)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if more_descriptors and soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            _user_nofile = soft
    for name in os.listdir("/proc/self/fd"):
        if int(name) > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                os.set_inheritable(int(name), False)


BASH = shutil.which("bash") or "bash"  # resolved once, not by a PATH search in every child
_devnull: int | None = None
LAUNCH_FAILED = CANNOT_EXECUTE  # the command never got to run
# Python ignores these; the processes it starts get the defaults back (as subprocess does).
# glibc's posix_spawn leaves its two reserved signals (32, 33) ignored; nothing sends them.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def restore_user_limits() -> None:
    """In a child about to exec a program that is not a job's shell (sbatch): the user's soft
    limit on open descriptors, if the daemon raised its own."""
    if _user_nofile >= 0:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_user_nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def user_umask() -> int | None:
    """The user's umask if `prepare_to_start_processes` tightened ours, else None."""
    return None if _user_umask < 0 else _user_umask


def user_nofile() -> int:
    """The user's soft limit on open descriptors if `prepare_to_start_processes` raised ours, else -1."""
    return _user_nofile


def shell_prelude(cwd: str) -> str:
    """What a started shell does first: go to `cwd` (or exit 126, saying why on its stderr) and
    take the user's umask and limit on open descriptors. In the shell because posix_spawn has no
    working-directory action."""
    umask = user_umask()
    return (
        f"cd -- {shlex.quote(cwd)} || exit {LAUNCH_FAILED}; "
        + ("" if umask is None else f"umask {umask:03o}; ")
        + ("" if _user_nofile < 0 else f"ulimit -S -n {_user_nofile}; ")
    )


def missing_directory(cwd: str) -> OSError | None:
    """Why a shell could not enter `cwd` (its `cd` failed), if the directory is gone."""
    return None if os.path.isdir(cwd) else FileNotFoundError(errno.ENOENT, "working directory not found", cwd)


def start_failure(e: OSError | ValueError) -> str:
    """What keeps a process from starting, as the user reads it: the reason and the path."""
    if not isinstance(e, OSError):
        return f"could not start: {e}"
    return f"could not start: {e.strerror or e}" + (f" ({e.filename})" if e.filename else "")


def unstartable_input(fields: dict[str, str], env: dict[str, str]) -> ValueError | None:
    """Why no process can be started with these strings (`fields` by name, and the extra
    environment), if one of them is not something exec accepts: a NUL byte anywhere, or a
    variable name that is empty or holds '='. posix_spawn would raise ValueError without
    saying which."""
    for what, value in fields.items():
        if "\0" in value:
            return ValueError(f"its {what} contains a NUL byte")
    for name, value in env.items():
        if not name or "=" in name or "\0" in name:
            return ValueError(f"environment variable name {name!r} is not valid (empty, or holds '=' or NUL)")
        if "\0" in value:
            return ValueError(f"environment variable {name} contains a NUL byte")
    return None


def spawn_shell(
    command: str,
    *,
    env: dict[str, str],
    stdout: int | None = None,
    stderr: int | None = None,
    args: tuple[str, ...] = (),
    shell: str = BASH,
) -> WatchedProcess:
    """`bash -c COMMAND` (or another `shell`, with positional `args`) in a session of its own
    (so its whole group can be signalled); output goes nowhere unless given.

    posix_spawn and a pidfd cost the event loop a fraction of what asyncio's subprocess
    machinery does per process. Our descriptors are all close-on-exec, so only these three
    reach the child.
    """
    global _devnull
    if _devnull is None:
        _devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions = [
        (os.POSIX_SPAWN_DUP2, _devnull, 0),
        (os.POSIX_SPAWN_DUP2, _devnull if stdout is None else stdout, 1),
        (os.POSIX_SPAWN_DUP2, _devnull if stderr is None else stderr, 2),
    ]
    argv = [shell, "-c", command, *((shell, *args) if args else ())]
    pid = os.posix_spawn(shell, argv, env, file_actions=actions, setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=())
    return WatchedProcess(pid, reap=True)


def spawn_logged(
    command: str,
    *,
    cwd: str,
    env: dict[str, str],
    out_path: str,
    err_path: str,
    checked: dict[str, str],
    user_env: dict[str, str],
) -> WatchedProcess:
    """`command` in a shell in `cwd`, its output appended to these logs (a recovery script, an
    action's command). `checked`: fields that must hold no NUL byte, named for the error;
    OSError or ValueError when it cannot start."""
    if bad := unstartable_input({**checked, "working directory": cwd}, user_env):
        raise bad
    if gone := missing_directory(cwd):
        raise gone
    with log_files(out_path, err_path) as (out, err):
        return spawn_shell(shell_prelude(cwd) + command, env=env, stdout=out, stderr=err)


def group_leader(pids: list[int]) -> int | None:
    """The pid that leads its own process group: the job's shell, not what it started."""
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                return pid
        except ProcessLookupError:
            continue
    return None


class Watched(Protocol):
    """A started job shell as the executor watches it (WatchedProcess, ShepherdedProcess)."""

    pid: int
    returncode: int | None
    cpu_seconds: float | None
    ended_at: float | None  # when its end was seen where it was reaped; None: when we heard of it

    async def wait(self) -> int | None: ...


class WatchedProcess:
    """A process watched through a pidfd. Our own child is reaped (`reap`), which also tells
    the CPU time it and the descendants it waited for used; a shell an earlier daemon started
    says how it ended through `exit_status` (from the exit log: None if it left nothing)."""

    def __init__(self, pid: int, exit_status: Callable[[], int | None] | None = None, reap: bool = False):
        self.pid = pid
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None  # of it and the descendants it waited for, once reaped
        self.ended_at: float | None = None
        if reap:
            self._exit_status: Callable[[], int | None] = self._reap
        else:
            assert exit_status is not None, "a process that is not reaped says how it ended through exit_status"
            self._exit_status = exit_status
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        try:
            self._fd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = None
            self._ended()
            return
        self._loop.add_reader(self._fd, self._ended)

    def _ended(self) -> None:
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        # What it left running in its group goes with it (before reaping: the pid is still ours).
        signal_group(self.pid, signal.SIGKILL)
        self._settle(time.monotonic() + _RECORD_WAIT)

    def _settle(self, until: float) -> None:
        # A shell a shepherd started is recorded by it, then reaped: while it is still a zombie
        # with no status in the log, its record is on its way. Looked at before the log is read:
        # one reaped since has its line there.
        unreaped = self._exit_status != self._reap and is_zombie(self.pid)
        self.returncode = self._exit_status()
        if self.returncode is None and unreaped and time.monotonic() < until:
            self._loop.call_later(0.005, self._settle, until)
            return
        if not self._done.done():
            self._done.set_result(None)

    async def wait(self) -> int | None:
        await asyncio.shield(self._done)
        return self.returncode

    def _reap(self) -> int:
        # Not ru_maxrss: a child of posix_spawn (vfork) starts with its parent's resident set,
        # so its high-water mark is the daemon's, not the job's.
        _, status, ru = os.wait4(self.pid, 0)
        self.cpu_seconds = ru.ru_utime + ru.ru_stime
        return os.waitstatus_to_exitcode(status)


def signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


_RECORD_WAIT = 10.0  # seconds an ended shell may stay unreaped by the shepherd recording it
_TICKS = os.sysconf("SC_CLK_TCK")
_LATE_MARGIN = 2 * _TICKS  # a child this young (ticks) when TERM was sent may have missed it
_RECHECK = 0.05  # seconds between looks for a child that missed TERM


def _boot_ticks() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _TICKS)


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _young_children(pid: int, ticks: int) -> dict[int, str]:
    """Children of `pid` started at `ticks` since boot or later, alive now, with their names."""
    young = {}
    for child in children_of(pid):
        try:
            with open(f"/proc/{child}/stat") as f:
                name, rest = f.read()[:-1].split(" (", 1)[1].rsplit(") ", 1)
            if int(rest.split()[19]) >= ticks:
                young[child] = name
        except (OSError, ValueError, IndexError):
            continue
    return young


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


async def stop_group(proc: Watched, grace: float, sig: int = signal.SIGTERM) -> None:
    """TERM (or `sig`) the process group, then KILL it if it has not exited after `grace` seconds.

    A shell that catches TERM (a job's own trap, or an older daemon's recording shell) runs its
    trap only once its foreground command ends; a command it forked just before or after the
    TERM (between fork and exec it still has the shell's handler, which drops the signal) never
    ends, and the job would be KILLed and recorded 137. So while the shell lives, its young
    children get the TERM again: once after they exec'd, and as long as they are still the shell
    (not yet exec'd, or a subshell whose handlers are being reset). So does the shell itself
    once it has exec'd another program (`trap "exec ..." TERM`).
    """
    since = _boot_ticks() - _LATE_MARGIN
    shell = _name(proc.pid)
    signal_group(proc.pid, sig)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    resent_as: dict[int, str] = {}  # child: its name when it last got TERM from here
    while True:
        try:
            await asyncio.wait_for(proc.wait(), max(0.0, min(_RECHECK, deadline - loop.time())))
            break
        except TimeoutError:
            pass
        if loop.time() >= deadline:
            signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
            break
        # The shell itself may have exec'd another program from a TERM trap: that one never saw it.
        now = _name(proc.pid)
        if now and now != shell and resent_as.get(proc.pid) != now:
            resent_as[proc.pid] = now
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, sig)
        for child, name in _young_children(proc.pid, since).items():
            if name == shell or resent_as.get(child) != name:
                resent_as[child] = name
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(child, sig)
    # The leader is gone; make sure nothing it left in its group survives.
    signal_group(proc.pid, signal.SIGKILL)


def _processes_of(api_url: str, marker: bytes) -> Iterator[tuple[int, dict[bytes, bytes]]]:
    """Our live processes whose environment holds `marker` and names the daemon at `api_url`
    (other daemons on the host number their jobs alike), with that environment."""
    url = api_url.encode()
    me, mine = os.getuid(), str(os.getpid())  # never ourselves: a daemon started from a job carries its marks
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == mine:
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != me:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if marker not in raw:
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        if env.get(b"TORC_API_URL") == url:
            yield int(entry), env


def find_attempt_processes(
    keys: set[tuple[int, int, int]], api_url: str, recovery: bool = False
) -> dict[tuple[int, int, int], list[int]]:
    """Map (job_id, run_id, attempt_id) to live pids whose environment carries that attempt of
    the daemon at `api_url`.

    With `recovery`, only recovery-script processes (they carry TORC_RETURN_CODE) count;
    otherwise only the job's own.
    """
    found: dict[tuple[int, int, int], list[int]] = {}
    if not keys:
        return found
    for pid, env in _processes_of(api_url, b"TORC_JOB_ID="):
        if (b"TORC_RETURN_CODE" in env) != recovery:
            continue
        try:
            key = (int(env[b"TORC_JOB_ID"]), int(env.get(b"TORC_RUN_ID", b"1")), int(env[b"TORC_ATTEMPT_ID"]))
        except (KeyError, ValueError):
            continue
        if key in keys:
            found.setdefault(key, []).append(pid)
    return found


def find_action_processes(api_url: str) -> list[int]:
    """Live processes of actions the daemon at `api_url` started (they carry TORC_ACTION_ID)."""
    return [pid for pid, _ in _processes_of(api_url, b"TORC_ACTION_ID=")]


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


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, D, Z, ...), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def is_zombie(pid: int) -> bool:
    return _state(pid) == "Z"


def is_alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")
