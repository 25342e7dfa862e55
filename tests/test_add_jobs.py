"""`workflows.add_jobs`: jobs added to a workflow that exists run like its own, wait for the jobs
they name by id as the lifecycle would have them wait, and a request that cannot be honoured
changes nothing."""

from __future__ import annotations

import textwrap

import msgspec
import pytest
from inproc import record_exit, rig_fixture, start_ready, statuses, submit  # noqa: F401

from torcctl.errors import RpcError
from torcd.core.added_jobs import Upstream, initial_status, upstream
from torcd.core.retry import Action, RetryDecision
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidParams
from torcd.protocol import AddedJobs, Runnable, WorkflowSummary
from torcd.spec.fragment import on_slurm_adding
from torcd.spec.parse import SlurmSchedulerSpec, parse_spec

WAITS_FOR_GO = "while [ ! -f go ]; do sleep 0.02; done"
RETRY_ON_3 = """
failure_handlers:
  - name: h
    rules: [{exit_codes: [3], max_retries: 2}]
"""


def add(d, wf: int, spec: str, depends_on_ids: dict | None = None, **params) -> dict[str, int]:
    """Add the jobs of `spec` (dedented) to workflow `wf`; each new job's id by name."""
    body = {"workflow_id": wf, "spec_text": textwrap.dedent(spec), "depends_on_ids": depends_on_ids or {}, **params}
    return d.call("workflows.add_jobs", body, AddedJobs).job_ids


def state(d, wf: int) -> str:
    return d.call("workflows.show", {"workflow_id": wf}, WorkflowSummary).state


# -- the pure decision ------------------------------------------------------

UPSTREAM = {
    S.UNINITIALIZED: Upstream.WAITING,
    S.BLOCKED: Upstream.WAITING,
    S.READY: Upstream.WAITING,
    S.PENDING: Upstream.WAITING,
    S.RUNNING: Upstream.WAITING,
    S.RECOVERING: Upstream.WAITING,
    S.PENDING_FAILED: Upstream.WAITING,  # a person may still retry it
    S.COMPLETED: Upstream.MET,
    S.FAILED: Upstream.FAILED,
    S.CANCELED: Upstream.FAILED,
    S.TERMINATED: Upstream.FAILED,
    S.DISABLED: Upstream.FAILED,
}


@pytest.mark.parametrize("status", list(S), ids=lambda s: s.label)
def test_what_a_dependency_in_each_status_means_for_a_job_added_after_it(status):
    assert upstream(status) == UPSTREAM[status]


def test_a_new_job_is_blocked_while_it_waits_for_anything_and_ready_otherwise():
    assert [initial_status(n) for n in (0, 1, 5)] == [S.READY, S.BLOCKED, S.BLOCKED]


def test_a_fragment_without_schedulers_runs_under_the_workflows_only_one_and_is_refused_among_several():
    fragment = parse_spec("name: f\njobs: [{name: x, command: 'true'}]\n")
    one = [SlurmSchedulerSpec(name="big", account="acct")]
    brought, jobs = on_slurm_adding(fragment, one, "acct")
    assert (brought, [j.scheduler for j in jobs]) == ([], ["big"])
    with pytest.raises(InvalidParams, match=r"several slurm_schedulers \(a, b\)"):
        on_slurm_adding(fragment, [SlurmSchedulerSpec(name="b"), SlurmSchedulerSpec(name="a")], "acct")
    own = parse_spec("name: f\nslurm_schedulers: [{name: s}]\njobs: [{name: x, command: 'true'}]\n")
    brought, jobs = on_slurm_adding(own, one, "acct")
    assert ([s.name for s in brought], [j.scheduler for j in jobs]) == (["s"], ["s"])


# -- in-process: the statuses new jobs start in -----------------------------

BASE = """
name: base
jobs:
  - {name: ok, command: "true"}
  - {name: bad, command: "false"}
  - {name: slow, command: "true"}
"""


