"""Failure handlers and `recover` together, as Torc's tutorial combines them: a handled job whose
failure no rule covers (it ran out of memory) parks as pending_failed, and `recover`,
`watch --recover` and the MCP tool `recover_workflow` take it from there."""

from __future__ import annotations

import anyio
import pytest
from mcp.client.session import ClientSession
from test_mcp import _session, _structured

from torcd.core.limits import FailedAttempt, describe, plan
from torcd.events import JobClassified, JobResourcesChanged

MiB = 1 << 20


def parked(rc=1, cause=None, wall=10.0, peak=None, memory=None, runtime=None) -> dict:
    return dict(
        job_id=1,
        name="j",
        return_code=rc,
        cause=cause,
        wall_seconds=wall,
        peak_memory=peak,
        memory=memory,
        runtime=runtime,
    )


@pytest.mark.parametrize(
    "attempt, retry_unknown, diagnosis, retry, memory, runtime",
    [
        (parked(137, "oom", peak=120 * MiB, memory=100 * MiB), False, "oom", True, (100 * MiB, 240 * MiB), None),
        (parked(137, memory=100 * MiB), False, "oom", True, (100 * MiB, 200 * MiB), None),  # found by the heuristic
        (parked(143, "timeout", runtime=60), False, "timeout", True, None, (60, 90.0)),
        (parked(1, wall=95, runtime=100), False, "timeout", True, None, (100, 150.0)),
        (parked(152), False, "timeout", True, None, None),  # Slurm's limit, none of its own: as it was
        (parked(3), False, "unknown", False, None, None),  # no resource cause: the handler's person decides
        (parked(3), True, "unknown", True, None, None),  # unless told to retry those too
        (parked(1, "missing_output"), False, "unknown", False, None, None),
    ],
)
def test_a_pending_failed_job_is_planned_as_a_failed_one_is(attempt, retry_unknown, diagnosis, retry, memory, runtime):
    (adj,) = plan([FailedAttempt(**attempt, status="pending_failed")], 2.0, 1.5, retry_unknown)
    assert (adj.diagnosis, adj.retry, adj.memory, adj.runtime, adj.status) == (
        diagnosis,
        retry,
        memory,
        runtime,
        "pending_failed",
    )
    line = describe(adj)
    assert "(job 1, pending_failed)" in line and line.endswith("leave pending_failed") != retry


TUTORIAL = """name: handled
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
resource_requirements:
  - {name: small, memory: 100m}
jobs:
  - {name: big, command: "(head -c 250m /dev/zero; sleep 1) | tail >/dev/null", resource_requirements: small,
     failure_handler: h}
  - {name: after_big, command: "true", depends_on: [big]}
"""

UNKNOWN = """name: unknown
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
jobs:
  - {name: bug, command: "[ -e fixed ] || exit 3", failure_handler: h}
  - {name: after_bug, command: "true", depends_on: [bug]}
"""


def _parked(daemon, spec: str) -> int:
    wf = daemon.submit(spec)
    assert daemon.wait(wf, timeout=60).state == "awaiting_classification"
    return wf


def test_watch_recover_runs_a_handled_job_that_ran_out_of_memory_to_completion(daemon):
    wf = daemon.submit(TUTORIAL)
    code, out, err = daemon.ctl("watch", str(wf), "--recover", "--memory-multiplier", "4")
    assert code == 0, out + err
    assert {n: j.status for n, j in daemon.jobs(wf).items()} == {"big": "completed", "after_big": "completed"}
    first, *_, last = daemon.attempts(daemon.jobs(wf)["big"].id)
    assert (first.return_code, first.cause, first.action) == (137, "oom", "pending_failed")
    assert last.return_code == 0 and last.memory_limit > 100 * MiB
    (classified,) = [e for e in daemon.events(wf) if isinstance(e, JobClassified)]
    assert (classified.job_name, classified.action, classified.source) == ("big", "retry", "recover")
    assert classified.message.startswith("recover: oom, recorded as oom")


