"""Workflow actions: commands run when a workflow starts, when chosen jobs are ready or done, and
when the workflow completes; allocations submitted for a scheduler. Each firing is an event."""

from __future__ import annotations

import shutil

import pytest
from conftest import REPO

from torcd.core.actions import Progress, is_due
from torcd.errors import SpecError
from torcd.services.processes import is_alive
from torcd.spec.parse import on_slurm, parse_spec


@pytest.mark.parametrize(
    "trigger, selected, ready, finished, due",
    [
        ("on_workflow_start", 3, 0, 0, True),
        ("on_workflow_complete", 3, 3, 2, False),
        ("on_workflow_complete", 3, 3, 3, True),
        ("on_jobs_complete", 2, 2, 1, False),
        ("on_jobs_complete", 2, 2, 2, True),
        ("on_jobs_ready", 2, 1, 0, False),  # all of them, not each
        ("on_jobs_ready", 2, 2, 0, True),
        ("on_jobs_ready", 2, 2, 2, True),  # became ready, and ended since: still came
        ("on_jobs_ready", 0, 0, 0, False),
    ],
)
def test_when_an_action_is_due(trigger, selected, ready, finished, due):
    assert is_due(trigger, Progress(selected, ready, finished)) is due


def kinds(d, wf: int) -> list[str]:
    out = []
    for e in d.events(wf):
        if e.kind.startswith("action_"):
            out.append(f"{e.kind}[{e.rule_index}]")
        elif e.kind in ("job_started", "job_completed"):
            out.append(f"{e.kind}:{e.job_name}")
        elif e.kind == "workflow_done":
            out.append(e.kind)
    return out


def test_the_actions_example_runs_setup_first_then_after_its_jobs_then_at_the_end(daemon):
    shutil.copytree(REPO / "examples", daemon.tmp / "examples")
    code, out, err = daemon.ctl("run", "examples/actions.yaml", cwd=daemon.tmp)
    assert code == 0, out + err
    assert (
        daemon.tmp / "output/actions_demo/report.txt"
    ).read_text() == "started\nsimulations done: 3\nworkflow complete\n"
    seen = kinds(daemon, 1)
    assert seen.index("action_finished[0]") < min(i for i, k in enumerate(seen) if k.startswith("job_started"))
    last_sim = max(i for i, k in enumerate(seen) if k.startswith("job_completed:simulate_"))
    assert last_sim < seen.index("action_started[1]") < seen.index("action_finished[1]")
    assert seen.index("action_finished[1]") < seen.index("action_started[2]")
    assert seen[-2:] == ["action_finished[2]", "workflow_done"]  # the workflow is done once its actions ran
    finished = [e for e in daemon.events(1) if e.kind == "action_finished"]
    assert [(e.status, e.return_code) for e in finished] == [("done", 0)] * 3
    assert "action_finished  rc=0  actions[2]" in out and "ran 2 commands" in out
    assert (daemon.tmp / "output/actions/action_wf1_2_r1.o").read_text().endswith("workflow complete\n")


FAILING = """\
name: failing_action
actions:
  - trigger_type: on_workflow_complete
    action_type: run_commands
    commands: ["echo one > one.txt", "exit 3", "echo three > three.txt"]
  - trigger_type: on_jobs_ready
    action_type: run_commands
    jobs: [b]
    persistent: true
    commands: ["echo ready >> ready.txt"]
jobs:
  - {name: a, command: "true"}
  - {name: b, command: "true", depends_on: [a]}
"""


def test_a_failed_command_stops_its_action_is_recorded_and_changes_no_job(daemon):
    wf = daemon.submit(FAILING)
    assert daemon.wait(wf).counts == {"completed": 2}
    (failed,) = [e for e in daemon.events(wf) if e.kind == "action_finished" and e.rule_index == 0]
    assert (failed.status, failed.return_code) == ("failed", 3)
    assert failed.message.startswith("command 2 of 3 failed: command exited 3; output in ")
    assert (daemon.tmp / "one.txt").exists() and not (daemon.tmp / "three.txt").exists()
    code, out, _ = daemon.ctl("events", str(wf))
    assert "action_finished  rc=3  actions[0]  action=run_commands  -> failed  — command 2 of 3 failed" in out


def test_after_a_reset_persistent_actions_fire_again_and_the_others_do_not(daemon):
    wf = daemon.submit(FAILING)
    daemon.wait(wf)
    daemon.ctl("workflows", "reset-status", str(wf))
    daemon.wait(wf)
    started = [e.rule_index for e in daemon.events(wf) if e.kind == "action_started"]
    assert sorted(started) == [0, 1, 1]
    assert (daemon.tmp / "ready.txt").read_text() == "ready\nready\n"