async def base_with_ok_completed_bad_failed_slow_running(rig) -> tuple[int, dict[str, Runnable]]:
    wf = await submit(rig, BASE)
    started = await start_ready(rig)
    await record_exit(rig, started["ok"], 0)
    await record_exit(rig, started["bad"], 1)
    (failure,) = await rig.execution.failures_awaiting_decision()
    await rig.execution.apply_decisions([(failure, RetryDecision(Action.FAIL, None, "no handler"))])
    assert await statuses(rig, wf) == {"ok": "completed", "bad": "failed", "slow": "running"}
    return wf, started


FRAGMENT = """
name: ignored
jobs:
  - {name: after_ok, command: "true"}
  - {name: after_slow, command: "true"}
  - {name: after_bad, command: "true"}
  - {name: below_bad, command: "true", depends_on: [after_bad]}
  - {name: despite_bad, command: "true", cancel_on_blocking_job_failure: false}
  - {name: below_despite, command: "true", depends_on: [despite_bad]}
  - {name: free, command: "true"}
"""


async def test_new_jobs_start_as_the_lifecycle_would_have_left_them(rig):
    wf, started = await base_with_ok_completed_bad_failed_slow_running(rig)
    ids = {name: r.job_id for name, r in started.items()}
    fragment = parse_spec(FRAGMENT, "<jobs>")
    outside = {
        "after_ok": [ids["ok"]],
        "after_slow": [ids["slow"], ids["ok"]],
        "after_bad": [ids["bad"]],
        "despite_bad": [ids["bad"], ids["bad"]],  # said twice: one dependency
    }
    rig.events.clear()
    added = await rig.workflows.add_jobs(wf, fragment, outside)
    assert list(added) == [j.name for j in fragment.jobs] and min(added.values()) > max(ids.values())
    after = await statuses(rig, wf)
    assert {n: after[n] for n in added} == {
        "after_ok": "ready",
        "after_slow": "blocked",
        "after_bad": "canceled",
        "below_bad": "canceled",
        "despite_bad": "ready",
        "below_despite": "blocked",
        "free": "ready",
    }
    jobs = {j.name: j for j in await rig.queries.jobs(wf)}
    assert jobs["after_bad"].reason == jobs["below_bad"].reason == f"upstream job bad ({ids['bad']}) failed"
    assert (await rig.queries.job(added["after_slow"])).depends_on == sorted([ids["ok"], ids["slow"]])
    assert rig.kinds()[0] == "jobs_added" and "job_failed" not in rig.kinds()  # `bad` said so when it failed
    assert (rig.events[0].job_count, rig.events[0].message) == (7, "2 blocked, 3 ready, 2 canceled")

    # The running dependency completes: the job waiting for it is released, as any dependent is.
    await record_exit(rig, started["slow"], 0)
    assert (await statuses(rig, wf))["after_slow"] == "ready"


async def test_an_add_that_is_refused_in_the_transaction_leaves_nothing(rig):
    wf, started = await base_with_ok_completed_bad_failed_slow_running(rig)
    before = (await statuses(rig, wf), len(rig.events))
    fragment = parse_spec("name: f\njobs: [{name: x, command: 'true'}, {name: ok, command: 'true'}]\n")
    with pytest.raises(InvalidParams, match="already has a job named 'ok'"):
        await rig.workflows.add_jobs(wf, fragment, {"x": [started["bad"].job_id]})
    assert (await statuses(rig, wf), len(rig.events)) == before


async def test_the_workflow_with_its_new_jobs_stays_within_the_limits_a_spec_is_held_to(rig, monkeypatch):
    from torcd.store import new_jobs

    wf = await submit(rig, "name: l\njobs: [{name: a, command: 'true'}, {name: b, command: 'true', depends_on: [a]}]\n")
    monkeypatch.setattr(new_jobs, "MAX_JOBS", 3)
    monkeypatch.setattr(new_jobs, "MAX_DEPENDENCIES", 2)
    two = parse_spec("name: f\njobs: [{name: c, command: 'true'}, {name: d, command: 'true'}]\n")
    with pytest.raises(InvalidParams, match=f"workflow {wf} has 2 jobs; 2 more would pass the limit of 3"):
        await rig.workflows.add_jobs(wf, two, {})
    one = parse_spec("name: f\njobs: [{name: c, command: 'true'}]\n")
    with pytest.raises(InvalidParams, match=f"workflow {wf} has 1 dependencies; 2 more would pass the limit of 2"):
        await rig.workflows.add_jobs(wf, one, {"c": [1, 2]})
    assert await rig.workflows.add_jobs(wf, one, {"c": [1]}) == {"c": 3}


