"""Jobs a running job adds to its own workflow (Torc's dynamic jobs: `jobs.spawn`): they wait for
it, run like declared jobs (handlers, requirements, the workflow's env), count one iteration of
their lineage up to `dynamic_jobs.max_iterations`, replay rather than repeat, and a call that
cannot be honoured changes nothing."""

from __future__ import annotations

import json
import os
import sys

import pytest

from torcctl import Orchestrator, SpawnJob, TooFast, TorcError
from torcctl.errors import InvalidParams, InvalidTransition, NotFound, RpcError
from torcd.core.spawning import (
    LINEAGE_ENV,
    Spawning,
    SpawnRate,
    cap_problem,
    fragment,
    lineage_problem,
    outside_dependencies,
    record_name,
)
from torcd.protocol import LineageInfo, Spawned, UserDataInfo

WAITS_FOR_GO = "while [ ! -f go ]; do sleep 0.02; done"
SPEC = f"""
name: dyn
dynamic_jobs: {{max_iterations: 2}}
env: {{SHARED: from-workflow}}
failure_handlers:
  - name: again
    rules: [{{exit_codes: [3], max_retries: 3}}]
resource_requirements:
  - {{name: small, num_cpus: 1, memory: 64m, runtime: PT1M}}
jobs:
  - {{name: base, command: 'true'}}
  - {{name: orch, command: '{WAITS_FOR_GO}', depends_on: [base]}}
"""


# -- the pure decisions -----------------------------------------------------


@pytest.mark.parametrize(
    "lineage, ok",
    [
        ("case1", True),
        ("a", True),
        ("run-2.b_c", True),
        ("x" * 200, True),
        ("x" * 201, False),
        ("", False),
        ("_a", False),
        ("a__g000001", False),  # would read as another lineage's record
        ("../etc", False),
        ("a b", False),
        ("a\nb", False),
        ("é", False),
    ],
)
def test_a_lineage_is_a_plain_name(lineage, ok):
    assert (lineage_problem(lineage) is None) == ok


def test_a_lineages_records_are_named_as_torc_names_them():
    assert record_name("caseA", 7) == "__torc_lineage__caseA__g000007"
    assert record_name("caseA", None) == "__torc_lineage__caseA__final"


@pytest.mark.parametrize("iterations, cap, refused", [(0, 1, False), (1, 2, False), (2, 2, True), (5, 2, True)])
def test_the_iteration_cap_counts_per_lineage(iterations, cap, refused):
    why = cap_problem("L", iterations, cap)
    assert (why is not None) == refused
    if refused:
        assert f"max_iterations ({cap})" in why


def test_the_spawn_rate_allows_a_burst_then_its_pace():
    rate = SpawnRate(burst=3, per_second=2, tokens=3)
    assert [rate.take(0.0) for _ in range(3)] == [None, None, None]
    assert rate.take(0.0) == pytest.approx(0.5)  # one call's worth at 2 per second
    assert rate.take(0.25) == pytest.approx(0.25)
    assert rate.take(0.5) is None
    assert rate.take(100.0) is None and rate.tokens == pytest.approx(2)  # refilled to the burst, less one


def test_a_fragment_carries_the_workflows_env_and_requirements_and_the_lineage_and_splits_dependencies():
    spawning = Spawning(3, {"A": "1"}, [{"name": "small", "num_cpus": 2}, {"name": "unused"}])
    jobs = [
        SpawnJob(name="w", command="run", resource_requirements="small", depends_on=["base"], priority=5),
        SpawnJob(name="next", command="orch", depends_on=["w", "base", "w"], cancel_on_blocking_job_failure=False),
    ]
    doc = fragment(jobs, spawning, "L")
    assert doc["env"] == {"A": "1"} and doc["resource_requirements"] == [{"name": "small", "num_cpus": 2}]
    assert doc["jobs"] == [
        {"name": "w", "command": "run", "env": {LINEAGE_ENV: "L"}, "resource_requirements": "small", "priority": 5},
        {
            "name": "next",
            "command": "orch",
            "env": {LINEAGE_ENV: "L"},
            "depends_on": ["w", "w"],
            "cancel_on_blocking_job_failure": False,
        },
    ]
    assert outside_dependencies(jobs) == {"w": ["base"], "next": ["base"]}


