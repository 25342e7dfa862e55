"""Lifecycle outcomes applied to a real SQLite store, in-process (no daemon): what the tables say
afterwards is exactly what the lifecycle decided."""

from __future__ import annotations

import msgspec
import pytest

from torcd.core import lifecycle as L
from torcd.core.attempts import Exit, Failure, Start
from torcd.core.retry import Action, RetryDecision, Rule
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidTransition
from torcd.protocol import RecoveryReport
from torcd.spec.parse import parse_spec
from torcd.store.store import Store

SPEC = """
name: diamond
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        max_retries: 3
      - exit_codes: [20]
        recovery_script: ./fix.sh
jobs:
  - {name: pre, command: "true", failure_handler: h}
  - {name: a, command: "true", depends_on: [pre]}
  - {name: b, command: "true", depends_on: [pre]}
  - {name: post, command: "true", depends_on: [a, b]}
"""


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(str(tmp_path / "t.db"))
    published = []
    s.on_commit = published.extend
    s.published = published
    yield s
    await s.close()


async def made(store: Store, tmp_path) -> dict[str, int]:
    wf = await store.workflows.create_workflow(parse_spec(SPEC, "spec.yaml"), str(tmp_path), "spec.yaml")
    return {j.name: j.id for j in await store.queries.jobs(wf)}


async def rows(store: Store) -> dict[str, tuple]:
    return {
        r["name"]: (S(r["status"]), r["attempt_id"], r["run_id"], r["reason"])
        for r in await store.db.rows("SELECT name, status, attempt_id, run_id, reason FROM jobs")
    }


async def start_and_exit(store: Store, rc: int) -> None:
    claimed, _ = await store.execution.dispatch([], [], 4, "host")
    job = next(j for j in claimed if j.name == "pre")
    await store.execution.dispatch([], [Start(job, 4242, 1.0)], 0, "host")
    await store.execution.record_exits([Exit(job.job_id, job.run_id, job.attempt_id, rc, 2.0)])


async def test_claims_starts_and_a_completion_release_the_dependents(store, tmp_path):
    ids = await made(store, tmp_path)
    await start_and_exit(store, 0)
    after = await rows(store)
    assert after["pre"][:2] == (S.COMPLETED, 1)
    assert after["a"][0] == after["b"][0] == S.READY and after["post"][0] == S.BLOCKED
    (att,) = await store.queries.attempts(ids["pre"])
    assert (att.pid, att.host, att.start_time, att.end_time, att.return_code) == (4242, "host", 1.0, 2.0, 0)
    assert att.stdout_path.endswith(f"job_wf1_j{ids['pre']}_r1_a1.o")
    kinds = [e.kind for e in store.published]
    assert kinds == ["workflow_created", "job_started", "job_completed", "job_ready", "job_ready"]


async def test_a_decision_to_retry_opens_the_next_attempt_and_a_fail_cancels_downstream(store, tmp_path):
    ids = await made(store, tmp_path)
    await start_and_exit(store, 10)
    assert (await rows(store))["pre"][0] == S.RUNNING  # exited, awaiting its decision
    (failure,) = await store.execution.failures_awaiting_decision()
    assert failure == Failure(ids["pre"], 1, 1, 1, 10, failure.rules, None)
    await store.execution.apply_decisions([(failure, RetryDecision(Action.RETRY, 0, "retry it"))])
    assert (await rows(store))["pre"] == (S.READY, 2, 1, "retry it")
    await store.execution.apply_decisions([(failure, RetryDecision(Action.FAIL, 0, "again"))])  # a stale decision
    assert (await rows(store))["pre"] == (S.READY, 2, 1, "retry it")
    await start_and_exit(store, 10)
    (failure,) = await store.execution.failures_awaiting_decision()
    await store.execution.apply_decisions([(failure, RetryDecision(Action.FAIL, 0, "give up"))])
    after = await rows(store)
    assert after["pre"] == (S.FAILED, 2, 1, "give up")
    assert {after[n][0] for n in ("a", "b", "post")} == {S.CANCELED}
    assert after["post"][3] == f"upstream job pre ({ids['pre']}) failed"
    failed = [e for e in store.published if e.kind == "job_failed"]
    assert failed[-1].count == 3 and failed[-1].message == "3 downstream jobs canceled"
    assert (await store.queries.workflow(1)).state == "done"


async def test_recovery_parking_classification_and_reset(store, tmp_path):
    ids = await made(store, tmp_path)
    await start_and_exit(store, 20)
    (failure,) = await store.execution.failures_awaiting_decision()
    await store.execution.apply_decisions([(failure, RetryDecision(Action.RECOVER, 1, "recover"))])
    assert (await rows(store))["pre"][0] == S.RECOVERING
    await store.execution.finish_recovery(RecoveryReport(ids["pre"], 1, 1, True, 0, "fixed", 0.5))
    assert (await rows(store))["pre"] == (S.READY, 2, 1, "fixed")
    (att,) = [a for a in await store.queries.attempts(ids["pre"]) if a.attempt_id == 1]
    assert (att.recovery_outcome, att.rule_index, att.action) == ("succeeded", 1, "recover")
    await start_and_exit(store, 3)
    (failure,) = await store.execution.failures_awaiting_decision()
    await store.execution.apply_decisions([(failure, RetryDecision(Action.PARK, None, "no rule"))])
    assert (await store.queries.workflow(1)).state == "awaiting_classification"
    with pytest.raises(InvalidTransition):
        await store.execution.classify([(ids["a"], "retry", "")], "cli")  # not parked: refused, nothing changes
    await store.execution.classify([(ids["pre"], "fail", "hopeless")], "mcp")
    after = await rows(store)
    assert after["pre"] == (S.FAILED, 2, 1, "hopeless") and after["post"][0] == S.CANCELED
    assert await store.workflows.reset_status(1, failed_only=True) == 4
    after = await rows(store)
    assert after["pre"] == (S.READY, 1, 2, None)
    assert {after[n][:3] for n in ("a", "b", "post")} == {(S.BLOCKED, 1, 2)}


async def test_every_status_written_is_one_the_lifecycle_decided(store, tmp_path):
    """Drive a workflow through the store and replay its events through the lifecycle's table."""
    await made(store, tmp_path)
    await start_and_exit(store, 10)
    (failure,) = await store.execution.failures_awaiting_decision()
    await store.execution.apply_decisions([(failure, RetryDecision(Action.RETRY, 0, "r"))])
    for _ in range(6):
        claimed, _ = await store.execution.dispatch([], [], 4, "h")
        starts = [Start(j, 1, 3.0) for j in claimed]
        await store.execution.dispatch([], starts, 0, "h")
        await store.execution.record_exits([Exit(j.job_id, j.run_id, j.attempt_id, 0, 4.0) for j in claimed])
    assert {r[0] for r in (await rows(store)).values()} == {S.COMPLETED}
    body = msgspec.json.decode((await store.db.rows("SELECT body FROM events ORDER BY seq DESC LIMIT 1"))[0][0])
    assert body["kind"] == "workflow_done" and body["status"] == "completed"


def test_rules_survive_the_store_as_written():
    rule = Rule(exit_codes=[10], max_retries=2)
    assert msgspec.json.decode(msgspec.json.encode([rule]), type=list[Rule]) == [rule]
    assert L.Job(1, 1, "x", S.READY).is_current(1, 1)