async def test_jobs_added_after_a_reset_run_in_the_workflows_current_run(rig):
    wf = await submit(rig, "name: r\njobs: [{name: a, command: 'true'}]\n")
    started = await start_ready(rig)
    await record_exit(rig, started["a"], 0)
    await rig.workflows.reset_status(wf, failed_only=False)
    added = await rig.workflows.add_jobs(wf, parse_spec("name: f\njobs: [{name: b, command: 'true'}]\n"), {})
    assert (await rig.queries.job(added["b"])).run_id == 2


async def test_jobs_added_to_a_slurm_workflow_get_its_scheduler_or_one_they_bring(rig):
    wf = await submit(
        rig, "name: s\nslurm_schedulers: [{name: big, nodes: 2}]\njobs: [{name: a, command: 'true'}]\n", "slurm"
    )
    plain = await rig.workflows.add_jobs(wf, parse_spec("name: f\njobs: [{name: b, command: 'true'}]\n"), {})
    same = "name: f\nslurm_schedulers: [{name: big, nodes: 2}]\njobs: [{name: c, command: 'true'}]\n"
    reused = await rig.workflows.add_jobs(wf, parse_spec(same), {})
    own = "name: f\nslurm_schedulers: [{name: small}]\njobs: [{name: d, command: 'true'}]\n"
    brought = await rig.workflows.add_jobs(wf, parse_spec(own), {})
    rows = await rig.store.db.rows("SELECT name, scheduler FROM jobs WHERE workflow_id = ? ORDER BY id", (wf,))
    assert [tuple(r) for r in rows] == [("a", "big"), ("b", "big"), ("c", "big"), ("d", "small")]
    assert (plain, reused, brought) == ({"b": 2}, {"c": 3}, {"d": 4})
    assert sorted(await rig.slurm.schedulers(wf)) == ["big", "small"]
    other = "name: f\nslurm_schedulers: [{name: big, nodes: 3}]\njobs: [{name: e, command: 'true'}]\n"
    with pytest.raises(InvalidParams, match="slurm scheduler 'big' differs from the workflow's"):
        await rig.workflows.add_jobs(wf, parse_spec(other), {})


# -- a real daemon ------------------------------------------------------------


def test_jobs_added_to_a_running_workflow_run_and_it_ends_done(daemon):
    wf = daemon.submit(f"name: grow\njobs:\n  - {{name: slow, command: '{WAITS_FOR_GO}'}}\n")
    daemon.wait_for(lambda: daemon.jobs(wf)["slow"].status == "running", what="slow running")
    added = add(daemon, wf, "name: more\njobs:\n  - {name: b, command: 'echo b'}\n  - {name: c, command: 'true'}\n")
    jobs = daemon.jobs(wf)
    assert added == {"b": jobs["b"].id, "c": jobs["c"].id}
    (daemon.tmp / "go").touch()
    assert daemon.wait(wf).counts == {"completed": 3}
    assert open(daemon.attempts(added["b"])[-1].stdout_path).read() == "b\n"


def test_adding_to_a_done_workflow_makes_it_active_until_the_new_jobs_end(daemon):
    wf = daemon.submit("name: again\njobs:\n  - {name: a, command: 'true'}\n")
    daemon.wait(wf)
    add(daemon, wf, "name: more\njobs:\n  - {name: b, command: 'sleep 0.5'}\n")
    assert state(daemon, wf) == "active"
    assert daemon.wait(wf).counts == {"completed": 2}
    kinds = [e.kind for e in daemon.events(wf)]
    assert kinds.count("workflow_done") == 2
    assert kinds.index("jobs_added") < max(i for i, k in enumerate(kinds) if k == "workflow_done")
    (event,) = [e for e in daemon.events(wf) if e.kind == "jobs_added"]
    assert (event.job_count, event.message) == (1, "1 ready")
    code, out, _ = daemon.ctl("events", str(wf))
    assert code == 0 and "jobs_added  1 jobs" in out


