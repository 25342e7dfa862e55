"""`torcctl mcp` driven by the MCP SDK's own client over stdio, against a real daemon."""

from __future__ import annotations

import sys

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

SPEC = """\
name: agents
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
jobs:
  - name: flaky
    command: if [ $TORC_ATTEMPT_ID -ge 2 ]; then echo ok; else echo "node lost contact" >&2; exit 3; fi
    failure_handler: h
  - name: broken
    command: echo "syntax error in input.csv line 7" >&2; exit 4
    failure_handler: h
  - {name: after_broken, command: "true", depends_on: [broken]}
"""


async def _session(daemon, steps):
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "torcctl", "--socket", daemon.socket, "--no-autostart", "mcp"]
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        return await steps(session)


def _structured(result):
    assert not result.is_error, result.content
    content = result.structured_content
    return content["result"] if set(content) == {"result"} else content


def test_an_agent_lists_and_classifies_pending_failed_jobs(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    ids = {n: j.id for n, j in daemon.jobs(wf).items()}

    async def steps(session: ClientSession):
        tools = {t.name for t in (await session.list_tools()).tools}
        listed = _structured(await session.call_tool("list_pending_failed_jobs", {"workflow_id": wf}))
        # A bad batch (one job is not pending_failed) is refused whole.
        bad = await session.call_tool(
            "classify_and_resolve_failures",
            {
                "workflow_id": wf,
                "classifications": [
                    {"job_id": ids["flaky"], "action": "retry", "reason": "lost node"},
                    {"job_id": ids["after_broken"], "action": "fail", "reason": "x"},
                ],
            },
        )
        missing_reason = await session.call_tool(
            "classify_and_resolve_failures",
            {"workflow_id": wf, "classifications": [{"job_id": ids["flaky"], "action": "retry", "reason": ""}]},
        )
        statuses_after_bad = {n: j.status for n, j in daemon.jobs(wf).items()}
        done = _structured(
            await session.call_tool(
                "classify_and_resolve_failures",
                {
                    "workflow_id": wf,
                    "dry_run": False,
                    "classifications": [
                        {"job_id": ids["flaky"], "action": "retry", "reason": "transient: the node lost contact"},
                        {"job_id": ids["broken"], "action": "fail", "reason": "bad input file; retrying cannot help"},
                    ],
                },
            )
        )
        return tools, listed, bad, missing_reason, statuses_after_bad, done

    tools, listed, bad, missing_reason, statuses_after_bad, done = anyio.run(_session, daemon, steps)
    assert {"list_pending_failed_jobs", "classify_and_resolve_failures"} <= tools
    by_name = {j["name"]: j for j in listed}
    assert set(by_name) == {"flaky", "broken"}
    assert (by_name["flaky"]["return_code"], by_name["flaky"]["stderr_tail"].strip()) == (3, "node lost contact")
    assert by_name["broken"]["return_code"] == 4
    assert bad.is_error and "not pending_failed" in bad.content[0].text
    assert missing_reason.is_error
    assert statuses_after_bad == {"flaky": "pending_failed", "broken": "pending_failed", "after_broken": "blocked"}
    assert done["retried"] == [ids["flaky"]] and done["failed"] == [ids["broken"]]

    daemon.wait(wf, state="done")
    assert {n: j.status for n, j in daemon.jobs(wf).items()} == {
        "flaky": "completed",
        "broken": "failed",
        "after_broken": "canceled",
    }
    classified = [e for e in daemon.events(wf) if e.kind == "job_classified"]
    assert [(e.job_name, e.action, e.source, e.message) for e in classified] == [
        ("flaky", "retry", "mcp", "transient: the node lost contact"),
        ("broken", "fail", "mcp", "bad input file; retrying cannot help"),
    ]
    assert daemon.jobs(wf)["broken"].reason == "bad input file; retrying cannot help"


OOM = """\
name: oom
resource_requirements:
  - {name: small, memory: 100m}
jobs:
  - {name: big, command: "(head -c 250m /dev/zero; sleep 1) | tail >/dev/null", resource_requirements: small}
  - {name: after, command: "true", depends_on: [big]}
"""


def test_an_agent_diagnoses_a_workflow_and_recovers_an_out_of_memory_job(daemon):
    wf = daemon.submit(OOM)
    daemon.wait(wf)
    big = daemon.jobs(wf)["big"].id

    async def steps(session: ClientSession):
        tools = {t.name for t in (await session.list_tools()).tools}
        status = _structured(await session.call_tool("get_workflow_status", {"workflow_id": wf}))
        failed = _structured(await session.call_tool("list_jobs", {"workflow_id": wf, "status": "failed"}))
        details = _structured(await session.call_tool("get_job_details", {"job_id": big}))
        results = _structured(await session.call_tool("get_results", {"workflow_id": wf, "failed_only": True}))
        no_reason = await session.call_tool("recover_workflow", {"workflow_id": wf, "reason": ""})
        plan = _structured(
            await session.call_tool(
                "recover_workflow",
                {"workflow_id": wf, "reason": "out of memory", "dry_run": True, "memory_multiplier": 2},
            )
        )
        unchanged = daemon.jobs(wf)["big"].status
        done = _structured(
            await session.call_tool(
                "recover_workflow",
                {
                    "workflow_id": wf,
                    "reason": "peak was over its 100 MiB limit",
                    "dry_run": False,
                    "memory_multiplier": 2,
                },
            )
        )
        return tools, status, failed, details, results, no_reason, plan, unchanged, done

    tools, status, failed, details, results, no_reason, plan, unchanged, done = anyio.run(_session, daemon, steps)
    assert {"get_workflow_status", "list_jobs", "get_job_details", "get_results", "recover_workflow"} <= tools
    assert status["counts"] == {"failed": 1, "canceled": 1}
    assert [j["name"] for j in failed] == ["big"]
    (attempt,) = details["attempts"]
    assert attempt["cause"] == "oom" and attempt["peak_memory"] > 100 << 20
    assert [(r["job_name"], r["cause"]) for r in results] == [("big", "oom")]
    assert no_reason.is_error
    assert plan["dry_run"] and plan["reset"] == 0 and unchanged == "failed"
    assert done["reset"] == 2 and done["adjustments"][0]["diagnosis"] == "oom"
    assert daemon.wait(wf).counts == {"completed": 2}
    (change,) = [e for e in daemon.events(wf) if e.kind == "job_resources_changed"]
    assert change.source == "mcp" and "peak was over its 100 MiB limit" in change.message


LOGS_AND_LIMITS = """\
name: tools
resource_requirements:
  - {name: roomy, memory: 500m, runtime: PT1M}
jobs:
  - name: chatty
    command: for i in $(seq 1 2000); do echo "line $i" >&2; done; exit 5
  - name: light
    command: "true"
    resource_requirements: roomy
  - {name: after, command: "true", depends_on: [chatty]}
  - name: huge
    command: python3 -c "import sys; [print('x' * 1023, file=sys.stderr) for _ in range(1000)]; print('LAST', file=sys.stderr)"
"""  # noqa: E501 a spec line as a user writes it


def test_an_agent_reads_logs_usage_and_failures_and_sets_a_jobs_limits(daemon):
    wf = daemon.submit(LOGS_AND_LIMITS)
    daemon.wait(wf)
    chatty, light, huge = (daemon.jobs(wf)[n].id for n in ("chatty", "light", "huge"))

    async def steps(session: ClientSession):
        call = session.call_tool
        summary = _structured(await call("get_workflow_summary", {"workflow_id": wf}))
        failed = _structured(await call("list_failed_jobs", {"workflow_id": wf}))
        logs = _structured(await call("get_job_logs", {"job_id": chatty, "tail_lines": 3}))
        long_tail = _structured(await call("get_job_logs", {"job_id": huge, "tail_lines": 1000}))
        too_many = await call("get_job_logs", {"job_id": chatty, "tail_lines": 5000})
        no_attempt = await call("get_job_logs", {"job_id": chatty, "attempt_id": 9})
        usage = _structured(await call("check_resource_utilization", {"workflow_id": wf}))
        updated = _structured(
            await call(
                "update_job_resources",
                {"job_id": light, "reason": "used a tenth", "memory": "100m", "runtime": "PT30S"},
            )
        )
        bad = await call("update_job_resources", {"job_id": light, "reason": "x", "memory": "lots"})
        nothing = await call("update_job_resources", {"job_id": light, "reason": "x"})
        return summary, failed, logs, too_many, no_attempt, usage, updated, bad, nothing, long_tail

    summary, failed, logs, too_many, no_attempt, usage, updated, bad, nothing, long_tail = anyio.run(
        _session, daemon, steps
    )
    assert summary["failures_by_cause"] == {"exit 5": 1} and summary["attempts"] == 3
    assert summary["workflow"]["counts"] == {"completed": 2, "failed": 1, "canceled": 1}
    assert [j["name"] for j in failed] == ["chatty"]
    assert logs["text"] == "line 1998\nline 1999\nline 2000\n" and not logs["truncated"]
    assert too_many.is_error and no_attempt.is_error
    assert long_tail["text"].endswith("LAST\n") and long_tail["truncated"] and len(long_tail["text"]) <= 64 * 1024
    (light_usage,) = [u for u in usage if u["job_name"] == "light"]
    assert light_usage["runtime_percent"] < 20 and "runtime: used under a fifth of its limit" in light_usage["notes"]
    assert updated["changed"] == {"memory": {"old": 500 << 20, "new": 100 << 20}, "runtime": {"old": 60.0, "new": 30.0}}
    assert bad.is_error and "lots" in bad.content[0].text
    assert nothing.is_error and "give memory, runtime or num_cpus" in nothing.content[0].text
    changes = [e for e in daemon.events(wf) if e.kind == "job_resources_changed"]
    assert {(c.resource, c.source, c.message) for c in changes} == {
        ("memory", "mcp", "used a tenth"),
        ("runtime", "mcp", "used a tenth"),
    }
    assert daemon.call("jobs.show", {"job_id": light})["memory_bytes"] == 100 << 20
