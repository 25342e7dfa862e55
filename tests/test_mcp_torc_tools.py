"""Torc's MCP tools that torc-py adds: list_jobs_by_status, list_results, analyze_workflow_logs,
get_execution_plan and create_workflow, through the SDK's stdio client against a real daemon."""

from __future__ import annotations

import json
import os

import anyio
from mcp.client.session import ClientSession
from test_mcp import _session, _structured

SPEC = """\
name: mixed
resource_requirements:
  - {name: tight, memory: 100m}
jobs:
  - {name: prep, command: "echo ready"}
  - {name: big, command: "(head -c 250m /dev/zero; sleep 1) | tail >/dev/null", resource_requirements: tight,
     depends_on: [prep]}
  - {name: crash, command: "echo 'Traceback (most recent call last):' >&2; echo 'KeyError: x' >&2; exit 1",
     depends_on: [prep]}
  - {name: slow, command: "sleep 0.3", depends_on: [prep]}
  - {name: report, command: "true", depends_on: [big, crash]}
"""


def test_an_agent_lists_jobs_by_status_and_results_filtered_and_sorted(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)

    async def steps(session: ClientSession):
        call = session.call_tool
        completed = _structured(await call("list_jobs_by_status", {"workflow_id": wf, "status": "completed"}))
        bad_status = await call("list_jobs_by_status", {"workflow_id": wf, "status": "finished"})
        slowest = _structured(
            await call(
                "list_results", {"workflow_id": wf, "sort_by": "exec_time_minutes", "reverse_sort": True, "limit": 1}
            )
        )
        failed = _structured(await call("list_results", {"workflow_id": wf, "failed_only": True}))
        by_status = _structured(await call("list_results", {"workflow_id": wf, "status": "completed"}))
        rc1 = _structured(await call("list_results", {"workflow_id": wf, "return_code": 1, "run_id": 1}))
        bad_sort = await call("list_results", {"workflow_id": wf, "sort_by": "name"})
        return completed, bad_status, slowest, failed, by_status, rc1, bad_sort

    completed, bad_status, slowest, failed, by_status, rc1, bad_sort = anyio.run(_session, daemon, steps)
    assert completed["count"] == 2 and {j["name"] for j in completed["jobs"]} == {"prep", "slow"}
    assert bad_status.is_error and "unknown status 'finished'" in bad_status.content[0].text
    assert [r["job_name"] for r in slowest] == ["big"]  # over a second before its kill
    assert {r["job_name"] for r in failed} == {"big", "crash"}
    assert {r["job_name"] for r in by_status} == {"prep", "slow"} and by_status[0]["status"] == "completed"
    assert [(r["job_name"], r["run_id"]) for r in rc1] == [("crash", 1)]
    assert bad_sort.is_error


def test_an_agent_scans_the_logs_of_a_workflow_for_failures(daemon):
    wf = daemon.submit(SPEC)
    info = daemon.wait(wf)

    async def steps(session: ClientSession):
        call = session.call_tool
        scan = _structured(await call("analyze_workflow_logs", {"workflow_id": wf}))
        same_dir = _structured(await call("analyze_workflow_logs", {"workflow_id": wf, "output_dir": info.output_dir}))
        other_dir = await call("analyze_workflow_logs", {"workflow_id": wf, "output_dir": "/tmp"})
        return scan, same_dir, other_dir

    scan, same_dir, other_dir = anyio.run(_session, daemon, steps)
    assert {e["type"]: e["count"] for e in scan["errors_by_type"]} == {"python_exception": 2}
    assert [(s["line"], s["content"]) for s in scan["sample_errors"]] == [
        (1, "Traceback (most recent call last):"),
        (2, "KeyError: x"),
    ]
    assert scan["files_parsed"] == 8 and len(scan["files_with_errors"]) == 1
    assert scan["causes_recorded_by_torcd"] == {"oom": 1}
    assert scan["recovery"]["oom_errors"] == 1 and scan["recovery"]["tool_call_example"]["parameters"]["dry_run"]
    assert same_dir["error_count"] == scan["error_count"] == 2
    assert other_dir.is_error and info.output_dir in other_dir.content[0].text


