"""The MCP tools honour Torc's arguments (torc-mcp-server): a dry run changes nothing in the
database, unknown arguments are refused, per-classification limits and optional reasons, logs
by run_id and attempt_id. Driven by the SDK's own stdio client against a real daemon."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
from mcp.client.session import ClientSession
from test_mcp import _session, _structured

PARKED = """\
name: parked
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
jobs:
  - name: flaky
    command: if [ $TORC_ATTEMPT_ID -ge 2 ]; then echo "second try" >&2; else echo "node lost contact" >&2; exit 3; fi
    failure_handler: h
  - name: broken
    command: echo "syntax error in input.csv line 7" >&2; exit 4
    failure_handler: h
  - {name: after_broken, command: "true", depends_on: [broken]}
"""


def _dump(daemon) -> list[str]:
    """Every table's rows, as SQL, read beside the running daemon (its WAL included)."""
    db = sqlite3.connect(f"file:{Path(daemon.state_dir) / 'torcd.store.db'}?mode=ro", uri=True)
    try:
        return list(db.iterdump())
    finally:
        db.close()


def test_a_dry_run_classification_checks_everything_and_leaves_the_database_unchanged(daemon):
    wf = daemon.submit(PARKED)
    daemon.wait(wf)
    ids = {n: j.id for n, j in daemon.jobs(wf).items()}
    retry_with_limits = {"job_id": ids["flaky"], "action": "retry", "memory": "2g", "runtime": "PT10M"}
    before = _dump(daemon)

    async def steps(session: ClientSession):
        call = session.call_tool
        preview = _structured(
            await call(
                "classify_and_resolve_failures",
                {
                    "workflow_id": wf,
                    "dry_run": True,
                    "classifications": [
                        {**retry_with_limits, "reason": "lost node"},
                        {"job_id": ids["broken"], "action": "fail", "reason": "bad input"},
                    ],
                },
            )
        )
        default = _structured(
            await call("classify_and_resolve_failures", {"workflow_id": wf, "classifications": [retry_with_limits]})
        )
        misspelled = await call(
            "classify_and_resolve_failures",
            {"workflow_id": wf, "dryrun": False, "classifications": [retry_with_limits]},
        )
        unknown_in_item = await call(
            "classify_and_resolve_failures",
            {"workflow_id": wf, "dry_run": False, "classifications": [{**retry_with_limits, "cpus": 4}]},
        )
        bad_limit = await call(
            "classify_and_resolve_failures",
            {
                "workflow_id": wf,
                "dry_run": True,
                "classifications": [
                    {**retry_with_limits, "memory": "lots"},
                    {"job_id": ids["after_broken"], "action": "fail"},
                ],
            },
        )
        limits_on_fail = await call(
            "classify_and_resolve_failures",
            {"workflow_id": wf, "classifications": [{"job_id": ids["broken"], "action": "fail", "memory": "1g"}]},
        )
        recover_preview = await call("recover_workflow", {"workflow_id": wf, "retry_unknown": True})
        return preview, default, misspelled, unknown_in_item, bad_limit, limits_on_fail, recover_preview

    preview, default, misspelled, unknown_in_item, bad_limit, limits_on_fail, recover_preview = anyio.run(
        _session, daemon, steps
    )
    assert _dump(daemon) == before
    assert preview["dry_run"] and (preview["retried"], preview["failed"]) == ([], [])
    assert [
        (r["job_name"], r["action"], r["memory_adjustment"], r["runtime_adjustment"], r["reason"], r["status"])
        for r in preview["results"]
    ] == [
        ("flaky", "retry", "2g", "PT10M", "lost node", "would_apply"),
        ("broken", "fail", None, None, "bad input", "would_apply"),
    ]
    assert default["dry_run"] and default["retried"] == []
    assert misspelled.is_error and "dryrun" in misspelled.content[0].text
    assert unknown_in_item.is_error and "cpus" in unknown_in_item.content[0].text
    assert bad_limit.is_error
    text = bad_limit.content[0].text
    assert "nothing was changed" in text and "'lots'" in text and "classifications[1]" in text
    assert "not pending_failed (it is blocked)" in text
    assert limits_on_fail.is_error and "for a retry" in limits_on_fail.content[0].text
    assert not recover_preview.is_error and _structured(recover_preview)["dry_run"]
    assert {n: j.status for n, j in daemon.jobs(wf).items()} == {
        "flaky": "pending_failed",
        "broken": "pending_failed",
        "after_broken": "blocked",
    }


