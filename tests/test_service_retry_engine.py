"""RetryEngine in-process: each recorded non-zero exit gets its failure handler's decision, from the
bus or, after a restart, from the tables."""

from __future__ import annotations

import pytest
from inproc import (
    eventually,
    make_retry_engine,
    rig_fixture,  # noqa: F401 (the `rig` fixture)
    running,
    start_ready,
    statuses,
    submit,
)
from inproc import record_exit as exit_with

from torcd import events as E

SPEC = """
name: w
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
      - {exit_codes: [11], max_retries: 2}
      - {exit_codes: [20], recovery_script: ./fix.sh, max_retries: 3}
      - {causes: [oom], max_retries: 3}
jobs:
  - {name: handled, command: 'true', failure_handler: h}
  - {name: plain, command: 'true'}
"""


@pytest.mark.parametrize(
    "name,rc,cause,status,action",
    [
        ("handled", 10, None, "ready", "retry"),  # a rule with retries left: the next attempt
        ("handled", 11, None, "ready", "retry"),
        ("handled", 20, None, "recovering", "recover"),  # a rule with a script: run it first
        ("handled", 99, "oom", "ready", "retry"),  # the cause's rule beats the exit code
        ("handled", 99, None, "pending_failed", "pending_failed"),  # no rule, but a handler: someone classifies it
        ("plain", 10, None, "failed", "fail"),  # no handler: failed
    ],
)
async def test_an_exit_gets_its_failure_handlers_decision(rig, name, rc, cause, status, action):
    wf = await submit(rig, SPEC)
    engine = make_retry_engine(rig)
    async with running(engine):
        await exit_with(rig, (await start_ready(rig))[name], rc, cause)
        await eventually(lambda: rig.of(E.RetryDecided), what="the decision")
    assert (await statuses(rig, wf))[name] == status
    (decided,) = rig.of(E.RetryDecided)
    assert (decided.job_name, decided.action) == (name, action)


async def test_the_last_allowed_retry_spent_fails_the_job(rig):
    wf = await submit(rig, SPEC)
    engine = make_retry_engine(rig)
    async with running(engine):
        await exit_with(rig, (await start_ready(rig))["handled"], 11)  # attempt 1 of max_retries 2: retried
        await eventually(lambda: len(rig.of(E.RetryDecided)) == 1, what="the first decision")
        await exit_with(rig, (await start_ready(rig))["handled"], 11)  # attempt 2: no retries left
        await eventually(lambda: len(rig.of(E.RetryDecided)) == 2, what="the second decision")
    assert [e.action for e in rig.of(E.RetryDecided)] == ["retry", "fail"]
    assert (await statuses(rig, wf))["handled"] == "failed"


async def test_a_zero_exit_needs_no_decision(rig):
    wf = await submit(rig, SPEC)
    engine = make_retry_engine(rig)
    async with running(engine):
        jobs = await start_ready(rig)
        await exit_with(rig, jobs["plain"], 0)
        await exit_with(rig, jobs["handled"], 10)  # decided after the completion: the engine has seen both
        await eventually(lambda: rig.of(E.RetryDecided), what="the decision")
    assert [e.job_name for e in rig.of(E.RetryDecided)] == ["handled"]
    assert (await statuses(rig, wf))["plain"] == "completed"


async def test_reconcile_decides_the_exits_recorded_while_no_engine_listened(rig):
    wf = await submit(rig, SPEC)
    jobs = await start_ready(rig)
    await exit_with(rig, jobs["handled"], 10)
    await exit_with(rig, jobs["plain"], 3)
    await make_retry_engine(rig).reconcile()
    assert await statuses(rig, wf) == {"handled": "ready", "plain": "failed"}
    assert await rig.execution.failures_awaiting_decision() == []


async def test_an_overflowed_queue_is_made_good_from_the_tables(rig):
    wf = await submit(rig, SPEC)
    engine = make_retry_engine(rig)
    jobs = await start_ready(rig)
    await exit_with(rig, jobs["plain"], 3)  # queued
    engine._sub.overflowed.set()  # the queue filled up: what comes next is dropped
    await exit_with(rig, jobs["handled"], 10)  # only the tables know of this one
    async with running(engine):
        await eventually(lambda: len(rig.of(E.RetryDecided)) == 2, what="both decisions")
    assert await statuses(rig, wf) == {"handled": "ready", "plain": "failed"}