# -- a real daemon ----------------------------------------------------------


def running_orchestrator(daemon, spec: str = SPEC) -> tuple[int, int]:
    wf = daemon.submit(spec)
    daemon.wait_for(lambda: daemon.jobs(wf)["orch"].status == "running", what="orch running")
    return wf, daemon.jobs(wf)["orch"].id


def spawn(daemon, job_id: int, jobs: list[dict], lineage: str = "L", state=None) -> Spawned:
    params = {"job_id": job_id, "lineage": lineage, "jobs": jobs, "state": state}
    return daemon.call("jobs.spawn", params, Spawned)


def lineage(daemon, wf: int, name: str = "L") -> LineageInfo:
    return daemon.call("jobs.lineage", {"workflow_id": wf, "lineage": name}, LineageInfo)


def test_spawned_jobs_wait_for_their_orchestrator_then_run_as_declared_jobs_would(daemon):
    wf, orch = running_orchestrator(daemon)
    once = "[ -f w2.once ] || { touch w2.once; exit 3; }"
    got = spawn(
        daemon,
        orch,
        [
            {
                "name": "w1",
                "command": f'echo "${LINEAGE_ENV} $SHARED" > w1.txt',
                "resource_requirements": "small",
                "depends_on": ["base"],
            },
            {"name": "w2", "command": once, "failure_handler": "again", "depends_on": ["w1"]},
        ],
        state={"gen": 1},
    )
    assert got.iteration == 1 and not got.replayed and sorted(got.job_ids) == ["w1", "w2"]
    jobs = daemon.jobs(wf)
    assert {n: jobs[n].status for n in ("w1", "w2")} == {"w1": "blocked", "w2": "blocked"}
    assert (jobs["w1"].lineage, jobs["w1"].memory_bytes, jobs["w2"].failure_handler) == ("L", 64 << 20, "again")
    assert jobs["orch"].lineage is None
    assert sorted(daemon.call("jobs.show", {"job_id": jobs["w1"].id})["depends_on"]) == sorted([jobs["base"].id, orch])
    (daemon.tmp / "go").touch()
    done = daemon.wait(wf)
    assert done.counts == {"completed": 4}
    assert (daemon.tmp / "w1.txt").read_text() == "L from-workflow\n"
    assert len(daemon.attempts(jobs["w2"].id)) == 2  # its handler ran it again
    info = lineage(daemon, wf)
    assert (info.iterations, info.max_iterations, info.state, info.converged) == (1, 2, {"gen": 1}, False)
    added = [e for e in daemon.events(wf) if e.kind == "jobs_added"]
    assert len(added) == 1 and added[0].job_count == 2


