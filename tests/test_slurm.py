"""Slurm end to end, against the real local cluster (scripts/slurm-local.sh start).

Mandatory where TORC_REQUIRE_SLURM=1 (CI); elsewhere skipped, with the reason,
only when this machine has no Slurm.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess

import msgspec
import pytest
from conftest import REPO, Daemon

from torcd.protocol import AllocationInfo, Event

FAIL_UNTIL = f"bash {REPO}/examples/scripts/fail_until.sh"


def _slurm_up() -> str | None:
    if not shutil.which("sbatch"):
        return "sbatch is not installed (run scripts/slurm-local.sh start)"
    r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return f"no Slurm controller answers: {r.stderr.strip()} (run scripts/slurm-local.sh start)"
    return None


_why_not = _slurm_up()
if _why_not and os.environ.get("TORC_REQUIRE_SLURM") == "1":
    raise RuntimeError(f"TORC_REQUIRE_SLURM=1 but Slurm is not usable: {_why_not}")
pytestmark = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")


@pytest.fixture
def sdaemon(tmp_path):
    d = Daemon(tmp_path).start(
        "--listen",
        "127.0.0.1:0",
        "--slurm-poll-interval",
        "0.5",
        "--auto-schedule-interval",
        "0.5",
        "--heartbeat-timeout",
        "15",
    )
    yield d
    for a in _allocations_of(d):
        if a.slurm_job_id and a.state in ("pending", "running"):
            subprocess.run(["scancel", a.slurm_job_id])
    d.stop()


def _allocations_of(d: Daemon) -> list[AllocationInfo]:
    out = []
    try:
        for wf in d.call("workflows.list"):
            out += d.call("allocations.list", {"workflow_id": wf["id"]}, list[AllocationInfo])
    except Exception:
        pass
    return out


def scheduler(cpus: int = 1, max_allocations: int = 4) -> str:
    return f"""
slurm_schedulers:
  - name: debug
    partition: debug
    walltime: "00:10:00"
    cpus: {cpus}
    mem: 100M
    max_allocations: {max_allocations}
"""


def flaky_spec(succeed_at: int, count: int, other_jobs: str = "", **sched) -> str:
    """Jobs flaky1..flakyN exiting 10 until attempt `succeed_at`, under a handler that retries 10."""
    return (
        "name: s\n"
        + scheduler(**sched)
        + f"""
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        max_retries: 3
jobs:
{other_jobs}  - name: flaky{{i}}
    command: "{FAIL_UNTIL} 10 {succeed_at}"
    failure_handler: h
    parameters: {{i: "1:{count}"}}
"""
    )


def submit_slurm(d: Daemon, spec: str, *extra: str) -> int:
    (d.tmp / "wf.yaml").write_text(spec)
    code, out, err = d.ctl("submit-slurm", "wf.yaml", *extra)
    assert code == 0, err
    return int(out.strip())


def auto_schedule(d: Daemon, wf: int, threshold=5, cooldown=1800.0, stranded=7200.0) -> None:
    d.call(
        "workflows.set_auto_schedule",
        {"workflow_id": wf, "threshold": threshold, "cooldown": cooldown, "stranded_timeout": stranded},
    )


def allocations(d: Daemon, wf: int) -> list[AllocationInfo]:
    return d.call("allocations.list", {"workflow_id": wf}, list[AllocationInfo])


def submissions(d: Daemon, wf: int) -> list[Event]:
    return [e for e in d.events(wf) if e.kind == "auto_schedule_decided" and e.action == "submit"]


def test_allocations_run_jobs_with_the_same_env_and_logs(sdaemon, tmp_path):
    wf = submit_slurm(
        sdaemon,
        "name: s\n"
        + scheduler(cpus=2)
        + """
jobs:
  - name: j{i}
    command: env | grep ^TORC_ | sort; echo err >&2
    parameters: {i: "1:4"}
