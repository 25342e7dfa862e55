"""ActionRunner in-process: a workflow's actions run when they come due, one at a time, each an
action_started and an action_finished event; a failing command stops its action, never a job."""

from __future__ import annotations

import pytest
from inproc import (
    FakeSlurm,
    eventually,
    make_actions,
    make_allocations,
    record_exit,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    running,
    start_ready,
    statuses,
    submit,
)

from torcd import events as E


def with_action(action: str, jobs: str = "  - {name: a, command: 'true'}\n", head: str = "") -> str:
    return f"name: w\n{head}actions:\n  - {action}\njobs:\n{jobs}"


def start_commands(*commands: str) -> str:
    quoted = ", ".join(repr(c) for c in commands)
    return f"{{trigger_type: on_workflow_start, action_type: run_commands, commands: [{quoted}]}}"


async def finished(rig, n: int = 1) -> list:
    await eventually(lambda: len(rig.of(E.ActionFinished)) >= n, what=f"{n} finished actions")
    return rig.of(E.ActionFinished)


@pytest.mark.parametrize(
    "commands,status,rc,message,made",
    [
        (["echo one > one.txt", "echo two > two.txt"], "done", 0, "ran 2 commands", {"one.txt", "two.txt"}),
        (
            ["echo one > one.txt", "exit 3", "echo three > three.txt"],
            "failed",
            3,
            "command 2 of 3 failed: command exited 3",
            {"one.txt"},
        ),  # stops at the first that fails
        (["kill -9 $$"], "failed", 137, "command 1 of 1 failed: command killed by signal 9", set()),
    ],
)
async def test_commands_run_in_turn_in_the_workflows_directory(rig, commands, status, rc, message, made):
    runner = await make_actions(rig)
    async with running(runner):
        wf = await submit(rig, with_action(start_commands(*commands)))
        (done,) = await finished(rig)
    assert (done.status, done.return_code) == (status, rc) and done.message.startswith(message)
    assert {p.name for p in rig.tmp.glob("*.txt")} == made
    assert rig.kinds().index("action_started") < rig.kinds().index("action_finished")
    assert (rig.tmp / "output" / "actions" / f"action_wf{wf}_0_r1.o").exists()


async def test_a_failed_action_changes_no_job(rig):
    runner = await make_actions(rig)
    async with running(runner):
        wf = await submit(rig, with_action(start_commands("exit 1")))
        await finished(rig)
    assert (await statuses(rig, wf))["a"] == "ready"  # held until the start action ran, then released


async def test_an_action_sees_its_torc_variables(rig):
    runner = await make_actions(rig)
    async with running(runner):
        wf = await submit(rig, with_action(start_commands('echo "$TORC_WORKFLOW_ID $TORC_ACTION_TRIGGER" > env.txt')))
        await finished(rig)
    assert (rig.tmp / "env.txt").read_text() == f"{wf} on_workflow_start\n"


async def test_stopping_a_workflows_action_ends_its_command_with_the_reason(rig):
    runner = await make_actions(rig)
    async with running(runner):
        wf = await submit(rig, with_action(start_commands("sleep 30", "touch after.txt")))
        await eventually(lambda: runner._procs, what="the command to start")
        await runner.stop_workflow(wf, "workflow canceled")
        (done,) = await finished(rig)
    assert done.status == "failed" and done.message == "command 1 of 2 stopped: workflow canceled"
    assert not (rig.tmp / "after.txt").exists()


async def test_the_completion_action_runs_when_the_last_job_ends(rig):
    runner = await make_actions(rig)
    async with running(runner):
        wf = await submit(
            rig,
            with_action(
                "{trigger_type: on_workflow_complete, action_type: run_commands, commands: ['touch complete.txt']}"
            ),
        )
        assert await rig.actions.due_actions([wf]) == []  # not while its job has not ended
        await record_exit(rig, (await start_ready(rig))["a"], 0)
        (done,) = await finished(rig)
    assert done.status == "done" and (rig.tmp / "complete.txt").exists()
    assert (await rig.queries.workflow(wf)).state == "done"


async def test_schedule_nodes_submits_allocations_for_its_scheduler(rig):
    slurm = FakeSlurm()
    runner = await make_actions(rig, make_allocations(rig, slurm))
    spec = with_action(
        "{trigger_type: on_workflow_start, action_type: schedule_nodes, scheduler_type: slurm, scheduler: s, "
        "num_allocations: 2}",
        head="slurm_schedulers:\n  - {name: s, account: a, node_cpus: 4}\n",
    )
    async with running(runner):
        wf = await submit(rig, spec, "slurm")
        (done,) = await finished(rig)
    assert done.status == "done" and done.message == "submitted 2 allocations for scheduler 's'"
    assert len(slurm.submitted) == 2 and len(await rig.slurm.allocations(wf)) == 2


async def test_schedule_nodes_on_a_local_workflow_fails_and_submits_nothing(rig):
    slurm = FakeSlurm()
    runner = await make_actions(rig, make_allocations(rig, slurm))
    spec = with_action(
        "{trigger_type: on_workflow_start, action_type: schedule_nodes, scheduler_type: slurm, scheduler: s}",
        head="slurm_schedulers:\n  - {name: s, account: a, node_cpus: 4}\n",
    )
    async with running(runner):
        await submit(rig, spec)
        (done,) = await finished(rig)
    assert done.status == "failed" and "submit-slurm" in done.message and slurm.submitted == []


async def test_reconcile_runs_again_an_action_an_earlier_daemon_left_running(rig):
    wf = await submit(rig, with_action(start_commands("echo ran >> ran.txt")))
    (run,) = await rig.actions.due_actions([wf])
    assert await rig.actions.start_action(run)  # then that daemon died
    runner = await make_actions(rig)
    await runner.reconcile()
    async with running(runner):
        interrupted, done = await finished(rig, 2)
    assert (interrupted.status, done.status) == ("interrupted", "done")
    assert (rig.tmp / "ran.txt").read_text() == "ran\n"