def test_a_lineage_is_capped_replays_a_repeated_call_and_ends_with_its_final_state(daemon):
    wf, orch = running_orchestrator(daemon)
    first = spawn(daemon, orch, [{"name": "x1", "command": "true"}], state={"gen": 1})
    again = spawn(daemon, orch, [{"name": "x1", "command": "true"}], state={"gen": 1})
    assert (again.replayed, again.iteration, again.job_ids) == (True, 1, first.job_ids)
    assert spawn(daemon, orch, [{"name": "x2", "command": "true"}], state={"gen": 2}).iteration == 2
    with pytest.raises(InvalidParams, match=r"lineage 'L' has had 2 iterations.*max_iterations \(2\)"):
        spawn(daemon, orch, [{"name": "x3", "command": "true"}])
    other = spawn(daemon, orch, [{"name": "y1", "command": "true"}], lineage="M")  # the cap is per lineage
    assert other.iteration == 1
    assert sorted(daemon.jobs(wf)) == ["base", "orch", "x1", "x2", "y1"]
    final = spawn(daemon, orch, [], state={"converged": True})
    assert (final.job_ids, final.iteration) == ({}, 2)
    with pytest.raises(InvalidTransition, match="lineage 'L' has converged"):
        spawn(daemon, orch, [{"name": "x4", "command": "true"}])
    info = lineage(daemon, wf)
    assert (info.iterations, info.state, info.converged, info.final) == (2, {"gen": 2}, True, {"converged": True})
    names = [u.name for u in daemon.call("user_data.list", {"workflow_id": wf}, list[UserDataInfo])]
    assert [n for n in names if n.startswith("__torc_lineage__L")] == [
        "__torc_lineage__L__g000001",
        "__torc_lineage__L__g000002",
        "__torc_lineage__L__final",
    ]
    with pytest.raises(InvalidParams, match=r"written by jobs\.spawn only"):
        daemon.call("user_data.set", {"workflow_id": wf, "name": "__torc_lineage__L__g000003", "data": 1})
    (daemon.tmp / "go").touch()
    assert daemon.wait(wf).counts == {"completed": 5}


def job(name: str = "n", **more) -> dict:
    return {"name": name, "command": "true", **more}


@pytest.mark.parametrize(
    "jobs, lineage_, state, words",
    [
        ([job()], "a__b", None, "is not a plain name"),
        ([job()], "../x", None, "is not a plain name"),
        ([job(resource_requirements="huge")], "L", None, "no resource requirement named 'huge' (small)"),
        ([job(failure_handler="nope")], "L", None, "no failure handler named 'nope'"),
        ([job(depends_on=["ghost"])], "L", None, "depends on 'ghost', which is neither a job of workflow"),
        ([job("a", depends_on=["b"]), job("b", depends_on=["a"])], "L", None, "cycle"),
        ([job("a"), job("a")], "L", None, "duplicate job name 'a'"),
        ([job("base")], "L", None, "already has a job named 'base'"),
        ([job()], "L", "x" * 70_000, "state is 70,002 bytes as JSON; the limit is 65,536"),
        ([job(bogus=1)], "L", None, "unknown field `bogus`"),
        ([job(scheduler="gpu")], "L", None, "runs on this machine: `scheduler` names a Slurm scheduler"),
        ([job(command="")], "L", None, "command"),
        ([job(name="x" * 600)], "L", None, "name"),
        ([job(priority=-1)], "L", None, "priority"),
        ([job(failure_handler="")], "L", None, "length >= 1"),
        ([job(str(k)) for k in range(10_001)], "L", None, "length <= 10000"),
    ],
    ids=[
        "double-underscore",
        "path",
        "unknown-requirement",
        "unknown-handler",
        "unknown-dependency",
        "cycle",
        "duplicate",
        "taken-name",
        "big-state",
        "unknown-field",
        "scheduler-here",
        "empty-command",
        "long-name",
        "negative-priority",
        "empty-handler",
        "too-many",
    ],
)
def test_a_call_that_cannot_be_honoured_is_refused_naming_what_is_wrong_and_changes_nothing(
    daemon, jobs, lineage_, state, words
):
    wf, orch = running_orchestrator(daemon)
    before = sorted(daemon.jobs(wf))
    with pytest.raises(InvalidParams) as info:
        spawn(daemon, orch, jobs, lineage=lineage_, state=state)
    assert words in info.value.message
    assert sorted(daemon.jobs(wf)) == before
    if lineage_problem(lineage_) is None:
        assert lineage(daemon, wf, lineage_).iterations == 0
    names = [u.name for u in daemon.call("user_data.list", {"workflow_id": wf}, list[UserDataInfo])]
    assert not [n for n in names if n.startswith("__torc_lineage__")]