""",
        "--account",
        "physics",
    )
    info = sdaemon.wait(wf, timeout=120)
    assert info.counts == {"completed": 4}
    allocs = allocations(sdaemon, wf)
    assert len(allocs) == 2 and all(a.slurm_job_id and a.cpus == 2 for a in allocs)
    script = open(allocs[0].script_path).read()
    assert "#SBATCH --account=physics" in script and "#SBATCH --cpus-per-task=2" in script
    assert "torcctl worker" in script and "--token-file" in script
    assert sdaemon.call("ping")["tcp_url"] in script
    job = sdaemon.jobs(wf)["j3"]
    att = sdaemon.attempts(job.id)[0]
    env = dict(line.split("=", 1) for line in open(att.stdout_path).read().splitlines())
    assert env["TORC_JOB_ID"] == str(job.id) and env["TORC_ATTEMPT_ID"] == "1" and env["TORC_JOB_NAME"] == "j3"
    assert env["TORC_API_URL"].startswith("http://127.0.0.1:")
    assert att.stdout_path.endswith(f"job_wf{wf}_j{job.id}_r1_a1.o") and open(att.stderr_path).read() == "err\n"
    sdaemon.wait_for(
        lambda: all(a.state == "done" for a in allocations(sdaemon, wf)), timeout=60, what="allocations to finish"
    )
    # Slurm writes each allocation's output into the daemon's private state dir (a group member
    # who swaps output/ cannot redirect it); OUTPUT_DIR/slurm/ links to it.
    private = os.path.join(sdaemon.state_dir, "slurm")
    assert f'#SBATCH --output="{private}/slurm_%j.out"' in script
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
    for a in allocs:
        link = tmp_path / "output" / "slurm" / f"slurm_{a.slurm_job_id}.out"
        assert os.readlink(link) == os.path.join(private, f"slurm_{a.slurm_job_id}.out") and link.exists()


def test_rule_1_new_allocation_when_retries_are_stranded_with_no_allocation(sdaemon, tmp_path):
    wf = submit_slurm(sdaemon, flaky_spec(succeed_at=2, count=3, cpus=3), "--allocations", "1")
    auto_schedule(sdaemon, wf, threshold=5, cooldown=3600, stranded=3600)
    info = sdaemon.wait(wf, timeout=180)
    assert info.counts == {"completed": 3}
    assert {j.attempt_id for j in sdaemon.jobs(wf).values()} == {2}
    subs = submissions(sdaemon, wf)
    assert [e.rule_index for e in subs] == [1]
    allocs = allocations(sdaemon, wf)
    assert len(allocs) == 2 and "rule 1" in allocs[1].reason
    # the first allocation had finished before the second was asked for
    assert allocs[0].ended is not None and allocs[0].ended <= allocs[1].submitted


def test_rule_2_then_cooldown_then_rule_3_with_attempt_3(sdaemon, tmp_path):
    wf = submit_slurm(
        sdaemon,
        flaky_spec(
            succeed_at=3, count=3, other_jobs="  - {name: long, command: sleep 25}\n", cpus=4, max_allocations=4
        ),
        "--allocations",
        "1",
    )
    auto_schedule(sdaemon, wf, threshold=3, cooldown=3600, stranded=4)
    info = sdaemon.wait(wf, timeout=240)
    assert info.counts == {"completed": 4}
    assert {n: j.attempt_id for n, j in sdaemon.jobs(wf).items()} == {"long": 1, "flaky1": 3, "flaky2": 3, "flaky3": 3}
    assert [e.rule_index for e in submissions(sdaemon, wf)] == [2, 3]
    waits = [e.message for e in sdaemon.events(wf) if e.kind == "auto_schedule_decided" and e.action == "wait"]
    assert any("cooldown" in m for m in waits)  # rule 2 held back by its cooldown before rule 3 fired
    # each attempt of a flaky job ran in a different allocation
    for name in ("flaky1", "flaky2", "flaky3"):
        atts = sdaemon.attempts(sdaemon.jobs(wf)[name].id)
        assert [a.return_code for a in atts] == [10, 10, 0]


def test_rule_3_alone_for_a_single_stranded_retry(sdaemon):
    wf = submit_slurm(
        sdaemon,
        flaky_spec(succeed_at=2, count=1, other_jobs="  - {name: long, command: sleep 15}\n", cpus=2),
        "--allocations",
        "1",
    )
    auto_schedule(sdaemon, wf, threshold=10, cooldown=0, stranded=3)
    sdaemon.wait(wf, timeout=180)
    assert [e.rule_index for e in submissions(sdaemon, wf)] == [3]
    flaky = sdaemon.attempts(sdaemon.jobs(wf)["flaky1"].id)
    long = sdaemon.attempts(sdaemon.jobs(wf)["long"].id)[0]
    assert flaky[1].start_time < long.end_time  # the retry did not wait for the busy allocation to end


def start_victim(sdaemon, tmp_path, rule: str) -> int:
    """A job whose first attempt runs long in an allocation, handled by `rule` (2 attempts);
    returns once attempt 1 has started."""
    wf = submit_slurm(
        sdaemon,
        "name: s\n"
        + scheduler()
        + f"""