def test_a_retry_takes_its_new_limits_and_a_missing_reason_is_recorded_as_mcp(daemon):
    wf = daemon.submit(PARKED)
    daemon.wait(wf)
    ids = {n: j.id for n, j in daemon.jobs(wf).items()}

    async def steps(session: ClientSession):
        return _structured(
            await session.call_tool(
                "classify_and_resolve_failures",
                {
                    "workflow_id": wf,
                    "dry_run": False,
                    "classifications": [
                        {"job_id": ids["flaky"], "action": "retry", "memory": "2g", "runtime": "PT10M"},
                        {"job_id": ids["broken"], "action": "fail"},
                    ],
                },
            )
        )

    done = anyio.run(_session, daemon, steps)
    assert (done["retried"], done["failed"]) == ([ids["flaky"]], [ids["broken"]])
    assert daemon.wait(wf, state="done").counts == {"completed": 1, "failed": 1, "canceled": 1}
    flaky = daemon.call("jobs.show", {"job_id": ids["flaky"]})
    assert (flaky["memory_bytes"], flaky["runtime_seconds"]) == (2 << 30, 600.0)
    events = daemon.events(wf)
    assert [(e.job_name, e.action, e.source, e.message) for e in events if e.kind == "job_classified"] == [
        ("flaky", "retry", "mcp", "mcp"),
        ("broken", "fail", "mcp", "mcp"),
    ]
    assert {(e.resource, e.source) for e in events if e.kind == "job_resources_changed"} == {
        ("memory", "mcp"),
        ("runtime", "mcp"),
    }


def test_job_logs_are_read_by_torcs_run_id_and_attempt_id(daemon):
    wf = daemon.submit(PARKED)
    daemon.wait(wf)
    flaky = daemon.jobs(wf)["flaky"].id
    daemon.call(
        "jobs.classify",
        {"workflow_id": wf, "classifications": [{"job_id": flaky, "action": "retry", "reason": "transient"}]},
    )
    daemon.wait_for(lambda: daemon.jobs(wf)["flaky"].status == "completed", what="the retry")

    async def steps(session: ClientSession):
        call = session.call_tool
        latest = _structured(await call("get_job_logs", {"job_id": flaky}))
        first = _structured(
            await call("get_job_logs", {"workflow_id": wf, "job_id": flaky, "run_id": 1, "log_type": "stderr"})
        )
        second = _structured(await call("get_job_logs", {"job_id": flaky, "run_id": 1, "attempt_id": 2}))
        other_wf = await call("get_job_logs", {"workflow_id": wf + 1, "job_id": flaky, "run_id": 1})
        old_name = await call("get_job_logs", {"job_id": flaky, "attempt": 1})
        return latest, first, second, other_wf, old_name

    latest, first, second, other_wf, old_name = anyio.run(_session, daemon, steps)
    assert (latest["attempt_id"], latest["text"]) == (2, "second try\n")
    assert (first["run_id"], first["attempt_id"], first["text"]) == (1, 1, "node lost contact\n")
    assert second["text"] == "second try\n" and not second["truncated"]
    assert other_wf.is_error and f"not {wf + 1}" in other_wf.content[0].text
    assert old_name.is_error and "attempt" in old_name.content[0].text


def test_every_tool_refuses_an_argument_it_does_not_take(daemon):
    wf = daemon.submit("name: one\njobs:\n  - {name: a, command: 'true'}\n")
    daemon.wait(wf)

    async def steps(session: ClientSession):
        tools = (await session.list_tools()).tools
        refused = {}
        for tool in tools:
            result = await session.call_tool(tool.name, {"workflow_id": wf, "no_such_argument": 1})
            refused[tool.name] = result.is_error and "no_such_argument" in result.content[0].text
        return {t.name: t.input_schema.get("additionalProperties") for t in tools}, refused

    schemas, refused = anyio.run(_session, daemon, steps)
    assert all(v is False for v in schemas.values()), schemas
    assert all(refused.values()), refused