def test_a_job_added_after_a_completed_one_is_ready_at_once(daemon):
    wf = daemon.submit("name: dep\njobs:\n  - {name: a, command: 'true'}\n")
    daemon.wait(wf)
    a = daemon.jobs(wf)["a"].id
    added = add(daemon, wf, "name: more\njobs:\n  - {name: b, command: 'true'}\n", {"b": [a]})
    assert daemon.jobs(wf)["b"].status != "blocked"
    assert daemon.wait(wf).counts == {"completed": 2}
    assert daemon.call("jobs.show", {"job_id": added["b"]})["depends_on"] == [a]


def test_a_job_added_after_a_running_one_waits_for_it(daemon):
    wf = daemon.submit(f"name: dep\njobs:\n  - {{name: slow, command: '{WAITS_FOR_GO}'}}\n")
    daemon.wait_for(lambda: daemon.jobs(wf)["slow"].status == "running", what="slow running")
    slow = daemon.jobs(wf)["slow"].id
    added = add(daemon, wf, "name: more\njobs:\n  - {name: b, command: 'true'}\n", {"b": [slow]})
    assert daemon.jobs(wf)["b"].status == "blocked"
    (daemon.tmp / "go").touch()
    assert daemon.wait(wf).counts == {"completed": 2}
    assert daemon.attempts(added["b"])[0].start_time >= daemon.attempts(slow)[0].end_time


def test_jobs_added_after_a_failed_one_are_canceled_unless_they_run_whatever_happened(daemon):
    wf = daemon.submit("name: dep\njobs:\n  - {name: a, command: 'false'}\n")
    daemon.wait(wf)
    a = daemon.jobs(wf)["a"].id
    spec = """\
        name: more
        jobs:
          - {name: b, command: 'true'}
          - {name: c, command: 'true', depends_on: [b]}
          - {name: d, command: 'true', cancel_on_blocking_job_failure: false}
        """
    add(daemon, wf, spec, {"b": [a], "d": [a]})
    jobs = daemon.jobs(wf)
    assert (jobs["b"].status, jobs["c"].status) == ("canceled", "canceled")
    assert jobs["b"].reason == f"upstream job a ({a}) failed"
    assert daemon.wait(wf).counts == {"failed": 1, "canceled": 2, "completed": 1}
    assert daemon.jobs(wf)["d"].status == "completed"


def test_a_handler_the_workflow_has_is_reused_and_a_new_one_applies_to_new_jobs(daemon):
    wf = daemon.submit(f"name: h\n{RETRY_ON_3}jobs:\n  - {{name: a, command: 'true', failure_handler: h}}\n")
    daemon.wait(wf)
    same = f"name: more\n{RETRY_ON_3}jobs:\n  - {{name: b, command: 'true', failure_handler: h}}\n"
    add(daemon, wf, same)
    assert daemon.jobs(wf)["b"].failure_handler == "h"
    flaky = """\
        name: more
        failure_handlers:
          - name: fresh
            rules: [{exit_codes: [7], max_retries: 2}]
        jobs:
          - {name: flaky, command: 'if [ -f once ]; then exit 0; fi; touch once; exit 7', failure_handler: fresh}
        """
    added = add(daemon, wf, flaky)
    assert daemon.wait(wf).counts == {"completed": 3}
    assert [a.return_code for a in daemon.attempts(added["flaky"])] == [7, 0]


def test_a_handler_named_as_the_workflows_with_other_rules_is_refused(daemon):
    wf = daemon.submit(f"name: h\n{RETRY_ON_3}jobs:\n  - {{name: a, command: 'true', failure_handler: h}}\n")
    daemon.wait(wf)
    other = RETRY_ON_3.replace("max_retries: 2", "max_retries: 5")
    before = (daemon.jobs(wf), daemon.events(wf))
    with pytest.raises(RpcError) as info:
        add(daemon, wf, f"name: more\n{other}jobs:\n  - {{name: b, command: 'true', failure_handler: h}}\n")
    assert info.value.code == -32602
    assert "failure handler 'h' has other rules than the workflow's" in info.value.message
    assert (daemon.jobs(wf), daemon.events(wf)) == before