failure_handlers:
  - name: h
    rules:
      - {{{rule}, max_retries: 2}}
jobs:
  - name: victim
    command: if [ $TORC_ATTEMPT_ID -ge 2 ]; then echo rerun; else touch started; sleep 120; fi
    failure_handler: h
""",
    )
    auto_schedule(sdaemon, wf)
    sdaemon.wait_for(lambda: (tmp_path / "started").exists(), timeout=60, what="the job to start")
    return wf


def test_scancel_mid_job_terminates_it_and_the_handler_retries_it(sdaemon, tmp_path):
    wf = start_victim(sdaemon, tmp_path, "match_all_exit_codes: true")
    slurm_id = allocations(sdaemon, wf)[0].slurm_job_id
    subprocess.run(["scancel", slurm_id], check=True)
    sdaemon.wait(wf, timeout=120)
    atts = sdaemon.attempts(sdaemon.jobs(wf)["victim"].id)
    assert [a.attempt_id for a in atts] == [1, 2]
    assert atts[0].return_code in (143, 137) and atts[0].action == "retry" and atts[1].return_code == 0


def test_a_worker_that_vanishes_has_its_job_recorded_137_and_retried(sdaemon, tmp_path):
    wf = start_victim(sdaemon, tmp_path, "exit_codes: [137]")
    out = subprocess.run(["pgrep", "-f", f"torcctl worker .*--workflow-id {wf} "], capture_output=True, text=True)
    for pid in out.stdout.split():
        os.kill(int(pid), signal.SIGKILL)  # the node "dies": no goodbye from the worker
    sdaemon.wait(wf, timeout=120)
    atts = sdaemon.attempts(sdaemon.jobs(wf)["victim"].id)
    assert [(a.attempt_id, a.return_code) for a in atts] == [(1, 137), (2, 0)]
    assert "lost" in atts[0].message
    assert any(e.kind == "worker_lost" for e in sdaemon.events(wf))


def test_documented_scenario_retries_on_new_allocations_up_to_attempt_3(sdaemon, tmp_path):
    """Many jobs; a few fail with 10 (recovery script); the allocation finishes; auto-schedule brings
    a new one for the retries; some fail again and finish on attempt 3."""
    (tmp_path / "recover.sh").write_text('#!/bin/bash\necho "$TORC_JOB_NAME $TORC_ATTEMPT_ID" >> recovered.txt\n')
    os.chmod(tmp_path / "recover.sh", 0o755)
    wf = submit_slurm(
        sdaemon,
        "name: s\n"
        + scheduler(cpus=2, max_allocations=3)
        + """
failure_handlers:
  - name: sim
    rules:
      - exit_codes: [10]
        recovery_script: ./recover.sh
        max_retries: 3
