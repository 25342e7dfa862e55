"""schedule_nodes actions on the real Slurm cluster: allocations come when the jobs they are for
become ready (Torc's subgraph pattern), not at submission."""

from __future__ import annotations

from test_slurm import allocations, pytestmark, sdaemon, submit_slurm  # noqa: F401  (fixture and Slurm check)

SUBGRAPH = """\
name: stages
slurm_schedulers:
  - {name: first_stage, partition: debug, walltime: "00:05:00", cpus: 1, mem: 100M}
  - {name: second_stage, partition: debug, walltime: "00:05:00", cpus: 2, mem: 100M}
actions:
  - {trigger_type: on_jobs_ready, action_type: schedule_nodes, jobs: [first], scheduler: first_stage,
     scheduler_type: slurm}
  - trigger_type: on_jobs_ready
    action_type: schedule_nodes
    job_name_regexes: ["^second_"]
    scheduler: second_stage
    scheduler_type: slurm
    num_allocations: 1
jobs:
  - {name: first, command: "sleep 2", scheduler: first_stage}
  - name: "second_{i}"
    command: echo $TORC_JOB_NAME
    scheduler: second_stage
    depends_on: [first]
    parameters: {i: "1:2"}
"""


def test_an_on_jobs_ready_action_submits_the_allocation_for_the_next_stage(sdaemon):
    wf = submit_slurm(sdaemon, SUBGRAPH)
    assert sdaemon.wait(wf, timeout=180).counts == {"completed": 3}
    allocs = allocations(sdaemon, wf)
    assert [(a.scheduler, a.reason) for a in allocs] == [
        ("first_stage", "action 0 (on_jobs_ready)"),
        ("second_stage", "action 1 (on_jobs_ready)"),
    ]
    events = sdaemon.events(wf)
    first_done = next(e.seq for e in events if e.kind == "job_completed" and e.job_name == "first")
    finished = next(e for e in events if e.kind == "action_finished" and e.rule_index == 1)
    assert finished.seq > first_done and finished.status == "done"
    assert finished.message == "submitted 1 allocations for scheduler 'second_stage'"


def test_the_subgraphs_example_runs_each_stage_in_allocations_its_actions_submit(sdaemon):
    import shutil

    from conftest import REPO

    shutil.copytree(REPO / "examples", sdaemon.tmp / "examples")
    code, out, err = sdaemon.ctl("submit-slurm", "examples/subgraphs.kdl", cwd=sdaemon.tmp)
    assert code == 0 and "schedule_nodes actions submit them" in err, err
    wf = int(out.strip())
    assert sdaemon.wait(wf, timeout=300).counts == {"completed": 11}
    assert (sdaemon.tmp / "output/subgraphs/final.txt").read_text() == "a 45\nb 450\n"
    allocs = allocations(sdaemon, wf)
    assert sorted(a.scheduler for a in allocs) == [
        "last_stages",
        "last_stages",
        "prep_stage",
        "work_a_stage",
        "work_b_stage",
    ]
    assert all(a.reason.startswith("action ") for a in allocs)