def test_only_a_running_job_adds_jobs(daemon):
    wf, orch = running_orchestrator(daemon)
    base = daemon.jobs(wf)["base"].id
    with pytest.raises(InvalidTransition, match=f"job {base} is completed: only a running job adds jobs"):
        spawn(daemon, base, [job()])
    with pytest.raises(NotFound, match="no job 999"):
        spawn(daemon, 999, [job()])
    (daemon.tmp / "go").touch()
    daemon.wait(wf)
    with pytest.raises(InvalidTransition, match="is completed"):
        spawn(daemon, orch, [job()])
    assert sorted(daemon.jobs(wf)) == ["base", "orch"]


def test_a_workflows_jobs_that_spawn_too_often_are_told_when_to_ask_again(daemon):
    wf, orch = running_orchestrator(daemon)
    refused = None
    for _ in range(1000):  # 50 at once, then 10 a second: refused long before the end
        try:
            spawn(daemon, orch, [], lineage="fast")
        except TooFast as e:
            refused = e
            break
    assert refused is not None and 0 < refused.retry_after <= 0.1
    assert "add jobs too often" in refused.message


def test_a_shell_orchestrator_adds_jobs_with_torcctl(daemon, tmp_path):
    (tmp_path / "next.json").write_text(json.dumps([{"name": "child", "command": f'echo "${LINEAGE_ENV}"'}]))
    ctl = f"{sys.executable} -m torcctl"
    wf = daemon.submit(f"""
        name: shell
        jobs:
          - name: orch
            command: |
              {ctl} jobs spawn next.json --lineage sh --state '{{"n": 1}}' && {ctl} jobs lineage sh
        """)
    assert daemon.wait(wf).counts == {"completed": 2}
    child = daemon.jobs(wf)["child"]
    assert child.lineage == "sh"
    assert open(daemon.attempts(child.id)[0].stdout_path).read() == "sh\n"
    orch = daemon.attempts(daemon.jobs(wf)["orch"].id)[0]
    spawned, info = (json.loads(line) for line in open(orch.stdout_path).read().splitlines())
    assert spawned == {"job_ids": {"child": child.id}, "iteration": 1, "replayed": False}
    assert (info["iterations"], info["state"], info["max_iterations"]) == (1, {"n": 1}, 1000)


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "give the jobs to add"),
        (["next.json", "--converge"], "give the jobs to add"),
        (["missing.json"], "cannot read missing.json"),
        (["bad.json"], "bad.json is not JSON"),
        (["wrong.json"], "a JSON list of jobs"),
        (["--converge", "--job-id", "1", "--lineage", "L", "--state", "{"], "--state is not JSON"),
        (["--converge", "--lineage", "L"], "which job? give --job-id"),
        (["--converge", "--job-id", "1"], "which lineage? give --lineage"),
    ],
)
def test_jobs_spawn_refuses_what_it_cannot_read(daemon, monkeypatch, args, words):
    for name in ("TORC_JOB_ID", LINEAGE_ENV):
        monkeypatch.delenv(name, raising=False)
    (daemon.tmp / "bad.json").write_text("[{")
    (daemon.tmp / "wrong.json").write_text('[{"name": "a"}]')
    code, out, err = daemon.ctl("jobs", "spawn", *args)
    assert code == 2 and words in err, err


def test_an_orchestrator_outside_a_job_says_it_runs_inside_one(monkeypatch):
    for name in ("TORC_WORKFLOW_ID", "TORC_JOB_ID", LINEAGE_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TorcError, match=r"TORC_WORKFLOW_ID and TORC_JOB_ID not set"):
        Orchestrator.from_env(lineage_fallback="a")
    monkeypatch.setenv("TORC_WORKFLOW_ID", "1")
    monkeypatch.setenv("TORC_JOB_ID", "2")
    with pytest.raises(TorcError, match="no lineage"):
        Orchestrator.from_env()