jobs:
  - name: sim{i:02d}
    command: "sleep 0.2; case {i} in 3|7) exit_at=2;; 11|15) exit_at=3;; *) exit_at=1;; esac; """
        + f'{FAIL_UNTIL} 10 $exit_at"'
        + """
    failure_handler: sim
    parameters: {i: "1:16"}
""",
        "--allocations",
        "2",
    )
    auto_schedule(sdaemon, wf, threshold=50, cooldown=3600, stranded=3600)
    info = sdaemon.wait(wf, timeout=300)
    assert info.counts == {"completed": 16}
    attempts = {n: j.attempt_id for n, j in sdaemon.jobs(wf).items()}
    assert attempts == {f"sim{i:02d}": {3: 2, 7: 2, 11: 3, 15: 3}.get(i, 1) for i in range(1, 17)}
    recovered = sorted((tmp_path / "recovered.txt").read_text().split("\n")[:-1])
    assert recovered == sorted(["sim03 1", "sim07 1", "sim11 1", "sim11 2", "sim15 1", "sim15 2"])
    allocs = allocations(sdaemon, wf)
    assert len(allocs) >= 3 and all(a.slurm_job_id for a in allocs)
    assert submissions(sdaemon, wf)  # the retries got compute from auto-schedule


def test_tcp_door_refuses_requests_without_the_right_token(sdaemon):
    import urllib.error
    import urllib.request

    url = sdaemon.call("ping")["tcp_url"] + "/rpc"
    token = open(os.path.join(sdaemon.state_dir, "token")).read().strip()
    assert oct(os.stat(os.path.join(sdaemon.state_dir, "token")).st_mode & 0o777) == "0o600"
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": "workflows.list"})
    for header in (None, "Bearer nope", f"Bearer {token}x", token):
        req = urllib.request.Request(url, data=body, headers={"Authorization": header} if header else {})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 401
    req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {token}"})
    assert msgspec.json.decode(urllib.request.urlopen(req, timeout=10).read())["result"] == []
    assert token not in sdaemon.log.read_text()  # never logged


def test_a_job_stopped_by_the_allocations_time_limit_is_recorded_as_a_timeout(sdaemon, tmp_path):
    spec = scheduler().replace('walltime: "00:10:00"', 'walltime: "00:01:00"')
    wf = submit_slurm(sdaemon, "name: w\n" + spec + "jobs:\n  - {name: endless, command: 'sleep 600'}\n")
    sdaemon.wait(wf, timeout=180)
    (a,) = sdaemon.attempts(sdaemon.jobs(wf)["endless"].id)
    assert a.cause == "timeout" and a.return_code in (143, 137), a
    # Slurm checks time limits about once a minute: it ends the allocation 60 to 120 s in.
    assert "time limit" in a.message and 55 < a.end_time - a.start_time < 150


WHOLE_NODES = """name: sweep
slurm_schedulers:
  - {name: nodes, partition: debug, walltime: "00:10:00"}
jobs:
  - {name: "j{i}", command: "sleep 1", parameters: {i: "1:%d"}}
"""


def _node_cpus() -> int:
    return int(
        subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%c"], capture_output=True, text=True).stdout.split()[
            0
        ]
    )


def test_a_one_cpu_sweep_packs_into_one_whole_node_allocation(sdaemon, tmp_path):
    n = _node_cpus()
    (tmp_path / "wf.yaml").write_text(WHOLE_NODES % (2 * n))
    code, out, _ = sdaemon.ctl("submit-slurm", "wf.yaml", "--dry-run")
    assert code == 0 and f"2 allocations of 1 node(s) ({n} CPUs" in out and "(dry run" in out
    assert f"for {2 * n} ready jobs on 2 node(s)" in out
    assert sdaemon.call("workflows.list") == []  # a dry run creates nothing
    wf = submit_slurm(sdaemon, WHOLE_NODES % n)
    assert sdaemon.wait(wf, timeout=120).counts == {"completed": n}
    (alloc,) = allocations(sdaemon, wf)  # one exclusive node, not one allocation per job
    assert alloc.cpus == n
    assert "#SBATCH --exclusive" in open(alloc.script_path).read()