def test_the_execution_plan_of_a_workflow_and_of_a_spec_not_yet_created(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)

    async def steps(session: ClientSession):
        call = session.call_tool
        stored = _structured(await call("get_execution_plan", {"spec_or_id": str(wf)}))
        preview = _structured(
            await call(
                "get_execution_plan",
                {
                    "spec_or_id": json.dumps(
                        {
                            "name": "fan",
                            "jobs": [
                                {"name": "work_{i}", "command": "echo {i}", "parameters": {"i": "1:3"}},
                                {
                                    "name": "gather",
                                    "command": "true",
                                    "depends_on": ["work_{i}"],
                                    "parameters": {"i": "1:3"},
                                },
                            ],
                        }
                    )
                },
            )
        )
        broken = await call("get_execution_plan", {"spec_or_id": "name: x\njobs:\n  - {name: a}\n"})
        return stored, preview, broken

    stored, preview, broken = anyio.run(_session, daemon, steps)
    assert (stored["source"], stored["workflow_name"], stored["total_jobs"]) == ("database", "mixed", 5)
    events = {e["id"]: e for e in stored["events"]}
    assert stored["root_events"] == ["start"] and events["start"]["jobs_becoming_ready"] == ["prep"]
    (after_prep,) = events["start"]["unlocks_events"]
    assert sorted(events[after_prep]["jobs_becoming_ready"]) == ["big", "crash", "slow"]
    (last,) = (
        stored["leaf_events"]
        if len(stored["leaf_events"]) == 1
        else [e for e in stored["leaf_events"] if events[e]["jobs_becoming_ready"] == ["report"]]
    )
    assert events[last]["trigger"] == {"JobsComplete": ["big", "crash"]}
    assert events[last]["depends_on_events"] == [after_prep]
    assert preview["source"] == "spec" and preview["total_jobs"] == 4 and preview["total_events"] == 2
    assert broken.is_error and "spec_or_id:3:" in broken.content[0].text and "$.jobs[0]" in broken.content[0].text


def test_create_workflow_validates_saves_and_creates_naming_each_errors_line_and_field(daemon, tmp_path):
    good = json.dumps({"name": "made", "jobs": [{"name": "hello", "command": "echo hello"}]})
    bad = '{"name": "bad",\n "jobs": [\n  {"name": "a", "command": "true", "cpus": 2},\n  {"name": "b"}]}'
    saved = tmp_path / "made.json"
    before = daemon.call("workflows.list")

    async def steps(session: ClientSession):
        async def create(**args):
            return await session.call_tool("create_workflow", {"workflow_type": "local", **args})

        checked = _structured(await create(spec_json=good, action="validate"))
        invalid = await create(spec_json=bad, action="create_workflow")
        written = _structured(await create(spec_json=good, action="save_spec_file", output_path=str(saved)))
        again = await create(spec_json=good, action="save_spec_file", output_path=str(saved))
        no_path = await create(spec_json=good, action="save_spec_file")
        other_user = await create(spec_json=good, action="validate", user="someone-else")
        slurm = _structured(
            await session.call_tool(
                "create_workflow", {"spec_json": good, "action": "create_workflow", "workflow_type": "slurm"}
            )
        )
        listed = daemon.call("workflows.list")
        created = _structured(await create(spec_json=good, action="create_workflow"))
        return checked, invalid, written, again, no_path, other_user, slurm, listed, created

    checked, invalid, written, again, no_path, other_user, slurm, listed, created = anyio.run(_session, daemon, steps)
    assert checked["valid"] and checked["jobs"] == 1
    assert invalid.is_error
    text = invalid.content[0].text
    assert "2 error(s)" in text and "spec_json:3:" in text and "$.jobs[0]" in text and "spec_json:4:" in text
    assert written["output_path"] == str(saved) and json.loads(saved.read_text())["name"] == "made"
    assert again.is_error and "exists" in again.content[0].text
    assert no_path.is_error and other_user.is_error
    assert slurm["status"] == "need_input"
    assert listed == before  # validating, saving and refusing created nothing
    assert daemon.wait(created["workflow_id"]).counts == {"completed": 1}
    assert daemon.call("workflows.show", {"workflow_id": created["workflow_id"]})["cwd"] == os.getcwd()


def test_create_workflow_with_an_hpc_profile_gets_schedulers_from_it(daemon, tmp_path, monkeypatch):
    monkeypatch.setenv("TORC_CONFIG", str(tmp_path / "none.toml"))
    spec = json.dumps(
        {
            "name": "fit",
            "resource_requirements": [{"name": "fat", "num_cpus": 8, "memory": "300g", "runtime": "PT2H"}],
            "jobs": [{"name": "a", "command": "true", "resource_requirements": "fat"}],
        }
    )
    saved = tmp_path / "fit.json"

    async def steps(session: ClientSession):
        async def create(**args):
            return await session.call_tool("create_workflow", {"spec_json": spec, **args})

        checked = _structured(await create(action="validate", workflow_type="slurm", hpc_profile="kestrel"))
        written = await create(
            action="save_spec_file",
            workflow_type="slurm",
            hpc_profile="kestrel",
            account="proj",
            output_path=str(saved),
        )
        unknown = await create(action="validate", workflow_type="slurm", hpc_profile="nowhere")
        local = await create(action="validate", workflow_type="local", hpc_profile="kestrel")
        return checked, written, unknown, local

    checked, written, unknown, local = anyio.run(_session, daemon, steps)
    assert checked["valid"] and not written.is_error
    (scheduler,) = json.loads(saved.read_text())["slurm_schedulers"]
    assert (scheduler["partition"], scheduler["account"]) == ("medmem", "proj")
    assert unknown.is_error and "no HPC profile named 'nowhere'" in unknown.content[0].text
    assert local.is_error and "give workflow_type slurm" in local.content[0].text