def test_recover_classifies_a_handled_job_that_ran_out_of_memory_and_it_completes(daemon):
    wf = _parked(daemon, TUTORIAL)
    big = daemon.jobs(wf)["big"]
    assert (big.status, daemon.jobs(wf)["after_big"].status) == ("pending_failed", "blocked")

    code, out, err = daemon.ctl("recover", str(wf), "--memory-multiplier", "4")
    assert code == 0, out + err
    assert f"big (job {big.id}, pending_failed): oom, recorded as oom; retry with memory 100.0 MiB -> " in out
    assert "2 jobs reset to run again" in out  # big and what it blocks
    assert daemon.wait(wf, timeout=60).counts == {"completed": 2}
    assert daemon.jobs(wf)["big"].memory_bytes >= 400 * MiB
    events = daemon.events(wf)
    (change,) = [e for e in events if isinstance(e, JobResourcesChanged)]
    (classified,) = [e for e in events if isinstance(e, JobClassified)]
    assert (change.job_name, change.resource, change.source) == ("big", "memory", "cli")
    assert (classified.job_id, classified.run_id, classified.attempt_id) == (big.id, 1, 1)  # the attempt it decides
    assert (classified.action, classified.status, classified.source) == ("retry", "ready", "recover")
    assert classified.message == change.message + " (by cli)"


def test_a_pending_failed_job_of_unknown_cause_waits_unless_retry_unknown(daemon, tmp_path):
    wf = _parked(daemon, UNKNOWN)
    before = daemon.jobs(wf)
    code, out, _ = daemon.ctl("recover", str(wf))
    assert code == 1 and "unknown, exit 3, no resource cause found; leave pending_failed" in out
    assert daemon.jobs(wf) == before
    assert not [e for e in daemon.events(wf) if isinstance(e, JobClassified)]

    (tmp_path / "fixed").touch()
    code, out, err = daemon.ctl("recover", str(wf), "--retry-unknown")
    assert code == 0, out + err
    assert "unknown, exit 3, no resource cause found; retry as it was" in out and "2 jobs reset" in out
    assert daemon.wait(wf, timeout=60).counts == {"completed": 2}
    (classified,) = [e for e in daemon.events(wf) if isinstance(e, JobClassified)]
    assert (classified.job_name, classified.source) == ("bug", "recover")


def test_a_dry_run_plans_for_pending_failed_jobs_and_changes_nothing(daemon):
    wf = _parked(daemon, TUTORIAL)
    code, listed_before, _ = daemon.ctl("jobs", "list", str(wf))
    before, events = daemon.jobs(wf), daemon.events(wf)
    code, out, err = daemon.ctl("recover", str(wf), "--dry-run", "--memory-multiplier", "4")
    assert code == 0, out + err
    assert "dry run, nothing changed: big (job" in out
    assert "pending_failed): oom, recorded as oom; retry with memory" in out
    assert daemon.ctl("jobs", "list", str(wf))[1] == listed_before
    assert daemon.jobs(wf) == before and daemon.events(wf) == events


def test_recover_workflow_tool_plans_then_recovers_a_pending_failed_job(daemon):
    wf = _parked(daemon, TUTORIAL)
    before, events = daemon.jobs(wf), daemon.events(wf)

    async def steps(session: ClientSession):
        dry = _structured(
            await session.call_tool(
                "recover_workflow", {"workflow_id": wf, "reason": "handler has no rule for oom", "memory_multiplier": 4}
            )
        )
        unchanged = (daemon.jobs(wf), daemon.events(wf))
        done = _structured(
            await session.call_tool(
                "recover_workflow",
                {"workflow_id": wf, "reason": "handler has no rule for oom", "dry_run": False, "memory_multiplier": 4},
            )
        )
        return dry, unchanged, done

    dry, unchanged, done = anyio.run(_session, daemon, steps)
    (planned,) = dry["adjustments"]
    assert dry["dry_run"] and dry["reset"] == 0 and unchanged == (before, events)
    assert (planned["name"], planned["status"], planned["diagnosis"], planned["retry"]) == (
        "big",
        "pending_failed",
        "oom",
        True,
    )
    assert done["reset"] == 2
    assert daemon.wait(wf, timeout=60).counts == {"completed": 2}
    (classified,) = [e for e in daemon.events(wf) if isinstance(e, JobClassified)]
    assert classified.source == "recover" and classified.message.endswith("handler has no rule for oom (by mcp)")