def test_an_action_interrupted_by_kill9_is_stopped_and_runs_again_before_its_jobs(daemon):
    """Found in review: the restarted daemon marked it failed and started the workflow's jobs at
    once while the old `sleep 8; touch ready_flag` still ran. Now the leftover is stopped and
    the action runs again from its first command; the jobs wait for it as before."""
    command = (
        "echo $$ >> pids; n=$(wc -l < pids); touch started.$n; until [ -e go ]; do sleep 0.02; done; touch ready_flag"
    )
    spec = (
        "name: killed\nactions:\n  - {trigger_type: on_workflow_start, action_type: run_commands, "
        f"commands: ['{command}']}}\njobs:\n  - {{name: a, command: 'test -e ready_flag'}}\n"
    )
    wf = daemon.submit(spec)
    daemon.wait_for(lambda: (daemon.tmp / "started.1").exists(), what="the action to start")
    assert daemon.jobs(wf)["a"].status == "ready"  # held until the start action has run
    daemon.kill9()
    daemon.restart()
    daemon.wait_for(lambda: (daemon.tmp / "started.2").exists(), what="the action to run again")
    first = int((daemon.tmp / "pids").read_text().split()[0])
    daemon.wait_for(lambda: not is_alive(first), timeout=10, what="the leftover copy to be stopped")
    assert daemon.jobs(wf)["a"].status == "ready"  # still held: the action has not finished
    (daemon.tmp / "go").touch()
    assert daemon.wait(wf).counts == {"completed": 1}
    finished = [(e.status, e.message) for e in daemon.events(wf) if e.kind == "action_finished"]
    assert (
        finished[0]
        == ("interrupted", "interrupted: the daemon stopped while it ran; it runs again from its first command")
        and finished[1][0] == "done"
    ), finished
    assert len((daemon.tmp / "pids").read_text().split()) == 2


def test_cancel_and_delete_stop_a_running_action(daemon):
    """Found in review: an action wrote a file 26 s after its workflow was deleted."""
    long_action = "echo $$ > {name}.pid; until [ -e never ]; do sleep 0.02; done; touch {name}.late"
    canceled = daemon.submit(
        "name: c\nactions:\n  - {trigger_type: on_workflow_start, action_type: run_commands, "
        f"commands: ['{long_action.format(name='c')}']}}\njobs:\n  - {{name: a, command: 'true'}}\n",
        name="c.yaml",
    )
    deleted = daemon.submit(
        "name: d\nactions:\n  - {trigger_type: on_workflow_complete, action_type: run_commands, "
        f"commands: ['{long_action.format(name='d')}']}}\njobs:\n  - {{name: a, command: 'true'}}\n",
        name="d.yaml",
    )
    pid = {}
    for name in "cd":
        path = daemon.tmp / f"{name}.pid"
        daemon.wait_for(lambda: path.exists() and path.read_text().strip(), what=f"action {name} to start")
        pid[name] = int(path.read_text())
    assert daemon.ctl("workflows", "cancel", str(canceled))[0] == 0
    assert not is_alive(pid["c"])
    (finished,) = [e for e in daemon.events(canceled) if e.kind == "action_finished"]
    assert (finished.status, finished.message) == ("failed", "command 1 of 1 stopped: the workflow was canceled")
    assert daemon.ctl("workflows", "delete", str(deleted))[0] == 0
    assert not is_alive(pid["d"])
    assert not (daemon.tmp / "c.late").exists() and not (daemon.tmp / "d.late").exists()
    assert daemon.client.ping(2)


def test_a_spec_meant_for_slurm_is_refused_by_submit_and_run_naming_submit_slurm(daemon, tmp_path):
    """Found in review: `torcctl submit` ran a spec with schedule_nodes actions on the login node,
    recording only the actions' failures. Torc's `submit` sends such a spec to Slurm."""
    scheduled = (
        "name: local\nslurm_schedulers:\n  - {name: s, account: a}\nactions:\n"
        "  - {trigger_type: on_workflow_start, action_type: schedule_nodes, scheduler: s, "
        "scheduler_type: slurm}\njobs:\n  - {name: a, command: 'touch ran'}\n"
    )
    for name, spec in (
        ("actions.yaml", scheduled),
        ("schedulers.yaml", "name: s\nslurm_schedulers:\n  - {name: s}\njobs:\n  - {name: a, command: 'touch ran'}\n"),
    ):
        (tmp_path / name).write_text(spec)
        for command in ("submit", "run"):
            code, out, err = daemon.ctl(command, name)
            assert (
                code == 2
                and "this workflow is meant for Slurm (it has slurm_schedulers): submit it with `torcctl submit-slurm`"
                in err
                and len(err.strip().splitlines()) == 1
            ), (command, err)
    assert daemon.call("workflows.list") == [] and not (tmp_path / "ran").exists()