REFUSED = [
    ("name", "jobs:\n  - {name: a, command: 'true'}\n", {}, -32602, "workflow {wf} already has a job named 'a'"),
    (
        "unknown key",
        "jobs:\n  - {name: b, command: 'true'}\n",
        {"x": ["a"]},
        -32602,
        "depends_on_ids names 'x', which is not one of the jobs added",
    ),
    (
        "other workflow",
        "jobs:\n  - {name: b, command: 'true'}\n",
        {"b": ["other"]},
        -32602,
        "depends_on_ids['b'] names job {other}, which is not a job of workflow {wf}",
    ),
    (
        "no such job",
        "jobs:\n  - {name: b, command: 'true'}\n",
        {"b": [999999]},
        -32602,
        "names job 999999, which is not a job of workflow {wf}",
    ),
    (
        "files",
        "files:\n  - {name: f, path: f.txt}\njobs:\n  - {name: b, command: 'true', output_files: [f]}\n",
        {},
        -32602,
        "`files` are not supported when adding jobs",
    ),
    (
        "datasets",
        "datasets:\n  - {name: d, path: d}\njobs:\n  - {name: b, command: 'true', output_datasets: [d]}\n",
        {},
        -32602,
        "`datasets` are not supported when adding jobs",
    ),
    (
        "execution config",
        "execution_config: {limit_resources: false}\njobs:\n  - {name: b, command: 'true'}\n",
        {},
        -32602,
        "`execution_config` ",
    ),
    (
        "stdio",
        "execution_config: {stdio: {mode: none}}\njobs:\n  - {name: b, command: 'true'}\n",
        {},
        -32602,
        "`execution_config` ",
    ),
    (
        "user data",
        "user_data:\n  - {name: u, data: 1}\njobs:\n  - {name: b, command: 'true'}\n",
        {},
        -32602,
        "`user_data` are not supported when adding jobs",
    ),
    (
        "actions",
        "actions:\n  - {trigger_type: on_workflow_start, action_type: run_commands, commands: ['true']}\n"
        "jobs:\n  - {name: b, command: 'true'}\n",
        {},
        -32602,
        "`actions` are not supported when adding jobs",
    ),
    (
        "a workflow setting",
        "use_pending_failed: true\njobs:\n  - {name: b, command: 'true'}\n",
        {},
        -32602,
        "`use_pending_failed` is the workflow's own setting",
    ),
    ("syntax", "jobs:\n  - {name: b, command: 'true'\n", {}, -32010, "more.yaml:4: cannot parse"),
    ("unknown dependency", "jobs:\n  - {name: b, command: 'true', depends_on: [a]}\n", {}, -32010, "more.yaml:"),
]


def test_each_refusal_says_why_and_changes_nothing(daemon):
    wf = daemon.submit("name: base\njobs:\n  - {name: a, command: 'true'}\n")
    other_wf = daemon.submit("name: other\njobs:\n  - {name: o, command: 'true'}\n")
    daemon.wait(wf), daemon.wait(other_wf)
    ids = {"a": daemon.jobs(wf)["a"].id, "other": daemon.jobs(other_wf)["o"].id}
    before = (daemon.jobs(wf), daemon.events(wf))
    for what, jobs, outside, code, message in REFUSED:
        outside = {k: [ids.get(v, v) for v in vs] for k, vs in outside.items()}
        with pytest.raises(RpcError) as info:
            add(daemon, wf, f"name: more\n{jobs}", outside, spec_path="more.yaml")
        assert info.value.code == code, (what, info.value.message)
        assert message.format(wf=wf, other=ids["other"]) in info.value.message, (what, info.value.message)
        assert "\n" not in info.value.message
    assert (daemon.jobs(wf), daemon.events(wf)) == before


def test_a_canceled_workflow_takes_no_new_jobs(daemon):
    wf = daemon.submit(f"name: stop\njobs:\n  - {{name: slow, command: '{WAITS_FOR_GO}'}}\n")
    daemon.call("workflows.cancel", {"workflow_id": wf})
    before = (daemon.jobs(wf), daemon.events(wf))
    with pytest.raises(RpcError) as info:
        add(daemon, wf, "name: more\njobs:\n  - {name: b, command: 'true'}\n")
    assert info.value.code == -32009 and f"workflow {wf} was canceled" in info.value.message
    assert (daemon.jobs(wf), daemon.events(wf)) == before