def test_a_spawn_refused_by_the_daemon_is_an_rpc_error_with_its_field(daemon):
    wf, orch = running_orchestrator(daemon)
    with pytest.raises(RpcError) as info:
        spawn(daemon, orch, [job(resource_requirements="huge")])
    assert info.value.field == "$.jobs[0].resource_requirements"
    assert os.path.exists(daemon.socket)


def test_only_the_job_that_added_them_replays_a_call_and_only_as_it_was(daemon):
    wf, orch = running_orchestrator(daemon)
    holds = "while [ ! -f go2 ]; do sleep 0.02; done"
    first = [{"name": "work", "command": "true"}, {"name": "next", "command": holds, "depends_on": ["work"]}]
    spawn(daemon, orch, first)
    with pytest.raises(InvalidParams, match="already has a job named"):  # another command: not a replay
        spawn(daemon, orch, [{"name": "work", "command": "false"}, first[1]])
    (daemon.tmp / "go").touch()
    daemon.wait_for(lambda: daemon.jobs(wf)["next"].status == "running", what="the continuation running")
    nxt = daemon.jobs(wf)["next"].id
    # The continuation, naming its generation's jobs as its parent did, is refused, not replayed.
    with pytest.raises(InvalidParams, match="already has a job named"):
        spawn(daemon, nxt, first)
    # A job a lineage added extends that lineage only (its cap binds it).
    with pytest.raises(InvalidParams, match="was added by lineage 'L': it adds jobs to that lineage only"):
        spawn(daemon, nxt, [job("elsewhere")], lineage="M")
    assert spawn(daemon, nxt, [job("work2")]).iteration == 2
    (daemon.tmp / "go2").touch()
    assert daemon.wait(wf).counts == {"completed": 5}


def test_an_orchestrator_run_again_after_its_call_committed_adds_nothing_more(daemon, tmp_path):
    (tmp_path / "next.json").write_text(json.dumps([{"name": "child", "command": "true"}]))
    ctl = f"{sys.executable} -m torcctl"
    wf = daemon.submit(f"""
        name: retried
        failure_handlers:
          - name: again
            rules: [{{exit_codes: [3], max_retries: 3}}]
        jobs:
          - name: seed
            failure_handler: again
            command: |
              {ctl} jobs spawn next.json --lineage L && if [ ! -f once ]; then touch once; exit 3; fi
        """)
    assert daemon.wait(wf).counts == {"completed": 2}
    seed = daemon.jobs(wf)["seed"]
    assert len(daemon.attempts(seed.id)) == 2
    replies = [json.loads(open(a.stdout_path).read()) for a in daemon.attempts(seed.id)]
    assert [(r["replayed"], r["iteration"]) for r in replies] == [(False, 1), (True, 1)]
    assert lineage(daemon, wf).iterations == 1


def test_a_spec_may_not_write_a_lineages_records():
    from torcd.errors import SpecError
    from torcd.spec.parse import parse_spec

    with pytest.raises(SpecError, match=r"written by jobs\.spawn only \(at \$\.user_data\[0\]\.name\)"):
        parse_spec("name: x\nuser_data: [{name: __torc_lineage__L__final, data: 1}]\njobs: [{name: a, command: x}]\n")


def test_spawned_jobs_take_the_workflows_stdio(daemon, tmp_path):
    (tmp_path / "next.json").write_text(json.dumps([{"name": "child", "command": "echo out; echo err >&2"}]))
    ctl = f"{sys.executable} -m torcctl"
    wf = daemon.submit(
        f"""
        name: quiet
        execution_config: {{stdio: {{mode: no_stdout}}}}
        jobs:
          - {{name: orch, command: "{ctl} jobs spawn next.json --lineage q"}}
        """,
        cwd=tmp_path,
    )
    assert daemon.wait(wf).counts == {"completed": 2}
    (child,) = daemon.attempts(daemon.jobs(wf)["child"].id)
    assert child.stdout_path == "" and open(child.stderr_path).read() == "err\n"
