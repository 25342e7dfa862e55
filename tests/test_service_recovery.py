"""RecoveryRunner in-process: a rule's recovery script runs in the workflow's directory; exit 0
puts the job back to ready with the next attempt, anything else fails it."""

from __future__ import annotations

import pytest
from inproc import (
    eventually,
    make_recovery_runner,
    record_exit,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    running,
    start_ready,
    statuses,
    submit,
)

from torcd import events as E
from torcd.core.retry import Action, RetryDecision


def spec(script: str, timeout: float = 60) -> str:
    return (
        f"name: w\nfailure_handlers:\n  - name: h\n    rules:\n      - {{exit_codes: [20], max_retries: 3, "
        f"recovery_script: {script!r}, recovery_timeout: {timeout}}}\n"
        "jobs:\n  - {name: a, command: 'true', failure_handler: h}\n"
    )


async def recovering(rig, script: str, timeout: float = 60) -> int:
    """A workflow whose job exited 20 and was decided `recover` (as the RetryEngine decides it)."""
    wf = await submit(rig, spec(script, timeout))
    await record_exit(rig, (await start_ready(rig))["a"], 20)
    (failure,) = await rig.execution.failures_awaiting_decision()
    await rig.execution.apply_decisions([(failure, RetryDecision(Action.RECOVER, 0, "recover first"))])
    assert (await statuses(rig, wf))["a"] == "recovering"
    return wf


@pytest.mark.parametrize(
    "script,status,attempt,message",
    [
        (
            'test "$TORC_RETURN_CODE" = 20 && touch fixed',
            "ready",
            2,
            "recovery script succeeded; retrying as attempt 2",
        ),
        ("exit 3", "failed", 1, "recovery script exited 3"),
        ("./no-such-script.sh", "failed", 1, "recovery script not found: './no-such-script.sh' (exit 127)"),
        ("kill -9 $$", "failed", 1, "recovery script killed by signal 9 (exit 137)"),
    ],
)
async def test_the_scripts_exit_decides_the_jobs_next_status(rig, script, status, attempt, message):
    wf = await recovering(rig, script)
    runner = make_recovery_runner(rig)
    async with running(runner):
        rig.bus.publish(rig.of(E.RetryDecided))  # the decision, as the runner would have heard it
        await eventually(lambda: rig.of(E.RecoveryFinished), what="the recovery")
    (job,) = await rig.queries.jobs(wf)
    assert (job.status, job.attempt_id) == (status, attempt)
    assert rig.of(E.RecoveryFinished)[0].message == message
    assert (rig.tmp / "fixed").exists() is (status == "ready")  # ran in the workflow's directory


async def test_a_script_past_its_timeout_is_stopped_and_fails_the_job(rig):
    wf = await recovering(rig, "sleep 30", timeout=0.05)
    runner = make_recovery_runner(rig)
    async with running(runner):
        rig.bus.publish(rig.of(E.RetryDecided))
        await eventually(lambda: rig.of(E.RecoveryFinished), what="the recovery")
    assert (await statuses(rig, wf))["a"] == "failed"
    assert rig.of(E.RecoveryFinished)[0].message == "recovery script timed out after 0.05s"


async def test_reconcile_runs_again_the_scripts_left_recovering(rig):
    wf = await recovering(rig, "true")
    runner = make_recovery_runner(rig)
    await runner.reconcile()
    await eventually(lambda: rig.of(E.RecoveryFinished), what="the recovery")
    assert (await statuses(rig, wf))["a"] == "ready"


async def test_killing_a_jobs_script_fails_the_job(rig):
    wf = await recovering(rig, "sleep 30")
    runner = make_recovery_runner(rig)
    await runner.reconcile()
    (job_id,) = runner.running
    await eventually(lambda: runner.running[job_id] is not None, what="the script to start")
    await runner.kill([job_id])
    await eventually(lambda: rig.of(E.RecoveryFinished), what="the recovery")
    assert (await statuses(rig, wf))["a"] == "failed"
    assert rig.of(E.RecoveryFinished)[0].message == "recovery script killed by signal 15 (exit 143)"


async def test_stop_leaves_the_job_recovering_for_the_next_start(rig):
    wf = await recovering(rig, "sleep 30")
    runner = make_recovery_runner(rig)
    await runner.reconcile()
    await eventually(lambda: all(runner.running.values()), what="the script to start")
    await runner.stop()
    assert (await statuses(rig, wf))["a"] == "recovering"
    assert not rig.of(E.RecoveryFinished)
