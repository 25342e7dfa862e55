"""The shipped examples run to the end with `torcctl run` (fixed seeds, so outcomes are fixed)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from conftest import REPO


@pytest.fixture
def workdir(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


@pytest.mark.parametrize(
    "spec,jobs",
    [("diamond.yaml", 4), ("sweep.yaml", 7), ("failure_handler_simulation.yaml", 10), ("file_diamond.yaml", 4)],
)
def test_example_runs_to_completion(daemon, workdir, spec, jobs):
    code, out, err = daemon.ctl("run", f"examples/{spec}", cwd=workdir)
    assert code == 0, out + err
    assert f"completed  {jobs}" in out


@pytest.mark.parametrize("spec", ["sweep100.yaml", "sweep100.json5", "sweep100.kdl"])
def test_the_100_job_sweep_runs_alike_in_yaml_json5_and_kdl(daemon, workdir, spec):
    code, out, err = daemon.ctl("run", "--quiet", f"examples/{spec}", cwd=workdir)
    assert code == 0 and "completed  101" in out, out + err
    summary = daemon.jobs(1)["summary"]
    assert open(daemon.attempts(summary.id)[0].stdout_path).read() == "sum of squares 338350\n"


def test_the_stdio_example_keeps_what_each_job_asks_for(daemon, workdir):
    code, out, err = daemon.ctl("run", "--quiet", "examples/stdio.yaml", cwd=workdir)
    assert code == 0, out + err
    kept = sorted(p.name for p in (workdir / "output" / "job_stdio").iterdir())
    assert kept == ["job_wf1_j2_r1_a1.e", "job_wf1_j2_r1_a1.o", "job_wf1_j3_r1_a1.e"]
    assert (workdir / "output" / "job_stdio" / "job_wf1_j3_r1_a1.e").read_text() == "err\n"


def test_the_zip_sweep_pairs_its_values(daemon, workdir):
    code, out, _ = daemon.ctl("run", "--quiet", "examples/zip_sweep.yaml", cwd=workdir)
    assert code == 0 and "completed  3" in out
    assert sorted(daemon.jobs(1)) == ["run_n128_dt0.005", "run_n256_dt0.0025", "run_n64_dt0.01"]


def test_diamond_computes_its_result(daemon, workdir):
    code, _, _ = daemon.ctl("run", "--quiet", "examples/diamond.yaml", cwd=workdir)
    assert code == 0
    assert (workdir / "output" / "diamond_wf1" / "result.txt").read_text() == "even 250500\nodd 250000\n"


def test_simulation_example_retries_through_its_handler(daemon, workdir):
    code, out, _ = daemon.ctl("run", "examples/failure_handler_simulation.yaml", cwd=workdir)
    assert code == 0
    decided = [line for line in out.splitlines() if "retry_decided" in line]
    assert decided and all("action=retry" in d or "action=recover" in d for d in decided)
    assert (workdir / "output" / "recovery.log").exists()


def test_failure_handler_demo_parks_the_unhandled_code_and_finishes_after_classification(daemon, workdir):
    code, out, _ = daemon.ctl("run", "examples/failure_handler_demo.yaml", cwd=workdir)
    assert code == 1
    assert "pending_failed" in out and "torcctl jobs retry" in out
    for needle in ("rc=10  rule=0  action=recover", "rc=12  rule=2  action=retry", "rc=11  rule=1  action=recover"):
        assert needle in out
    pending = daemon.jobs(1, "pending_failed")
    assert list(pending) == ["flaky_2"] and pending["flaky_2"].return_code == 1
    assert daemon.jobs(1)["summary"].status == "blocked"
    code, _, _ = daemon.ctl("jobs", "retry", str(pending["flaky_2"].id), "--reason", "transient")
    assert code == 0
    info = daemon.wait(1, state="done")
    assert info.counts == {"completed": 8}
    fixed = daemon.jobs(1)
    assert fixed["fails_with_10_twice"].attempt_id == 3 and fixed["fails_with_12_once"].attempt_id == 2


def test_resource_recovery_example_recovers_an_oom_job_both_ways(daemon, workdir):
    code, out, _ = daemon.ctl("run", "examples/resource_recovery.yaml", cwd=workdir)
    assert code == 1 and "failed" in out
    jobs = daemon.jobs(1)
    assert (jobs["grows_during_run"].status, jobs["recovered_after_run"].status) == ("completed", "failed")
    during = daemon.attempts(jobs["grows_during_run"].id)
    assert [(a.cause, a.memory_limit) for a in during] == [("oom", 100 << 20), (None, 400 << 20)]
    assert daemon.attempts(jobs["recovered_after_run"].id)[-1].cause == "oom"
    code, out, _ = daemon.ctl("watch", "1", "--recover", "--memory-multiplier", "2", cwd=workdir)
    assert code == 0 and "recovered_after_run (job 2): oom, recorded as oom; retry with memory 100.0 MiB" in out
    assert daemon.jobs(1)["recovered_after_run"].memory_bytes >= 200 << 20
    assert daemon.wait(1).counts == {"completed": 3}


def test_the_table_sweep_makes_a_job_per_row(daemon, workdir):
    code, out, err = daemon.ctl("run", "--quiet", "examples/table_sweep.yaml", cwd=workdir)
    assert code == 0 and "completed  5" in out, out + err
    assert sorted(daemon.jobs(1)) == [
        "solve_cg_4096",
        "solve_cg_65536",
        "solve_gmres_16384",
        "solve_gmres_4096",
        "summary",
    ]
    summary = daemon.attempts(daemon.jobs(1)["summary"].id)[0]
    assert open(summary.stdout_path).read().splitlines() == [
        "cg 4096 1e-06",
        "cg 65536 1e-10",
        "gmres 16384 1e-08",
        "gmres 4096 1e-06",
    ]


def test_the_variables_example_fills_its_variables_and_env_and_starts_the_urgent_job_first(make_daemon, workdir):
    d = make_daemon(max_parallel_jobs=1).start()
    code, out, err = d.ctl("run", "--quiet", "examples/variables.yaml", cwd=workdir)
    assert code == 0 and "completed  5" in out, out + err
    assert [e.job_name for e in d.events(1) if e.kind == "job_started"][:1] == ["urgent"]
    scratch = workdir / "output" / "scratch"
    assert (scratch / "first.txt").read_text() == "run7 urgent first\n"
    assert (scratch / "shard_2.txt").read_text() == "run7 main shard 2\n"


def test_the_checkpointing_example_resumes_after_its_time_limit(daemon, workdir):
    code, out, err = daemon.ctl("run", "--quiet", "examples/execution_config.yaml", cwd=workdir)
    assert code == 0 and "completed  1" in out, out + err
    attempts = daemon.attempts(daemon.jobs(1)["simulate"].id)
    assert len(attempts) >= 2 and (attempts[0].return_code, attempts[0].cause) == (152, "timeout")
    assert open(attempts[0].stdout_path).read().startswith("stopped at step ")
    assert (workdir / "output" / "checkpoint.txt").read_text() == "30\n"


def test_the_dynamic_jobs_example_refines_each_lineage_until_it_converges(make_daemon, workdir):
    # its jobs run `python3`: this interpreter, which has torcctl
    d = make_daemon().start(env={"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"})
    code, out, err = d.ctl("run", "--quiet", "examples/dynamic_jobs.yaml", cwd=workdir)
    assert code == 0 and "completed  34" in out, out + err
    jobs = d.jobs(1)
    assert sum(j.lineage == "a" for j in jobs.values()) == 14 and sum(j.lineage == "b" for j in jobs.values()) == 18
    for lineage, steps in (("a", 7), ("b", 9)):
        info = d.call("jobs.lineage", {"workflow_id": 1, "lineage": lineage})
        assert (info["iterations"], info["converged"], info["final"]["steps"]) == (steps, True, steps)
        assert info["final"]["residual"] < 0.01 <= info["state"]["residual"]  # the last step halved it