def test_a_job_that_fits_no_node_is_refused_at_submit(sdaemon, tmp_path):
    n = _node_cpus()
    spec = WHOLE_NODES.replace('"sleep 1"', f'"sleep 1", num_cpus: {n + 1}') % 1
    (tmp_path / "wf.yaml").write_text(spec)
    code, _, err = sdaemon.ctl("submit-slurm", "wf.yaml")
    assert code != 0 and f"job 'j1' fits no node of scheduler 'nodes': needs {n + 1} CPUs; a node has {n}" in err
    assert sdaemon.call("workflows.list") == []


def test_a_two_node_allocation_runs_a_worker_on_each_node_and_both_wait_for_the_fan_out(sdaemon, tmp_path):
    n = _node_cpus()
    wf = submit_slurm(
        sdaemon,
        f"""name: two_nodes
slurm_schedulers:
  - {{name: pair, partition: debug, walltime: "00:10:00", nodes: 2}}
jobs:
  - {{name: first, command: "sleep 4"}}
  - {{name: "fan{{i}}", command: "sleep 3", depends_on: [first], parameters: {{i: "1:{2 * n}"}}}}
""",
    )
    assert sdaemon.wait(wf, timeout=180).counts == {"completed": 2 * n + 1}
    (alloc,) = allocations(sdaemon, wf)  # the plan: one job ready, one allocation of two nodes
    hosts = {sdaemon.attempts(j.id)[0].host for name, j in sdaemon.jobs(wf).items() if name != "first"}
    assert len(hosts) == 2, hosts  # the worker with nothing to do during `first` stayed, and took half
    registered = [e.message for e in sdaemon.events(wf) if e.kind == "worker_registered"]
    assert len(registered) == 2 and all(f"allocation {alloc.id}" in m for m in registered)


def test_jobs_in_allocations_survive_a_daemon_killed_for_40_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # the workers know the daemon by this address: the restart must keep it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flags = ("--listen", f"127.0.0.1:{port}", "--slurm-poll-interval", "0.5", "--heartbeat-timeout", "15")
    d = Daemon(tmp_path).start(*flags)
    try:
        wf = submit_slurm(
            d,
            "name: outage\n" + scheduler(cpus=2) + "jobs:\n"
            "  - {name: 'j{i}', command: 'touch started_{i}; sleep 20', parameters: {i: '1:4'}}\n",
        )
        # Started on their workers, not only claimed (a claim whose reply the kill cut off is handed again).
        d.wait_for(lambda: len(list(tmp_path.glob("started_*"))) == 4, timeout=120, what="all four jobs to run")
        d.kill9()
        time.sleep(40)  # the jobs end meanwhile; the workers keep their exits and keep trying
        d.start(*flags)
        assert d.wait(wf, timeout=180).counts == {"completed": 4}
        for job in d.jobs(wf).values():
            (a,) = d.attempts(job.id)
            assert (a.attempt_id, a.return_code) == (1, 0)
            assert 19 < a.end_time - a.start_time < 25  # when it ended, though reported after the restart
        assert not [e for e in d.events(wf) if e.kind == "worker_lost"]
    finally:
        for a in _allocations_of(d):
            if a.slurm_job_id and a.state in ("pending", "running"):
                subprocess.run(["scancel", a.slurm_job_id])
        d.stop()


def test_an_executor_with_a_scheduler_runs_its_calls_in_allocations(sdaemon, tmp_path, monkeypatch):
    import operator

    from torcctl import Client, Executor

    monkeypatch.chdir(tmp_path)
    client = Client(sdaemon.socket, autostart=False)
    sched = {"partition": "debug", "walltime": "00:10:00", "cpus": 1, "mem": "100M", "max_allocations": 2}
    with Executor(client=client, scheduler=sched) as ex:
        first = list(ex.map(operator.mul, range(3), range(3), timeout=240))
        later = ex.submit(operator.add, 40, 2).result(timeout=240)  # added after the first calls ended
        hosts = {a.host for j in client.jobs(ex.workflow_id) for a in client.attempts(j.id)}
        allocs = client.allocations(ex.workflow_id)
    assert first == [0, 1, 4] and later == 42
    assert allocs and all(a.slurm_job_id for a in allocs)
    assert hosts and hosts <= {"n1", "n2", "n3"}, hosts