BASE = """\
name: checked
slurm_schedulers:
  - {name: big, account: a}
actions:
  - trigger_type: on_jobs_complete
    action_type: run_commands
    jobs: [a]
    commands: ["true"]
jobs:
  - {name: a, command: "true"}
  - {name: b, command: "true"}
"""


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("jobs: [a]", "jobs: [zz]"),
            "wf.yaml:7: action names job 'zz', which does not exist (at $.actions[0].jobs[0])",
        ),
        (
            ("jobs: [a]", "job_name_regexes: ['^q']"),
            "wf.yaml:7: job_name_regexes entry '^q' matches no job (at $.actions[0].job_name_regexes[0])",
        ),
        (
            ("    jobs: [a]\n", ""),
            "wf.yaml:5: an on_jobs_complete action needs `jobs` or `job_name_regexes` (at $.actions[0])",
        ),
        (
            ("on_jobs_complete", "on_workflow_start"),
            "wf.yaml:5: an on_workflow_start run_commands action is about the "
            "whole workflow; it takes no `jobs` or `job_name_regexes` (only a "
            "schedule_nodes action at the start names the jobs its allocations "
            "are for) (at $.actions[0])",
        ),
        (
            ('    commands: ["true"]\n', ""),
            "wf.yaml:5: a run_commands action needs `commands` (a list of shell commands) (at $.actions[0])",
        ),
        (
            (
                "action_type: run_commands",
                "action_type: schedule_nodes\n    scheduler: small\n    scheduler_type: slurm",
            ),
            "wf.yaml:7: unknown scheduler 'small' (big) (at $.actions[0].scheduler)",
        ),
        (
            ("action_type: run_commands", "action_type: schedule_nodes"),
            "wf.yaml:5: a schedule_nodes action needs `scheduler` and `scheduler_type: slurm` (at $.actions[0])",
        ),
        (
            ("on_jobs_complete", "on_worker_start"),
            "wf.yaml:5: Invalid enum value 'on_worker_start'; expected one of on_jobs_complete, on_jobs_ready, "
            "on_workflow_complete, on_workflow_start (at $.actions[0].trigger_type)",
        ),
    ],
)
def test_bad_actions_are_errors_with_their_line(change, message):
    text = BASE.replace(*change)
    assert text != BASE
    with pytest.raises(SpecError) as info:
        parse_spec(text, "wf.yaml")
    assert info.value.message == message


def test_validate_warns_about_torc_keys_that_change_nothing(tmp_path):
    import subprocess
    import sys

    spec = tmp_path / "wf.yaml"
    spec.write_text(BASE.replace("jobs: [a]", "jobs: [a]\n    max_parallel_jobs: 4"))
    run = subprocess.run([sys.executable, "-m", "torcctl", "validate", str(spec)], capture_output=True, text=True)
    assert run.returncode == 0 and f"{spec}:8: warning: max_parallel_jobs is not applied" in run.stdout


def test_a_canceled_workflow_fires_no_completion_action_and_a_reset_fires_it_at_the_new_end(daemon):
    spec = (
        "name: c\nactions:\n  - {trigger_type: on_workflow_complete, action_type: run_commands, "
        "commands: ['date +%s.%N >> fired.txt']}\njobs:\n  - {name: a, command: 'sleep 2; date +%s.%N > ended.txt'}\n"
    )
    wf = daemon.submit(spec)
    daemon.wait_for(lambda: daemon.jobs(wf)["a"].status == "running", what="a to run")
    daemon.call("workflows.cancel", {"workflow_id": wf})
    daemon.wait(wf, state="canceled")
    assert not [e for e in daemon.events(wf) if e.kind.startswith("action_")]
    daemon.ctl("workflows", "reset-status", str(wf))
    assert daemon.wait(wf).counts == {"completed": 1}
    (fired,) = (daemon.tmp / "fired.txt").read_text().split()
    assert float(fired) > float((daemon.tmp / "ended.txt").read_text())


def test_actions_waiting_for_their_turn_survive_a_restart(daemon):
    spec = (
        "name: turns\nactions:\n"
        "  - {trigger_type: on_workflow_start, action_type: run_commands, "
        "commands: ['touch first; until [ -e go ]; do sleep 0.02; done']}\n"
        "  - {trigger_type: on_workflow_start, action_type: run_commands, commands: ['touch second']}\n"
        "jobs:\n  - {name: a, command: 'true'}\n"
    )
    wf = daemon.submit(spec)
    daemon.wait_for(lambda: (daemon.tmp / "first").exists(), what="the first action to start")
    daemon.kill9()
    daemon.restart()
    (daemon.tmp / "go").touch()
    assert daemon.wait(wf).counts == {"completed": 1}
    assert (daemon.tmp / "second").exists()
    finished = [(e.rule_index, e.status) for e in daemon.events(wf) if e.kind == "action_finished"]
    assert finished == [(0, "interrupted"), (0, "done"), (1, "done")], finished


