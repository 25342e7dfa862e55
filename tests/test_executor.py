"""torcctl.Executor against a real daemon: calls run as jobs, with handlers, limits and restarts."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import operator
import os
import threading
import time
from pathlib import Path

import pytest

from torcctl import Client, Executor, RemoteError


@pytest.fixture
def in_tmp(daemon):
    old = os.getcwd()
    os.chdir(daemon.tmp)
    yield daemon.tmp
    os.chdir(old)


def test_a_call_runs_as_a_job_and_its_result_comes_back(client, in_tmp):
    with Executor(client=client, keep_files=True) as ex:
        future = ex.submit(pow, 2, 100)
        assert future.result(timeout=60) == 2**100
        assert ex.submit(lambda s: s.upper(), "lambda").result(timeout=60) == "LAMBDA"
        scale = 3
        assert ex.submit(lambda x: x * scale, 5).result(timeout=60) == 15  # a closure travels by value
        jobs = client.jobs(ex.workflow_id)
    assert [j.status for j in jobs] == ["completed"] * 3
    assert [j.name for j in jobs] == ["call_1", "call_2", "call_3"]


def test_what_a_call_prints_is_in_its_job_log(client, in_tmp):
    with Executor(client=client) as ex:
        ex.submit(print, "hello from a job").result(timeout=60)
        job = client.jobs(ex.workflow_id)[0]
        assert client.logs(job.id) == "hello from a job\n"


def test_a_thousand_calls_in_one_map(client, in_tmp):
    with Executor(client=client) as ex:
        results = list(ex.map(operator.mul, range(1000), range(1000), timeout=600))
        counts = client.workflow(ex.workflow_id).counts
    assert results == [i * i for i in range(1000)]
    assert counts == {"completed": 1000}


def _boom(x: int) -> int:
    raise KeyError(f"no entry {x}")


def test_an_exception_is_raised_in_the_caller_with_the_remote_traceback(client, in_tmp):
    with Executor(client=client) as ex:
        future = ex.submit(_boom, 7)
        with pytest.raises(KeyError, match="no entry 7") as e:
            future.result(timeout=60)
        assert isinstance(e.value.__cause__, RemoteError)
        assert "Traceback" in e.value.__cause__.remote_traceback and "_boom" in e.value.__cause__.remote_traceback
        assert client.jobs(ex.workflow_id)[0].status == "failed"


def _flaky(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("first attempt fails")
    return "second attempt"


def test_a_failure_handler_retries_a_flaky_call(client, in_tmp):
    handler = [{"exit_codes": [1], "max_retries": 2}]
    with Executor(client=client, failure_handler=handler) as ex:
        assert ex.submit(_flaky, str(in_tmp / "marker")).result(timeout=60) == "second attempt"
        job = client.jobs(ex.workflow_id)[0]
        assert [a.return_code for a in client.attempts(job.id)] == [1, 0]


def _hold_memory(mib: int) -> int:
    block = bytearray(mib * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(3)
    return len(block) // 2**20


def test_an_oom_kill_is_retried_with_more_memory_by_a_causes_rule(client, in_tmp):
    handler = [{"causes": ["oom"], "memory_multiplier": 4, "max_retries": 2}]
    with Executor(client=client, resources={"memory": "100m"}, failure_handler=handler) as ex:
        assert ex.submit(_hold_memory, 200).result(timeout=120) == 200
        job = client.jobs(ex.workflow_id)[0]
        attempts = client.attempts(job.id)
    assert [a.cause for a in attempts] == ["oom", None]
    assert attempts[1].memory_limit == 4 * attempts[0].memory_limit


def _total(*values: int) -> int:
    return sum(values)


def test_futures_as_arguments_make_a_fan_in(client, in_tmp):
    with Executor(client=client, batch_delay=0.0) as ex:
        parts = [ex.submit(pow, i, 2) for i in range(5)]
        total = ex.submit(_total, *parts)
        later = ex.submit(operator.add, total, 1)  # a dependency sent in an earlier request
        assert later.result(timeout=60) == 31
        jobs = {j.name: j for j in client.jobs(ex.workflow_id)}
        fan_in, after = client.job(jobs["call_6"].id), client.job(jobs["call_7"].id)
    assert sorted(fan_in.depends_on) == sorted(jobs[f"call_{i}"].id for i in range(1, 6))
    assert after.depends_on == [jobs["call_6"].id]


def test_a_failed_argument_fails_the_call_that_needs_it(client, in_tmp):
    # one call at a time: the second is sent after the first failed, and is canceled on arrival
    with Executor(client=client, max_workers=1) as ex:
        bad = ex.submit(_boom, 1)
        after = ex.submit(operator.neg, bad)
        with pytest.raises(KeyError):
            bad.result(timeout=60)
        with pytest.raises((RemoteError, KeyError)):
            after.result(timeout=60)
        too_late = ex.submit(operator.neg, bad)  # the argument failed already: nothing is sent
        with pytest.raises(RemoteError, match="call_1"):
            too_late.result(timeout=1)


def _wait_for(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.05)
    return "released"


def _running(client, ex) -> bool:
    return ex.workflow_id is not None and client.jobs(ex.workflow_id)[0].status == "running"


def test_futures_resolve_across_a_daemon_crash_and_restart(client, daemon, in_tmp):
    gate = str(in_tmp / "gate")
    with Executor(client=client) as ex:
        future = ex.submit(_wait_for, gate)
        daemon.wait_for(lambda: _running(client, ex), what="the call to start")
        daemon.kill9()  # its jobs run on
        daemon.start()
        Path(gate).write_text("")
        assert future.result(timeout=60) == "released"


def test_a_call_its_daemon_stops_ends_with_an_error_saying_so(client, daemon, in_tmp):
    with Executor(client=client) as ex:
        future = ex.submit(_wait_for, str(in_tmp / "never"))
        daemon.wait_for(lambda: _running(client, ex), what="the call to start")
        daemon.stop()  # a graceful stop terminates the jobs it runs
        daemon.start()
        with pytest.raises(RemoteError, match="terminated: daemon shut down"):
            future.result(timeout=60)


def test_an_executor_inside_a_running_event_loop(client, in_tmp):
    async def main() -> list[int]:
        with Executor(client=client) as ex:
            futures = [asyncio.wrap_future(ex.submit(pow, 3, i)) for i in range(4)]
            return list(await asyncio.gather(*futures))

    assert asyncio.run(main()) == [1, 3, 9, 27]


def test_max_workers_bounds_the_calls_running_at_once(client, in_tmp):
    with Executor(client=client, max_workers=2) as ex:
        list(ex.map(time.sleep, [0.3] * 6, timeout=120))
        spans = [(a.start_time, a.end_time) for j in client.jobs(ex.workflow_id) for a in client.attempts(j.id)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2


def test_what_cannot_travel_is_refused_at_submit_and_nothing_is_sent(client, in_tmp):
    with Executor(client=client) as ex:
        with pytest.raises(TypeError, match="cannot send"):
            ex.submit(len, threading.Lock())
        with pytest.raises(ValueError, match="max_argument_bytes"):
            Executor.submit(ex, len, b"x" * (ex.max_argument_bytes + 1))
        with pytest.raises(TypeError, match="not callable"):
            ex.submit(42)  # type: ignore[arg-type]
        other = cf.Future()
        with pytest.raises(TypeError, match="this Executor"):
            ex.submit(len, other)
        assert ex.workflow_id is None  # nothing was sent
        assert client.workflows() == []


def test_a_result_too_large_is_an_error_naming_the_limit(client, in_tmp):
    with Executor(client=client, max_result_bytes=1000) as ex, pytest.raises(ValueError, match="max_result_bytes"):
        ex.submit(bytes, 5000).result(timeout=60)


def test_a_closed_executor_refuses_calls(client, in_tmp):
    ex = Executor(client=client)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(pow, 1, 1)


def test_shutdown_cancels_calls_not_yet_sent(client, in_tmp):
    ex = Executor(client=client, max_workers=1)
    first = ex.submit(time.sleep, 0.5)
    while not first.running():  # sent: shutdown no longer cancels it
        time.sleep(0.01)
    rest = [ex.submit(pow, 2, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() is None
    assert any(f.cancelled() for f in rest)


def test_two_executors_on_one_directory_keep_their_results_apart(client, in_tmp):
    shared = in_tmp / "shared"
    shared.mkdir()
    (shared / "thesis.tex").write_text("mine")
    with Executor(client=client, directory=shared) as a, Executor(client=client, directory=shared) as b:
        fa, fb = a.submit(str.upper, "alice"), b.submit(str.upper, "bob")
        assert (fa.result(timeout=60), fb.result(timeout=60)) == ("ALICE", "BOB")
        assert a.directory != b.directory and os.stat(a.directory).st_mode & 0o777 == 0o700
    assert (shared / "thesis.tex").read_text() == "mine"  # only the executors' own folders go
    assert sorted(p.name for p in shared.iterdir()) == ["thesis.tex"]


def test_call_files_that_are_not_the_users_own_are_never_unpickled(in_tmp):
    from torcctl.api.calls import read_own, read_result

    target = in_tmp / "elsewhere.out"
    target.write_bytes(b"x")
    (in_tmp / "call_1.out").symlink_to(target)
    ok, error = read_result(str(in_tmp), 1)
    assert not ok and "cannot read the result of call_1" in str(error)
    if os.getuid() == 0:  # as root, a file of another owner can be made
        planted = in_tmp / "call_2.out"
        planted.write_bytes(b"x")
        os.chown(planted, 65534, 65534)
        with pytest.raises(PermissionError, match="not a file of yours"):
            read_own(str(planted))


def _fail_then_die() -> None:
    if os.environ["TORC_ATTEMPT_ID"] == "1":
        raise ValueError("attempt 1")
    os.kill(os.getpid(), 9)


def test_an_earlier_attempts_result_never_passes_for_the_last_ones(client, in_tmp):
    with Executor(client=client, failure_handler=[{"exit_codes": [1], "max_retries": 2}]) as ex:
        with pytest.raises(RemoteError, match="ended failed") as e:
            ex.submit(_fail_then_die).result(timeout=60)
        assert "attempt 1" not in str(e.value)


def test_a_failure_no_rule_matches_fails_the_call_rather_than_parking_it(client, in_tmp):
    with Executor(client=client, failure_handler=[{"exit_codes": [3], "max_retries": 1}]) as ex:
        with pytest.raises(KeyError):
            ex.submit(_boom, 2).result(timeout=60)
        assert client.jobs(ex.workflow_id)[0].status == "failed"


def test_futures_fail_once_the_daemon_is_gone_for_good(client, daemon, in_tmp, monkeypatch):
    import torcctl.api.executor as executor

    monkeypatch.setattr(executor, "RECONNECT_FOR", 2.0)
    ex = Executor(client=client)
    future = ex.submit(_wait_for, str(in_tmp / "never"))
    daemon.wait_for(lambda: _running(client, ex), what="the call to start")
    daemon.kill9()
    with pytest.raises(RemoteError, match="lost the workflow's events"):
        future.result(timeout=60)
    with pytest.raises(RuntimeError, match="broken"):
        ex.submit(pow, 1, 1)
    ex.shutdown()
    (in_tmp / "never").touch()  # the call, still running without a daemon, ends


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"failure_handler": {"exit_codes": [1]}}, "list of rules"),
        ({"name": 5}, "name must be"),
        ({"max_workers": "4"}, "max_workers must be"),
        ({"batch_delay": -1}, "batch_delay must be"),
        ({"resources": {"memory": "lots"}}, "memory"),
        ({"resources": "big"}, "resources must be a dict"),
    ],
)
def test_bad_executor_arguments_are_refused_at_once(client, in_tmp, options, error):
    with pytest.raises((TypeError, ValueError), match=error):
        Executor(client=client, **options)
    assert not (in_tmp / "torc_executor").exists() or not any((in_tmp / "torc_executor").iterdir())


def test_calls_queued_when_a_script_ends_without_waiting_still_run(daemon, in_tmp):
    import subprocess
    import sys
    import textwrap

    script = in_tmp / "fire_and_forget.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from torcctl import Client, Executor
            ex = Executor(client=Client({daemon.socket!r}, autostart=False), keep_files=True)
            ex.submit(print, "ran")
            ex.shutdown(wait=False)
            """
        )
    )
    subprocess.run([sys.executable, str(script)], cwd=in_tmp, check=True, timeout=60)
    wf = Client(daemon.socket, autostart=False).workflows()[0]
    assert wf.wait(timeout=60).counts == {"completed": 1}