def test_the_same_request_twice_with_one_idempotency_key_adds_once(daemon):
    from torcctl.transport import _UnixConnection

    wf = daemon.submit("name: once\njobs:\n  - {name: a, command: 'true'}\n")
    params = {"workflow_id": wf, "spec_text": "name: more\njobs:\n  - {name: b, command: 'true'}\n"}
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": "workflows.add_jobs", "params": params})

    def post(key: str) -> dict:
        c = _UnixConnection(daemon.socket, 30)
        try:
            c.request("POST", "/rpc", body, {"Idempotency-Key": key})
            return msgspec.json.decode(c.getresponse().read())
        finally:
            c.close()

    first, again, other = post("add:1"), post("add:1"), post("add:2")
    assert first["result"] == again["result"] == {"job_ids": {"b": daemon.jobs(wf)["b"].id}}
    assert "already has a job named 'b'" in other["error"]["message"]
    assert sorted(daemon.jobs(wf)) == ["a", "b"]
    assert [e.kind for e in daemon.events(wf)].count("jobs_added") == 1


def test_an_allocations_credential_cannot_add_jobs():
    from torcd.credentials import WORKER_METHODS

    assert "workflows.add_jobs" not in WORKER_METHODS


def test_a_job_needing_more_gpus_than_the_daemon_has_is_refused(daemon):
    wf = daemon.submit("name: g\njobs:\n  - {name: a, command: 'true'}\n")
    spec = """\
        name: more
        resource_requirements: [{name: gpu, num_gpus: 2}]
        jobs:
          - {name: b, command: 'true', resource_requirements: gpu}
        """
    with pytest.raises(RpcError) as info:
        add(daemon, wf, spec)
    assert info.value.code == -32602 and "job 'b' needs 2 GPUs and this daemon has 0" in info.value.message
    assert sorted(daemon.jobs(wf)) == ["a"]


def test_jobs_added_to_a_slurm_workflow_run_on_its_workers_and_one_fitting_no_node_is_refused(make_daemon, tmp_path):
    from test_workers import worker

    d = make_daemon().start("--listen", "127.0.0.1:0")
    spec = "name: s\nslurm_schedulers: [{name: nodes, node_cpus: 2}]\njobs:\n  - {name: a, command: 'true'}\n"
    wf = d.call("workflows.create", {"spec_text": spec, "cwd": str(tmp_path), "executor": "slurm"}, WorkflowSummary).id
    with pytest.raises(RpcError) as info:
        add(d, wf, "name: more\njobs:\n  - {name: wide, command: 'true', num_cpus: 3}\n")
    assert "job 'wide' fits no node of scheduler 'nodes': needs 3 CPUs; a node has 2" in info.value.message
    add(d, wf, "name: more\njobs:\n  - {name: b, command: 'true'}\n")
    assert worker(d, wf, "--cpus", "2").wait(60) == 0
    assert d.wait(wf).counts == {"completed": 2}


def test_added_jobs_take_the_workflows_stdio_unless_they_set_their_own(daemon, tmp_path):
    wf = daemon.submit(
        "name: quiet\nexecution_config: {stdio: {mode: none}}\n"
        f"jobs:\n  - {{name: a, command: '{WAITS_FOR_GO}'}}\n",
        cwd=tmp_path,
    )
    ids = add(
        daemon,
        wf,
        "name: more\njobs:\n  - {name: b, command: 'echo b'}\n"
        "  - {name: c, command: 'echo c', stdio: {mode: separate}}\n",
    )
    (tmp_path / "go").touch()
    assert daemon.wait(wf, timeout=30).counts == {"completed": 3}
    ((b,), (c,)) = daemon.attempts(ids["b"]), daemon.attempts(ids["c"])
    assert (b.stdout_path, b.stderr_path) == ("", "") and open(c.stdout_path).read() == "c\n"