def test_a_completion_action_fires_when_the_last_job_ended_while_the_daemon_was_down(daemon):
    spec = (
        "name: down\nactions:\n  - {trigger_type: on_workflow_complete, action_type: run_commands, "
        "commands: ['touch fired']}\njobs:\n  - {name: a, command: 'sleep 1; touch ended'}\n"
    )
    wf = daemon.submit(spec)
    daemon.wait_for(lambda: daemon.jobs(wf)["a"].status == "running", what="a to run")
    daemon.kill9()
    daemon.wait_for(lambda: (daemon.tmp / "ended").exists(), what="a to end while the daemon is down")
    daemon.restart()
    assert daemon.wait(wf).counts == {"completed": 1}
    assert (daemon.tmp / "fired").exists()
    assert [e.status for e in daemon.events(wf) if e.kind == "action_finished"] == ["done"]


def test_a_daemon_started_from_an_action_or_a_job_neither_kills_itself_nor_takes_its_jobs_for_leftovers(daemon):
    """Found in review: a daemon autostarted by `torcctl` inside an action inherits TORC_ACTION_ID
    and TORC_API_URL; at its next start it found itself, and its jobs, among the action leftovers."""
    marks = {
        "TORC_ACTION_ID": "1",
        "TORC_JOB_ID": "1",
        "TORC_RUN_ID": "1",
        "TORC_ATTEMPT_ID": "1",
        "TORC_RETURN_CODE": "3",
        "TORC_API_URL": f"unix://{daemon.socket}",
    }
    daemon.stop()
    daemon.start(env=marks)
    wf = daemon.submit(
        "name: m\njobs:\n  - {name: a, command: 'echo $$ > a.pid; until [ -e go ]; do sleep 0.02; done'}\n"
    )
    daemon.wait_for(
        lambda: (daemon.tmp / "a.pid").exists() and (daemon.tmp / "a.pid").read_text().strip(), what="a to start"
    )
    daemon.kill9()
    daemon.start(env=marks)
    assert daemon.client.ping(2) and daemon.jobs(wf)["a"].status == "running"  # adopted, not killed
    (daemon.tmp / "go").touch()
    assert daemon.wait(wf).counts == {"completed": 1}


def test_a_schedule_nodes_action_at_the_start_names_the_jobs_its_allocations_are_for():
    """Torc's subgraphs example: stage 1's allocations come from an on_workflow_start action that
    lists its jobs; those jobs run there, and later stages get theirs from on_jobs_ready."""
    spec = parse_spec(
        """\
name: stages
slurm_schedulers:
  - {name: prep_sched, account: a}
  - {name: work_sched, account: a}
actions:
  - {trigger_type: on_workflow_start, action_type: schedule_nodes, scheduler: prep_sched, scheduler_type: slurm,
     jobs: [prep_a, prep_b]}
  - {trigger_type: on_jobs_ready, action_type: schedule_nodes, scheduler: work_sched, scheduler_type: slurm,
     job_name_regexes: ['^work_']}
jobs:
  - {name: prep_a, command: "true"}
  - {name: prep_b, command: "true"}
  - {name: work_1, command: "true", depends_on: [prep_a, prep_b]}
""",
        "wf.yaml",
    )
    assert {j.name: j.scheduler for j in spec.jobs} == {
        "prep_a": "prep_sched",
        "prep_b": "prep_sched",
        "work_1": "work_sched",
    }
    assert [(a.trigger, names) for a, names in spec.actions] == [
        ("on_workflow_start", ["prep_a", "prep_b"]),
        ("on_jobs_ready", ["work_1"]),
    ]


def test_jobs_no_action_names_run_in_the_allocations_of_a_start_action_that_names_none():
    """Torc's workflow_actions_simple_slurm: `setup` is named by no action; the on_workflow_start
    schedule_nodes action (no `jobs`) brings the allocation for the workflow as a whole. It was
    accepted by validate and then refused by submit-slurm ("no scheduler")."""
    spec = parse_spec(
        """\
name: simple
slurm_schedulers:
  - {name: setup_sched, account: a}
  - {name: work_sched, account: a}
actions:
  - {trigger_type: on_workflow_start, action_type: schedule_nodes, scheduler: setup_sched, scheduler_type: slurm}
  - {trigger_type: on_jobs_ready, action_type: schedule_nodes, scheduler: work_sched, scheduler_type: slurm,
     jobs: [work]}
jobs:
  - {name: setup, command: "true"}
  - {name: work, command: "true", depends_on: [setup]}
""",
        "wf.yaml",
    )
    assert {j.name: j.scheduler for j in spec.jobs} == {"setup": "setup_sched", "work": "work_sched"}
    on_slurm(spec, None)  # every job has its scheduler: submit-slurm takes it
