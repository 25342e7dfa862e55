"""LocalExecutor: runs claimed jobs as `bash -c COMMAND` in their own process groups.

The daemon opens each job's log files (relative to a directory it checked) and hands them to
the shell. With an exit log, a shell around the job's own appends the job's exit status there
as it ends, so a daemon restarted after a crash can adopt jobs that kept running and learn how
they ended.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

import structlog

from torcd.core.attempts import Exit, Runnable
from torcd.core.exits import UNKNOWN_EXIT, signal_return_code
from torcd.core.resources import format_bytes, format_duration, kernel_oom
from torcd.core.srun import srun_words, step_name
from torcd.services.exit_log import ExitLog
from torcd.services.job_logs import remove_logs
from torcd.services.log_files import log_files
from torcd.services.monitor import Monitor, Sample, Usage
from torcd.services.processes import (
    LAUNCH_FAILED,
    Watched,
    WatchedProcess,
    find_attempt_processes,
    group_leader,
    job_vars,
    kill_pids,
    missing_directory,
    shell_prelude,
    signal_group,
    spawn_shell,
    start_failure,
    stop_group,
    unmarked,
    unstartable_input,
)
from torcd.services.shepherd_link import ShepherdedProcess, ShepherdLink, ShepherdLost, Withdrawn
from torcd.services.step_accounting import StepAccounting

log = structlog.get_logger("torcd.executor")


def timeout_grace(runtime: float) -> float:
    """Seconds between TERM and KILL for a job past its runtime: 5 % of it, within 1 to 10 s."""
    return min(10.0, max(1.0, runtime * 0.05))


def stopped_for_runtime(stopped_at: float | None, ended_at: float | None) -> bool:
    """Whether a job was stopped for its runtime: not if it ended by itself before (its end told
    after the stop was sent; None: when is not known)."""
    return stopped_at is not None and (ended_at is None or ended_at >= stopped_at)


UNKNOWN_EXIT_MESSAGE = (
    "ended while the daemon was not watching, without recording its exit status (its shell was killed by SIGKILL)"
)


def missing_outputs(job: Runnable) -> list[str]:
    """The declared outputs a job that exited 0 did not write (paths relative to its directory)."""
    return [p for p in job.outputs or () if not os.path.exists(os.path.join(job.cwd, p))]


def as_step(job: Runnable) -> str:
    """The job's command as an srun step of this worker's allocation, on its node."""
    slurm_job_id, node = os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURMD_NODENAME")
    if not slurm_job_id or not node:
        raise ValueError(
            "the workflow runs jobs as srun steps (execution_config.mode: slurm), and this worker is not in a "
            "Slurm allocation (no SLURM_JOB_ID or SLURMD_NODENAME)"
        )
    assert job.srun is not None
    words = srun_words(job, job.srun, slurm_job_id, node, in_step="SLURM_STEP_ID" in os.environ)
    return f"exec {shlex.join(words)} bash -c {shlex.quote(job.command)}"


class AheadRoom(NamedTuple):
    """How many more jobs may be sent ahead, and the most each may hold."""

    more: int
    cpus: int
    memory: int

    def admits(self, job: Runnable) -> bool:
        """Devices would wait with it, and a labelled job is claimed only to start now."""
        return (
            self.more > 0
            and not job.num_gpus
            and job.label is None
            and job.num_cpus <= self.cpus
            and (job.memory or 0) <= self.memory
        )

    def taken(self) -> AheadRoom:
        return self._replace(more=self.more - 1)


class LocalExecutor:
    def __init__(
        self,
        api_url: str,
        on_exit: Callable[[Exit], None],
        exit_log: ExitLog | None = None,
        gpus: list[str] | None = None,
    ):
        self.api_url = api_url
        # The devices to hand out, each to one running job at a time; None: this executor does
        # not assign GPUs (jobs see what the process that started it sees).
        self.gpus_free: list[str] | None = list(gpus) if gpus else None
        self.on_exit = on_exit
        self.exit_log = exit_log
        # With an exit log, jobs are started, recorded and reaped by a shepherd (a daemon's jobs
        # outlive it); without (a worker in an allocation), by this process.
        self.shepherd = ShepherdLink(exit_log.path) if exit_log is not None else None
        self.procs: dict[int, tuple[Runnable, Watched]] = {}
        # Jobs asked of the shepherd, not yet answered: each with what is told of its answer.
        self._launching: dict[int, tuple[Runnable, asyncio.Future[None]]] = {}
        self._ahead: dict[int, tuple[Runnable, int]] = {}  # sent ahead, not started yet: job -> (it, request)
        self.cpus_in_use = 0  # of the jobs in procs, kept as they come and go
        self.memory_in_use = 0  # bytes: the memory limits of the jobs in procs
        self.monitor = Monitor(self._over_memory)
        self._oom: dict[int, Sample] = {}  # jobs killed for going over their memory: what was seen
        self._tasks: set[asyncio.Task] = set()
        self._base_env = unmarked(dict(os.environ))  # every job's, under its own variables
        self._stopping: set[int] = set()  # jobs whose exits stop_all reports itself
        self._deadlines: dict[int, asyncio.TimerHandle] = {}  # jobs with a runtime: when they are stopped
        self._timed_out: dict[int, float] = {}  # job -> when it was stopped for its runtime
        self._held: dict[int, list[str]] = {}  # job -> the devices it holds until it ends
        self.steps = StepAccounting()  # what srun steps used, from sacct

    def prepare(self) -> None:
        """Have the shepherd ready for the first job (OSError if it cannot start: each launch
        then tries again, and says why its job could not start)."""
        if self.shepherd is not None:
            self.shepherd.open()

    def start(self, job: Runnable) -> int | None:
        """Start a job in this process (no exit log); return its pid, or None if it could not
        start (its exit is reported)."""
        assert self.shepherd is None, "with an exit log, jobs are launched through the shepherd"
        env = {**self._base_env, **self._own_env(job)}
        try:
            self._check(job)
            command = as_step(job) if job.srun is not None else job.command
            with log_files(job.stdout_path, job.stderr_path) as (out, err):
                proc = spawn_shell(shell_prelude(job.cwd) + command, env=env, stdout=out, stderr=err)
        except (OSError, ValueError) as e:  # this job cannot start; the others must not notice
            self._give_back_gpus(job)
            self._launch_failed(job, e)
            return None
        self._reserve(job)
        self._watch(job, proc)
        return proc.pid

    def launch(
        self,
        job: Runnable,
        started: Callable[[int | None, float], None],
        withdrawn: Callable[[], None] | None = None,
    ) -> None:
        """Start a job; `started` hears its pid and when it started, or None if it could not
        start (its exit is reported). Through the shepherd the pid comes later, and the job holds
        its CPUs, memory and devices from now on; without one, at once.

        With `withdrawn`, the job is sent ahead (see `ahead_room`): it holds nothing until it
        starts in the place of a job that ends, or is told to `go`; `withdrawn` hears that it was
        taken back, or that the shepherd died before starting it."""
        if self.shepherd is None:
            at = time.time()
            started(self.start(job), at)
            return
        shepherd, key, env = self.shepherd, (job.job_id, job.run_id, job.attempt_id), self._own_env(job)
        sent_at = time.time()  # the start of one the shepherd did not time (it died, or refused it)
        env["PWD"] = job.cwd  # the directory as written (through its symlinks), as `cd` would set it

        def reply(pid: int | None, error: OSError | None, at: float | None) -> None:
            self._launching.pop(job.job_id)[1].set_result(None)
            uncounted = self._ahead.pop(job.job_id, None) is not None  # sent ahead, never told to go
            lost = pid is None and isinstance(error, ShepherdLost)
            found = self._started_before_loss(job) if lost else None
            logged = self._exit_status(key) if lost and found is None else None  # ran, and ended meanwhile
            if withdrawn is not None and (isinstance(error, Withdrawn) or (lost and found is None and logged is None)):
                # it never started: first in line again
                if not uncounted:
                    self._release(job)
                self._give_back_gpus(job)
                withdrawn()
                return
            if uncounted:
                self._reserve(job)  # from its start, told before the end of the job whose place it took
            if pid is None:
                if found is not None:
                    pid = found  # it did start: watched as an adopted shell
                    self._watch(job, WatchedProcess(pid, lambda: self._exit_status(key)))
                    started(pid, sent_at if withdrawn is None else time.time())
                    return
                self._release(job)
                self._give_back_gpus(job)
                if logged is not None:  # as the exit log has it, its start unknown
                    self.on_exit(Exit(job.job_id, job.run_id, job.attempt_id, logged, time.time()))
                else:
                    self._launch_failed(job, error or OSError("could not start"))
                started(None, sent_at)
                return
            assert at is not None  # a start the shepherd made, timed by it
            self._watch(job, shepherd.process(pid, lambda: self._exit_status(key)))
            started(pid, at)

        # Held from now on (sent ahead: from its start): a request that fails as it is sent is
        # answered (and given back) at once.
        if withdrawn is None:
            self._reserve(job)
        else:
            self._ahead[job.job_id] = (job, 0)  # its request's number once sent
        self._launching[job.job_id] = (job, asyncio.get_running_loop().create_future())
        size = (job.num_cpus, job.memory or 0)
        try:
            self._check(job)
            with log_files(job.stdout_path, job.stderr_path) as (out, err):
                seq = shepherd.spawn(
                    key, job.command, job.cwd, self._base_env, env, out, err, reply, size, withdrawn is not None
                )
            if job.job_id in self._ahead:  # not answered already
                self._ahead[job.job_id] = (job, seq)
        except (OSError, ValueError) as e:  # refused before it was sent
            self._launching.pop(job.job_id)[1].set_result(None)
            if self._ahead.pop(job.job_id, None) is None:
                self._release(job)
            self._give_back_gpus(job)
            self._launch_failed(job, e)
            started(None, sent_at)

    def ahead_room(self, most: int = 8) -> AheadRoom:
        """What may be sent ahead now: two jobs per running job, `most` in all, each holding no
        more than the smallest of them, so that whichever ends first frees enough for the first
        (it starts then, as it would have from the queue; the next, at the next end). Nothing
        while a running job is not the shepherd's (adopted, or a dead one's): its end is no place."""
        if self.shepherd is None:
            return AheadRoom(0, 0, 0)
        cpus = memory = 1 << 62
        places = 0
        for held, proc in self.procs.values():
            if not self.shepherd.holds(proc):
                return AheadRoom(0, 0, 0)
            cpus, memory, places = min(cpus, held.num_cpus), min(memory, held.memory or 0), places + 1
        for held, _ in self._launching.values():
            if held.job_id not in self._ahead:
                cpus, memory, places = min(cpus, held.num_cpus), min(memory, held.memory or 0), places + 1
        return AheadRoom(max(0, min(2 * places, most) - len(self._ahead)), cpus, memory)

    def sent_ahead(self, workflow_id: int | None = None) -> list[Runnable]:
        """Jobs sent ahead and not started yet (of one workflow), in the order they were sent."""
        return [job for job, _ in self._ahead.values() if workflow_id in (None, job.workflow_id)]

    def go(self, job: Runnable) -> None:
        """Start a job sent ahead now, in what is free: it holds its resources from here on."""
        if (sent := self._ahead.pop(job.job_id, None)) is None:
            return  # answered meanwhile (the shepherd lost)
        _, seq = sent
        self._reserve(job)
        assert self.shepherd is not None
        self.shepherd.go(seq)

    def withdraw(self, job_ids: list[int]) -> None:
        """Take back jobs sent ahead that have not started (each is answered as usual)."""
        for job_id in job_ids:
            if job_id in self._ahead and self.shepherd is not None:
                self.shepherd.withdraw(self._ahead[job_id][1])

    def _own_env(self, job: Runnable) -> dict[str, str]:
        """The job's variables over the daemon's environment, with its own GPUs (taken from the
        free ones) where they are assigned."""
        env = job_vars(
            workflow_id=job.workflow_id,
            job_id=job.job_id,
            name=job.name,
            run_id=job.run_id,
            attempt_id=job.attempt_id,
            api_url=self.api_url,
            output_dir=job.output_dir,
            extra=job.env,
        )
        if self.gpus_free is not None:  # exactly its own devices, none for a job that asked for none
            job.gpus = self.gpus_free[: job.num_gpus]
            del self.gpus_free[: job.num_gpus]
            self._held[job.job_id] = job.gpus
            env["CUDA_VISIBLE_DEVICES"] = env["TORC_GPUS"] = ",".join(job.gpus)
        return env

    @staticmethod
    def _check(job: Runnable) -> None:
        if bad := unstartable_input(
            {"command": job.command, "output directory": job.output_dir, "working directory": job.cwd}, job.env
        ):
            raise bad

    def _exit_status(self, key: tuple[int, int, int]) -> int | None:
        assert self.exit_log is not None
        return self.exit_log.status(key)

    def _started_before_loss(self, job: Runnable) -> int | None:
        found = find_attempt_processes({(job.job_id, job.run_id, job.attempt_id)}, self.api_url)
        return group_leader(next(iter(found.values()), []))

    def _launch_failed(self, job: Runnable, e: OSError | ValueError) -> None:
        message = start_failure(e)
        log.warning(
            "job_start_failed", workflow_id=job.workflow_id, job_id=job.job_id, attempt_id=job.attempt_id, error=message
        )
        self.on_exit(Exit(job.job_id, job.run_id, job.attempt_id, LAUNCH_FAILED, time.time(), message))

    def _launch_failure(self, job: Runnable) -> OSError | None:
        """After a 126: did the shell fail to enter its directory? Then that is why."""
        return missing_directory(job.cwd)

    def adopt(self, job: Runnable, pid: int) -> None:
        """Watch a job's shell that an earlier daemon started (its status comes from the exit
        log, so only an executor with one adopts); its exit is reported as usual."""
        assert self.exit_log is not None
        exit_log, key = self.exit_log, (job.job_id, job.run_id, job.attempt_id)
        if self.gpus_free is not None and job.gpus:  # its devices stay its own
            self.gpus_free = [g for g in self.gpus_free if g not in job.gpus]
            self._held[job.job_id] = job.gpus
        self._reserve(job)
        self._watch(job, WatchedProcess(pid, lambda: exit_log.status(key)))

    def _give_back_gpus(self, job: Runnable) -> None:
        # job.gpus stays as it was: the start that records them may not be written yet.
        held = self._held.pop(job.job_id, None)
        if self.gpus_free is not None and held:
            self.gpus_free.extend(held)

    def _reserve(self, job: Runnable) -> None:
        self.cpus_in_use += job.num_cpus
        self.memory_in_use += job.memory or 0

    def _release(self, job: Runnable) -> None:
        self.cpus_in_use -= job.num_cpus
        self.memory_in_use -= job.memory or 0

    def _watch(self, job: Runnable, proc: Watched) -> None:
        """Watch a started job (its resources already reserved) until it ends."""
        self.procs[job.job_id] = (job, proc)
        if job.sample_interval is not None and job.srun is None:  # a step's processes are slurmstepd's
            limit = job.memory if job.enforce_memory else None  # limit_resources: false samples only
            self.monitor.watch(job.job_id, proc.pid, limit, job.sample_interval)
        if job.runtime is not None:  # an adopted job keeps the deadline of the attempt's start
            left = job.runtime - (time.time() - job.start_time if job.start_time else 0.0)
            self._deadlines[job.job_id] = asyncio.get_running_loop().call_later(
                max(0.0, left), self._time_out, job, proc
            )
        if isinstance(proc, ShepherdedProcess):
            proc.on_end = lambda: self._shepherded_ended(job, proc)
        else:
            self._wait_for(job, proc)

    def _wait_for(self, job: Runnable, proc: Watched) -> None:
        task = asyncio.create_task(self._wait(job, proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shepherded_ended(self, job: Runnable, proc: ShepherdedProcess) -> None:
        """A shell the shepherd reaped: most exits are reported here and now, without a task
        per job; those that need something awaited (a limit's leftovers, outputs to look for,
        logs to delete, Slurm's figures, a shutdown) go through `_wait`."""
        returncode = proc.returncode
        if (
            returncode is None
            or returncode == LAUNCH_FAILED
            or (returncode == 0 and (job.outputs or job.delete_stdio))
            or job.srun is not None
            or job.job_id in self._stopping
            or job.job_id in self._oom
            or job.job_id in self._timed_out
        ):
            self._wait_for(job, proc)
            return
        seen = self._ended(job)
        cpu = proc.cpu_seconds if proc.cpu_seconds is not None else seen.cpu_seconds
        end = proc.ended_at or time.time()
        self.on_exit(self._ended_by_itself(job, signal_return_code(returncode), end, seen.peak_memory, cpu))

    def _time_out(self, job: Runnable, proc: Watched) -> None:
        """Past its runtime: TERM, a grace that grows with the runtime (1 to 10 s), then KILL; a
        job that says it does not support termination is KILLed at once."""
        if self.procs.get(job.job_id, (None, None))[1] is not proc:
            return
        self._timed_out[job.job_id] = time.time()
        log.info(
            "job_timed_out",
            workflow_id=job.workflow_id,
            job_id=job.job_id,
            attempt_id=job.attempt_id,
            runtime=job.runtime,
        )
        if not job.supports_termination:
            signal_group(proc.pid, signal.SIGKILL)
            return
        grace = job.term_grace if job.term_grace is not None else timeout_grace(job.runtime or 0.0)
        task = asyncio.create_task(stop_group(proc, grace, job.term_signal))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _over_memory(self, job_id: int, sample: Sample) -> None:
        """Past its memory limit: KILL at once, as the kernel's OOM killer would (a TERM handler
        could allocate more), the whole tree the sample found, whatever left the group too."""
        job, proc = self.procs.get(job_id, (None, None))
        if job is None or proc is None or proc.pid != sample.procs[0].pid or proc.returncode is not None:
            return  # another attempt's process, or one that has ended (its exit is on its way)
        self._oom[job_id] = sample
        log.info(
            "job_over_memory",
            workflow_id=job.workflow_id,
            job_id=job_id,
            attempt_id=job.attempt_id,
            used=sample.memory,
            limit=job.memory,
        )
        signal_group(proc.pid, signal.SIGKILL)
        task = asyncio.create_task(asyncio.to_thread(sample.kill))  # those that left the group
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _step_figures(self, job: Runnable) -> tuple[int | None, float | None] | None:
        """For a job run as an srun step, Slurm's figures (what srun itself used says nothing).
        Until they are in, a few seconds at most, the job still counts as running (busy, its
        CPUs held): a worker told to stop meanwhile reports it with the rest, never forgets it."""
        if job.srun is None:
            return None
        if job.job_id in self._stopping:
            return None, None
        used = await self.steps.usage(os.environ.get("SLURM_JOB_ID", ""), step_name(job))
        return (used.peak_memory, used.cpu_seconds) if used else (None, None)

    def _ended(self, job: Runnable) -> Usage:
        """Free what an ended job held; what its samples saw of it."""
        if self.procs.pop(job.job_id, None):
            self._release(job)
            self._give_back_gpus(job)
        deadline = self._deadlines.pop(job.job_id, None)
        if deadline is not None:
            deadline.cancel()
        return self.monitor.forget(job.job_id)

    async def _wait(self, job: Runnable, proc: Watched) -> None:
        returncode = await proc.wait()
        step = await self._step_figures(job)
        seen = self._ended(job)
        # Memory is known from samples only; CPU time exactly from reaping our own child, else
        # (an adopted job) from the last sample; a step's, from Slurm.
        peak = seen.peak_memory
        cpu = proc.cpu_seconds if proc.cpu_seconds is not None else seen.cpu_seconds
        if step is not None:
            peak, cpu = step
        oom = self._oom.pop(job.job_id, None)
        timed_out = stopped_for_runtime(self._timed_out.pop(job.job_id, None), proc.ended_at)
        if job.job_id in self._stopping:
            return  # stopped at shutdown; recorded by the caller
        end, done = proc.ended_at or time.time(), (job.job_id, job.run_id, job.attempt_id)
        if oom is not None or timed_out:  # over a limit: what left its group (setsid, a double fork) goes too
            await self._kill_escaped(done)
        if oom is not None:
            self.on_exit(
                Exit(
                    *done,
                    UNKNOWN_EXIT,
                    end,
                    f"killed: its processes used {format_bytes(oom.memory)}, "
                    f"over its memory limit of {format_bytes(job.memory or 0)}",
                    "oom",
                    peak,
                    cpu,
                )
            )
            return
        if timed_out:
            rc = UNKNOWN_EXIT if returncode is None else signal_return_code(returncode)
            self.on_exit(
                Exit(
                    *done,
                    rc,
                    end,
                    f"stopped after its runtime of {format_duration(job.runtime or 0.0)}",
                    "timeout",
                    peak,
                    cpu,
                )
            )
            return
        if returncode is None:  # an adopted shell that left no exit status
            self.on_exit(Exit(*done, UNKNOWN_EXIT, end, UNKNOWN_EXIT_MESSAGE, None, peak, cpu))
            return
        if returncode == LAUNCH_FAILED and (e := self._launch_failure(job)):
            self._launch_failed(job, e)
            return
        rc = signal_return_code(returncode)
        if rc == 0 and job.outputs and (missing := await asyncio.to_thread(missing_outputs, job)):
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            self.on_exit(
                Exit(
                    *done, 1, end, f"exited 0 but did not write its output files: {shown}", "missing_output", peak, cpu
                )
            )
            return
        if rc == 0 and job.delete_stdio and (problems := await asyncio.to_thread(remove_logs, *job.log_paths)):
            log.warning("job_logs_not_deleted", workflow_id=job.workflow_id, job_id=job.job_id, problems=problems)
        self.on_exit(self._ended_by_itself(job, rc, end, peak, cpu))

    @staticmethod
    def _ended_by_itself(job: Runnable, rc: int, end: float, peak: int | None, cpu: float | None) -> Exit:
        """The exit of a job no limit stopped: as it ended, or the kernel's OOM killer's."""
        done = (job.job_id, job.run_id, job.attempt_id)
        if kernel_oom(rc, peak, job.memory):
            message = (
                f"killed by SIGKILL after using {format_bytes(peak or 0)} of its "
                f"memory limit of {format_bytes(job.memory or 0)}: out of memory"
            )
            return Exit(*done, rc, end, message, "oom", peak, cpu)
        return Exit(*done, rc, end, peak_memory=peak, cpu_seconds=cpu)

    async def kill(self, job_ids: list[int], grace: float = 5.0) -> None:
        """Stop the process groups of these jobs, then whatever they started that left the group
        (setsid) but still carries their TORC_* variables; their exits are reported as usual."""
        self.withdraw(job_ids)
        await self._launched(job_ids)
        running = [self.procs[j] for j in job_ids if j in self.procs]
        await asyncio.gather(*(stop_group(p, grace) for _, p in running))
        await self._kill_escaped(*((job.job_id, job.run_id, job.attempt_id) for job, _ in running))

    async def _launched(self, job_ids: list[int]) -> None:
        """Until the shepherd has answered for these jobs (a few milliseconds)."""
        waits = [self._launching[j][1] for j in job_ids if j in self._launching]
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits))

    async def _kill_escaped(self, *keys: tuple[int, int, int]) -> None:
        """KILL what these attempts started that left their process group but still carries
        their TORC_* variables (one pass over /proc: for cancels and limits, not every exit)."""
        found = await asyncio.to_thread(find_attempt_processes, set(keys), self.api_url)
        await asyncio.to_thread(kill_pids, [pid for pids in found.values() for pid in pids])

    async def stop_all(self, grace: float) -> list[Exit]:
        """Stop every running job (shutdown) and return their exits for the caller to record."""
        self.withdraw(list(self._ahead))
        await self._launched(list(self._launching))
        running = list(self.procs.values())
        self._stopping.update(job.job_id for job, _ in running)
        self.monitor.stop()
        await asyncio.gather(*(stop_group(p, grace) for _, p in running))
        if self.shepherd is not None:
            self.shepherd.close()  # it ends once it has reaped them
        now = time.time()
        return [
            Exit(
                job.job_id,
                job.run_id,
                job.attempt_id,
                signal_return_code(proc.returncode or -15),
                now,
                "daemon shut down",
            )
            for job, proc in running
        ]
