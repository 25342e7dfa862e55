"""LocalExecutor in-process, with real short processes: what each way of ending is reported as
(return code, cause, message), limits enforced, GPUs handed out and given back."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from inproc import eventually, make_executor
from inproc import make_runnable as job

from torcd.services.executor import UNKNOWN_EXIT, AheadRoom, stopped_for_runtime
from torcd.services.exit_log import ExitLog
from torcd.services.processes import LAUNCH_FAILED


class Exits(list):
    def one(self):
        (e,) = self
        return e


async def run_one(tmp_path, command: str, timeout: float = 5.0, executor_args=(), **fields):
    exits = Exits()
    ex = make_executor(exits.append, *executor_args)
    started: list[int | None] = []
    ex.launch(job(tmp_path, command, **fields), lambda pid, at: started.append(pid))
    await eventually(lambda: exits, timeout, what="the exit")
    return exits.one(), started[0], ex


@pytest.mark.parametrize(
    "command,rc",
    [
        ("true", 0),
        ("exit 3", 3),
        ("kill -TERM $$", 143),  # killed by signal S: 128 + S
        ("kill -KILL $$", 137),
        ("exec no-such-command-here", 127),
    ],
)
async def test_the_return_code_of_each_way_of_ending(tmp_path, command, rc):
    e, pid, _ = await run_one(tmp_path, command)
    assert (e.return_code, e.cause) == (rc, None) and pid is not None
    assert e.cpu_seconds is not None  # reaped by us: CPU time known exactly


async def test_the_job_sees_its_torc_variables_and_writes_its_logs(tmp_path):
    e, _, _ = await run_one(
        tmp_path, 'echo "$TORC_JOB_ID $TORC_ATTEMPT_ID $TORC_API_URL $MINE"; echo err >&2', env={"MINE": "mine"}
    )
    assert e.return_code == 0
    out = (tmp_path / "output" / f"j{e.job_id}.o").read_text().split()
    assert out[:2] == [str(e.job_id), "1"] and out[3] == "mine" and out[2].startswith("unix://")
    assert (tmp_path / "output" / f"j{e.job_id}.e").read_text() == "err\n"


async def test_a_missing_working_directory_is_a_launch_failure_with_the_reason(tmp_path):
    e, pid, _ = await run_one(tmp_path, "true", cwd=str(tmp_path / "gone"))
    assert e.return_code == LAUNCH_FAILED and "gone" in e.message


async def test_an_unopenable_log_is_reported_as_an_exit_not_raised(tmp_path):
    (tmp_path / "output").write_text("a file, not a directory")
    e, pid, ex = await run_one(tmp_path, "true")
    assert pid is None and e.return_code == LAUNCH_FAILED and e.message
    assert ex.cpus_in_use == 0 and not ex.procs


async def test_an_exit_0_without_its_declared_outputs_is_a_missing_output_failure(tmp_path):
    e, _, _ = await run_one(tmp_path, "touch made", outputs=["made", "not-made"])
    assert (e.return_code, e.cause) == (1, "missing_output") and "not-made" in e.message


async def test_a_job_past_its_runtime_is_stopped_as_a_timeout(tmp_path):
    e, _, _ = await run_one(tmp_path, "sleep 30", runtime=0.05)
    assert (e.return_code, e.cause) == (143, "timeout") and "runtime" in e.message


async def test_a_job_that_does_not_support_termination_is_killed_at_its_runtime(tmp_path):
    e, _, _ = await run_one(tmp_path, "trap '' TERM; sleep 30", runtime=0.05, supports_termination=False)
    assert (e.return_code, e.cause) == (137, "timeout")


async def test_a_job_over_its_memory_is_killed_as_oom_with_its_peak(tmp_path):
    e, _, _ = await run_one(tmp_path, "sleep 30", memory=1000, sample_interval=0.1)
    assert (e.return_code, e.cause) == (UNKNOWN_EXIT, "oom")
    assert e.peak_memory > 1000 and "over its memory limit" in e.message


async def test_cpus_and_memory_in_use_follow_jobs_as_they_come_and_go(tmp_path):
    exits = Exits()
    ex = make_executor(exits.append)
    ex.start(job(tmp_path, "sleep 30", num_cpus=3, memory=1 << 20))
    ex.start(job(tmp_path, "true", num_cpus=2))
    assert (ex.cpus_in_use, ex.memory_in_use) == (5, 1 << 20)
    await eventually(lambda: exits, what="the short job")
    assert (ex.cpus_in_use, ex.memory_in_use) == (3, 1 << 20)
    await ex.kill(list(ex.procs), grace=1.0)
    await eventually(lambda: len(exits) == 2, what="the killed job")
    assert (ex.cpus_in_use, ex.memory_in_use, exits[1].return_code) == (0, 0, 143)


async def test_gpus_are_handed_out_one_job_each_and_given_back(tmp_path):
    exits = Exits()
    ex = make_executor(exits.append, None, ["0", "1", "2"])
    long = job(tmp_path, "sleep 30", num_gpus=2)
    ex.start(long)
    assert long.gpus == ["0", "1"] and ex.gpus_free == ["2"]
    short = job(tmp_path, 'echo "$CUDA_VISIBLE_DEVICES"', num_gpus=1)
    ex.start(short)
    await eventually(lambda: exits, what="the short job")
    assert (tmp_path / "output" / f"j{short.job_id}.o").read_text() == "2\n"
    assert ex.gpus_free == ["2"]  # its device back as it ended; the others still held
    await ex.kill([long.job_id], grace=1.0)
    await eventually(lambda: len(exits) == 2, what="the killed job")
    assert sorted(ex.gpus_free) == ["0", "1", "2"]


async def test_stop_all_returns_the_exits_instead_of_reporting_them(tmp_path):
    exits = Exits()
    ex = make_executor(exits.append)
    ex.start(job(tmp_path, "sleep 30"))
    (e,) = await ex.stop_all(grace=1.0)
    assert (e.return_code, e.message) == (143, "daemon shut down")
    assert exits == []


async def test_with_an_exit_log_the_status_is_recorded_for_a_later_daemon(tmp_path):
    log = ExitLog(str(tmp_path / "exits.log"))
    e, _, _ = await run_one(tmp_path, "exit 7", executor_args=(log,))
    assert e.return_code == 7
    assert log.statuses()[(e.job_id, 1, 1)] == 7


async def test_an_adopted_process_reports_its_status_from_the_exit_log(tmp_path):
    log = ExitLog(str(tmp_path / "exits.log"))
    exits = Exits()
    ex = make_executor(exits.append, log)
    j = job(tmp_path, "ignored")
    proc = await asyncio.create_subprocess_exec("true")  # some process that ends now
    (tmp_path / "exits.log").write_text(f"{j.job_id} 1 1 9\n")
    ex.adopt(j, proc.pid)
    await proc.wait()
    await eventually(lambda: exits, what="the adopted job's exit")
    assert exits.one().return_code == 9


async def test_a_job_sent_ahead_holds_nothing_until_it_starts_in_the_place_of_one_that_ends(tmp_path):
    exits = Exits()
    ex = make_executor(exits.append, ExitLog(str(tmp_path / "exits.log")))
    first, ahead = job(tmp_path, "sleep 0.3", num_cpus=2), job(tmp_path, "echo $TORC_JOB_ID", num_cpus=2)
    started: dict[int, float] = {}
    ex.launch(first, lambda pid, at: started.setdefault(first.job_id, at))
    await eventually(lambda: started, what="the first start")
    assert ex.ahead_room().admits(ahead) and not ex.ahead_room().admits(job(tmp_path, "true", num_cpus=3))
    assert not ex.ahead_room().admits(job(tmp_path, "true", num_gpus=1))  # its devices would wait with it
    withdrawn: list[int] = []
    ex.launch(ahead, lambda pid, at: started.setdefault(ahead.job_id, at), lambda: withdrawn.append(1))
    assert ex.cpus_in_use == 2 and ex.ahead_room().more == 1  # two for each running job
    await eventually(lambda: len(exits) == 2, what="both exits")
    assert [e.job_id for e in exits] == [first.job_id, ahead.job_id] and not withdrawn
    assert started[ahead.job_id] >= exits[0].end_time and ex.cpus_in_use == 0
    assert (tmp_path / "output" / f"j{ahead.job_id}.o").read_text() == f"{ahead.job_id}\n"


async def test_what_was_sent_ahead_is_withdrawn_by_a_kill_and_by_a_stop(tmp_path):
    ex = make_executor(Exits().append, ExitLog(str(tmp_path / "exits.log")))
    running, started = job(tmp_path, "sleep 30"), []
    ex.launch(running, lambda pid, at: started.append(pid))
    await eventually(lambda: started, what="the start")
    withdrawn: list[str] = []
    for which in ("kill", "stop"):
        ahead = job(tmp_path, f"touch {which}-ran")
        ex.launch(ahead, lambda pid, at: started.append(pid), lambda: withdrawn.append(which))
        if which == "kill":
            await ex.kill([ahead.job_id])
        else:
            (e,) = await asyncio.wait_for(ex.stop_all(grace=1.0), 20)
            assert e.job_id == running.job_id
    assert withdrawn == ["kill", "stop"] and len(started) == 1 and ex.cpus_in_use == 0
    assert not list(tmp_path.glob("*-ran"))


async def test_a_job_sent_ahead_told_to_go_starts_at_once_and_holds_its_cpus(tmp_path):
    ex = make_executor(Exits().append, ExitLog(str(tmp_path / "exits.log")))
    long, ahead, started = job(tmp_path, "sleep 30"), job(tmp_path, "true"), {}
    ex.launch(long, lambda pid, at: started.setdefault(long.job_id, pid))
    await eventually(lambda: started, what="the start")
    ex.launch(ahead, lambda pid, at: started.setdefault(ahead.job_id, pid), lambda: None)
    assert ex.cpus_in_use == 1 and ex.sent_ahead() == [ahead]
    ex.go(ahead)
    assert ex.cpus_in_use == 2 and not ex.sent_ahead()
    await eventually(lambda: ahead.job_id in started, what="the start of the one told to go")
    assert started[ahead.job_id] is not None
    await ex.stop_all(grace=1.0)


async def test_nothing_is_sent_ahead_of_jobs_a_dead_shepherd_started(tmp_path):
    ex = make_executor(Exits().append, ExitLog(str(tmp_path / "exits.log")))
    running, started = job(tmp_path, "sleep 30"), []
    ex.launch(running, lambda pid, at: started.append(pid))
    await eventually(lambda: started, what="the start")
    assert ex.ahead_room().admits(job(tmp_path, "true"))
    assert ex.shepherd is not None and ex.shepherd._proc is not None
    os.kill(ex.shepherd._proc.pid, signal.SIGKILL)
    await eventually(lambda: ex.shepherd._sock is None, what="the shepherd's loss seen")
    assert not ex.ahead_room().admits(job(tmp_path, "true"))  # its end would be no place in the next shepherd
    await ex.stop_all(grace=1.0)


@pytest.mark.parametrize(
    "room,fields,admitted",
    [
        ((1, 2, 100), {"num_cpus": 2, "memory": 100}, True),
        ((0, 2, 100), {}, False),  # two sent per running job, no more
        ((1, 1, 100), {"num_cpus": 2}, False),  # more than the smallest running job holds
        ((1, 2, 100), {"memory": 101}, False),
        ((1, 2, 100), {"num_gpus": 1}, False),  # its devices would wait with it
        ((1, 2, 100), {"label": "gpu-node"}, False),  # claimed only to start now
    ],
)
def test_what_may_be_sent_ahead(tmp_path, room, fields, admitted):
    assert AheadRoom(*room).admits(job(tmp_path, "true", **fields)) is admitted
    assert AheadRoom(*room).taken().more == room[0] - 1


@pytest.mark.parametrize(
    "stopped_at,ended_at,timed_out",
    [
        (None, 10.0, False),  # never stopped
        (10.0, 10.5, True),  # ended once stopped
        (10.0, 10.0, True),
        (10.0, 9.999, False),  # ended by itself, its end told after the stop was sent
        (10.0, None, True),  # when it ended is not known (an adopted shell)
    ],
)
def test_a_job_is_recorded_as_timed_out_only_if_it_ended_once_stopped(stopped_at, ended_at, timed_out):
    assert stopped_for_runtime(stopped_at, ended_at) is timed_out


async def test_a_job_sent_ahead_refused_before_it_is_sent_gives_back_nothing_it_never_held(tmp_path):
    exits = Exits()
    ex = make_executor(exits.append, ExitLog(str(tmp_path / "exits.log")))
    running, started = job(tmp_path, "sleep 30"), []
    ex.launch(running, lambda pid, at: started.append(pid))
    await eventually(lambda: started, what="the start")
    ex.launch(job(tmp_path, "echo \0"), lambda pid, at: started.append(pid), lambda: None)
    assert exits.one().return_code == LAUNCH_FAILED and "NUL" in exits.one().message
    assert started == [started[0], None] and ex.cpus_in_use == 1 and not ex.sent_ahead()
    await ex.stop_all(grace=1.0)


@pytest.mark.parametrize("ahead", [False, True])
async def test_a_job_whose_shepherd_died_after_recording_its_end_is_recorded_as_the_exit_log_has_it(tmp_path, ahead):
    exits = Exits()
    log = ExitLog(str(tmp_path / "exits.log"))
    ex = make_executor(exits.append, log)
    ex.prepare()
    assert ex.shepherd is not None and ex.shepherd._proc is not None
    shepherd = ex.shepherd._proc.pid
    os.kill(shepherd, signal.SIGSTOP)  # the request waits in the socket: what the shepherd did is written below
    j, started, withdrawn = job(tmp_path, "true"), [], []
    try:
        if ahead:
            ex.launch(job(tmp_path, "sleep 30"), lambda pid, at: started.append(pid))  # a place, never started
        ex.launch(j, lambda pid, at: started.append(pid), (lambda: withdrawn.append(1)) if ahead else None)
        # It started j, which ended 3 and was recorded; then it was killed.
        fd = os.open(log.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{j.job_id} 1 1 3\n".encode())
        os.close(fd)
    finally:
        os.kill(shepherd, signal.SIGKILL)
    await eventually(lambda: any(e.job_id == j.job_id for e in exits), what="j's exit")
    (e,) = [e for e in exits if e.job_id == j.job_id]
    assert (e.return_code, e.cause, e.message) == (3, None, None) and not withdrawn
    assert None in started and ex.cpus_in_use == 0
