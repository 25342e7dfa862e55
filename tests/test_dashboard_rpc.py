"""The calls the dashboard reads a workflow through: jobs by template, filtered and sorted pages
and their count, the DAG folded to a size a browser can draw, workers, the failure handler's
explanation of a job, every workflow's events, and changes recorded as the dashboard's."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sqlite3
import textwrap

import pytest

from torcctl import Client
from torcctl.errors import NotFound, RpcError
from torcd.core.graph import OTHER, GraphEdge, GraphNode, fold_graph
from torcd.core.params import name_template
from torcd.protocol import StartedReport, WorkflowSummary
from torcd.store.migrations import MIGRATIONS
from torcd.store.store import Store

INVALID_PARAMS = -32602


def submit(client: Client, spec: str, tmp_path) -> int:
    return client.submit(textwrap.dedent(spec), spec_format="yaml", cwd=tmp_path).id


def refused(call, field: str) -> RpcError:
    with pytest.raises(RpcError) as e:
        call()
    assert e.value.code == INVALID_PARAMS and field in f"{e.value.field} {e.value}", str(e.value)
    return e.value


# -- pure: name templates, the folded graph ----------------------------------------------------


@pytest.mark.parametrize(
    "name, template",
    [
        ("job_17", "job_{n}"),
        ("prep", "prep"),
        ("a1b22c333", "a{n}b{n}c{n}"),
        ("2024-01-05_run", "{n}-{n}-{n}_run"),
        ("x\u0663", "x\u0663"),  # only ASCII digits
        ("", ""),
    ],
)
def test_a_listed_jobs_template_is_its_name_with_each_run_of_digits_as_n(name, template):
    assert name_template(name) == template


def node(key: str, jobs: int, status: str = "ready") -> GraphNode:
    return GraphNode(key, key, None, jobs, {status: jobs})


def test_dependencies_inside_a_node_are_counted_in_it_not_drawn():
    nodes, edges = fold_graph([node("a", 2), node("b", 1)], [("a", "a", 3), ("a", "b", 2)], 10)
    assert [(n.key, n.internal_deps) for n in nodes] == [("a", 3), ("b", 0)]
    assert edges == [GraphEdge("a", "b", 2)]


def test_past_max_nodes_the_smallest_groups_become_one_other_node_with_their_edges_summed():
    nodes = [node("s", 1, "completed"), node("big", 50), node("mid", 20), node("t1", 2), node("t2", 3, "blocked")]
    edges = [("s", "big", 50), ("big", "mid", 20), ("mid", "t1", 2), ("mid", "t2", 3), ("t1", "t2", 1), ("t2", "s", 4)]
    kept, folded = fold_graph(nodes, edges, 3)
    assert [n.key for n in kept] == ["big", "mid", OTHER]  # the spec's order, the rest last
    other = kept[-1]
    assert (other.jobs, other.counts, other.internal_deps, other.job_id) == (
        6,
        {"completed": 1, "ready": 2, "blocked": 3},
        5,  # t1 -> t2 and t2 -> s are now inside it
        None,
    )
    assert sorted((e.source, e.target, e.count) for e in folded) == [
        ("big", "mid", 20),
        ("mid", OTHER, 5),
        (OTHER, "big", 50),
    ]


def test_a_graph_within_max_nodes_is_left_as_it_is():
    nodes = [node("a", 1), node("b", 1)]
    kept, folded = fold_graph(nodes, [("a", "b", 1)], 2)
    assert [n.key for n in kept] == ["a", "b"] and folded == [GraphEdge("a", "b", 1)]


# -- templates ----------------------------------------------------------------------------------

PIPELINE = """
name: pipeline
jobs:
  - {name: prep, command: "true"}
  - {name: "work_{i}", command: "echo {i}", depends_on: [prep], parameters: {i: "1:5"}}
  - {name: post, command: "true", depends_on: ["work_{i}"], parameters: {i: "1:5"}}
  - {name: step_1, command: "true"}
  - {name: step_2, command: "true", depends_on: [step_1]}
"""


def test_jobs_carry_the_template_they_were_made_from_when_created_and_when_added(client, tmp_path):
    wf = submit(client, PIPELINE, tmp_path)
    templates = {j.name: j.template for j in client.jobs(wf)}
    assert templates == {
        "prep": "prep",
        "work_1": "work_{i}",
        "work_2": "work_{i}",
        "work_3": "work_{i}",
        "work_4": "work_{i}",
        "work_5": "work_{i}",
        "post": "post",  # its parameters widen depends_on, not its name
        "step_1": "step_{n}",
        "step_2": "step_{n}",
    }
    added = client.call(
        "workflows.add_jobs",
        {
            "workflow_id": wf,
            "spec_text": 'name: more\njobs:\n  - {name: "late_{k:02d}", command: "true", parameters: {k: "1:2"}}\n'
            '  - {name: extra_9, command: "true"}\n',
        },
    )["job_ids"]
    assert {client.job(i).template for i in added.values()} == {"late_{k:02d}", "extra_{n}"}
    assert client.job(added["late_01"]).template == "late_{k:02d}"


def test_the_migration_gives_existing_jobs_the_template_of_their_names(tmp_path):
    path = str(tmp_path / "torcd.db")
    db = sqlite3.connect(path, isolation_level=None)
    for sql in MIGRATIONS[:13]:
        for stmt in (s.strip() for s in sql.split(";")):
            if stmt:
                db.execute(stmt)
    db.execute("PRAGMA user_version = 13")
    db.execute(
        "INSERT INTO workflows (id, name, cwd, spec_path, output_dir, created) VALUES (1, 'w', '/', 's', 'o', 0)"
    )
    for k, name in enumerate(["job_17", "prep", "run7_part12"], 1):
        db.execute(
            "INSERT INTO jobs (id, workflow_id, name, command, status, updated) VALUES (?, 1, ?, 'true', 2, 0)",
            (k, name),
        )
    db.close()

    async def templates() -> dict[str, str]:
        store = await Store.open(path)
        try:
            return {j.name: j.template for j in await store.queries.jobs(1)}
        finally:
            await store.close()

    assert asyncio.run(templates()) == {"job_17": "job_{n}", "prep": "prep", "run7_part12": "run{n}_part{n}"}


# -- jobs.list and jobs.count -------------------------------------------------------------------

NAMES = """
name: names
jobs:
  - {name: "x_y", command: "true"}
  - {name: "xzy", command: "true"}
  - {name: "A%b", command: "true"}
  - {name: "a_1", command: "true"}
  - {name: "ab", command: "true"}
  - {name: "tail\\\\end", command: "true"}
"""


def test_a_name_filter_is_a_case_insensitive_literal_substring(client, tmp_path):
    wf = submit(client, NAMES, tmp_path)

    def named(text: str) -> list[str]:
        found = [j.name for j in client.jobs(wf, name=text)]
        assert client.count_jobs(wf, name=text) == len(found)
        return found

    assert named("_") == ["x_y", "a_1"]  # not a LIKE wildcard
    assert named("%") == ["A%b"]
    assert named("a") == ["A%b", "a_1", "ab", "tail\\end"]
    assert named("\\") == ["tail\\end"]
    assert named("zz") == []
    assert client.count_jobs(wf) == 6


def test_jobs_sort_by_a_column_either_way_with_ties_broken_by_id(client, tmp_path):
    wf = submit(client, PIPELINE, tmp_path)
    client.wait(wf, timeout=60)
    ids = {j.name: j.id for j in client.jobs(wf)}
    by_name = [j.name for j in client.jobs(wf, sort="name")]
    assert by_name == sorted(ids)
    assert [j.name for j in client.jobs(wf, sort="name", descending=True)] == by_name[::-1]
    by_template = [j.name for j in client.jobs(wf, sort="template")]
    assert by_template == sorted(ids, key=lambda n: (client.job(ids[n]).template, ids[n]))
    assert [j.id for j in client.jobs(wf, sort="status", descending=True)] == sorted(ids.values(), reverse=True)
    page = client.jobs(wf, sort="name", limit=3, offset=2)
    assert [j.name for j in page] == by_name[2:5]
    works = client.jobs(wf, template="work_{i}", status="completed", sort="id", descending=True)
    assert [j.name for j in works] == [f"work_{i}" for i in range(5, 0, -1)]
    assert client.count_jobs(wf, status="completed", template="work_{i}") == 5
    assert client.count_jobs(wf, status="failed") == 0
    assert client.count_jobs(wf, template="work_") == 0  # a template is matched whole


def test_bad_filters_are_refused_naming_the_field(client, tmp_path):
    wf = submit(client, NAMES, tmp_path)
    refused(lambda: client.jobs(wf, sort="colour"), "sort")  # type: ignore[arg-type]
    refused(lambda: client.jobs(wf, name="x" * 513), "name")
    refused(lambda: client.count_jobs(wf, name="x" * 513), "name")
    refused(lambda: client.jobs(wf, status="sleeping"), "$.status")
    refused(lambda: client.count_jobs(wf, status="sleeping"), "$.status")
    refused(lambda: client.call("jobs.count", {"workflow_id": wf, "limit": 3}), "limit")
    refused(lambda: client.call("jobs.list", {"workflow_id": wf, "descending": "yes"}), "descending")
    with pytest.raises(NotFound):
        client.count_jobs(wf + 1)


# -- workflows.graph ----------------------------------------------------------------------------


def test_a_small_workflows_graph_has_a_node_per_job(client, tmp_path):
    wf = submit(client, PIPELINE, tmp_path)
    client.wait(wf, timeout=60)
    ids = {j.name: j.id for j in client.jobs(wf)}
    graph = client.graph(wf)
    assert graph.grouping == "job"
    assert [(n.key, n.label, n.job_id, n.jobs, n.counts) for n in graph.nodes] == [
        (str(i), name, i, 1, {"completed": 1}) for name, i in sorted(ids.items(), key=lambda kv: kv[1])
    ]
    edges = sorted((e.source, e.target, e.count) for e in graph.edges)
    expected = [(ids["prep"], ids[f"work_{i}"]) for i in range(1, 6)]
    expected += [(ids[f"work_{i}"], ids["post"]) for i in range(1, 6)] + [(ids["step_1"], ids["step_2"])]
    assert edges == sorted((str(s), str(t), 1) for s, t in expected)


def test_a_large_workflows_graph_has_a_node_per_template_and_folds_past_max_nodes(client, tmp_path):
    wf = submit(client, PIPELINE, tmp_path)
    client.wait(wf, timeout=60)
    graph = client.graph(wf, max_nodes=8)
    assert graph.grouping == "template"
    assert [(n.key, n.label, n.job_id, n.jobs, n.internal_deps) for n in graph.nodes] == [
        ("prep", "prep", None, 1, 0),
        ("work_{i}", "work_{i}", None, 5, 0),
        ("post", "post", None, 1, 0),
        ("step_{n}", "step_{n}", None, 2, 1),
    ]
    assert graph.nodes[1].counts == {"completed": 5}
    assert sorted((e.source, e.target, e.count) for e in graph.edges) == [
        ("prep", "work_{i}", 5),
        ("work_{i}", "post", 5),
    ]
    folded = client.graph(wf, max_nodes=2)
    assert [(n.key, n.jobs, n.internal_deps) for n in folded.nodes] == [("work_{i}", 5, 0), (OTHER, 4, 1)]
    assert sorted((e.source, e.target, e.count) for e in folded.edges) == [
        ("work_{i}", OTHER, 5),
        (OTHER, "work_{i}", 5),
    ]
    refused(lambda: client.graph(wf, max_nodes=0), "max_nodes")
    refused(lambda: client.graph(wf, max_nodes=5001), "max_nodes")
    with pytest.raises(NotFound):
        client.graph(wf + 1)


# -- workers.list -------------------------------------------------------------------------------


def test_workers_are_listed_with_the_jobs_running_on_them(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    spec = 'name: w\njobs:\n  - {name: one, command: "sleep 30"}\n  - {name: two, command: "true"}\n'
    params = {"spec_text": spec, "cwd": str(tmp_path), "executor": "slurm"}
    wf = d.call("workflows.create", params, WorkflowSummary).id
    with Client(d.socket, autostart=False) as client:
        assert client.workers(wf) == []
        busy = d.call("workers.register", {"workflow_id": wf, "host": "node1", "cpus": 1})["worker_id"]
        idle = d.call("workers.register", {"workflow_id": wf, "host": "node2", "cpus": 4})["worker_id"]
        claimed = d.call("workers.poll", {"worker_id": busy, "free_cpus": 1})["jobs"]
        assert len(claimed) == 1
        job = claimed[0]
        started = StartedReport(job["job_id"], job["run_id"], job["attempt_id"], os.getpid())
        d.call("workers.poll", {"worker_id": busy, "claim": False, "started": [started]})
        workers = client.workers(wf)
        assert [(w.id, w.host, w.cpus, w.state, w.running, w.allocation_id) for w in workers] == [
            (busy, "node1", 1, "active", 1, None),
            (idle, "node2", 4, "active", 0, None),
        ]
        assert workers[0].registered <= workers[0].last_heartbeat and workers[0].ended is None
        with pytest.raises(NotFound):
            client.workers(wf + 1)
        refused(lambda: client.call("workers.list", {"workflow_id": "one"}), "workflow_id")


# -- jobs.explain -------------------------------------------------------------------------------

RETRIED = """
name: retried
failure_handlers:
  - name: h
    rules: [{exit_codes: [3], max_retries: 2}]
jobs:
  - {name: flaky, command: "exit 3", failure_handler: h}
  - {name: plain, command: "true"}
"""


def test_explain_replays_the_jobs_attempts_through_its_failure_handler(client, tmp_path):
    wf = submit(client, RETRIED, tmp_path)
    client.wait(wf, timeout=60)
    jobs = {j.name: j for j in client.jobs(wf)}
    flaky = jobs["flaky"].id
    told = client.explain(flaky)
    assert (told.job_id, told.job_name, told.failure_handler, told.use_pending_failed) == (flaky, "flaky", "h", None)
    assert told.exit_codes == [3, 3]
    assert [(s.attempt, s.return_code, s.action, s.status) for s in told.steps] == [
        (1, 3, "retry", "ready"),
        (2, 3, "fail", "failed"),
    ]
    assert told.final_status == "failed" == jobs["flaky"].status
    what_if = client.explain(flaky, [3, 0])
    assert [s.action for s in what_if.steps] == ["retry", "complete"] and what_if.final_status == "completed"
    unhandled = client.explain(jobs["plain"].id, [5])
    assert unhandled.failure_handler is None and unhandled.steps[0].status == "failed"
    reply = client.call("jobs.explain", {"job_id": flaky, "exit_codes": [7]})
    assert json.loads(json.dumps(reply))["steps"][0]["action"] == "pending_failed"
    refused(lambda: client.explain(flaky, [1] * 101), "exit_codes")
    refused(lambda: client.call("jobs.explain", {"job_id": flaky, "exit_codes": ["x"]}), "exit_codes")
    with pytest.raises(NotFound):
        client.explain(flaky + 100)


# -- every workflow's events --------------------------------------------------------------------


def test_the_all_workflows_stream_gives_every_workflows_events_in_global_order(client, tmp_path):
    first = submit(client, 'name: one\njobs:\n  - {name: a, command: "true"}\n', tmp_path)
    client.wait(first, timeout=60)
    mark = client.call("events.list", {"workflow_id": first})[-1]["seq"]
    second = submit(client, 'name: two\njobs:\n  - {name: b, command: "true"}\n', tmp_path)
    client.wait(second, timeout=60)

    def read(stream, count: int) -> list:
        got = list(itertools.islice(stream, count))
        stream.close()
        return got

    total = len(client.call("events.list", {"workflow_id": first})) + len(
        client.call("events.list", {"workflow_id": second})
    )
    everything = read(client.all_events(), total)
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert {e.workflow_id for e in everything} == {first, second}
    later = read(client.all_events(after=mark, kinds=frozenset({"workflow_created", "job_completed"})), 2)
    assert [(e.kind, e.workflow_id) for e in later] == [("workflow_created", second), ("job_completed", second)]


def test_the_all_workflows_stream_is_live_and_refuses_until_done(client, tmp_path):
    stream = client.all_events(after=0, kinds=frozenset({"workflow_created"}))
    wf = submit(client, 'name: live\njobs:\n  - {name: a, command: "true"}\n', tmp_path)
    event = next(stream)
    stream.close()
    assert (event.kind, event.workflow_id) == ("workflow_created", wf)
    conn = client.transport._connection()
    try:
        conn.request("GET", "/events?all=1&until_done=1")
        resp = conn.getresponse()
        assert resp.status == 400 and b"until_done" in resp.read()
    finally:
        conn.close()


def test_the_async_client_follows_every_workflows_events(client, tmp_path):
    from torcctl import AsyncClient

    wf = submit(client, 'name: a\njobs:\n  - {name: a, command: "true"}\n', tmp_path)

    async def first_event():
        async with AsyncClient(client=client) as ac:
            async for event in ac.all_events(kinds=frozenset({"workflow_created"})):
                return event, await ac.count_jobs(wf), (await ac.graph(wf)).grouping

    event, count, grouping = asyncio.run(first_event())
    assert (event.workflow_id, count, grouping) == (wf, 1, "job")


# -- changes recorded as the dashboard's -------------------------------------------------------

PARKED = """
name: parked
failure_handlers:
  - name: h
    rules: [{exit_codes: [3], max_retries: 1}]
jobs:
  - {name: odd, command: "exit 5", failure_handler: h}
  - {name: odd2, command: "exit 5", failure_handler: h}
"""


def test_a_classification_from_the_dashboard_is_recorded_as_the_dashboards(client, tmp_path):
    wf = submit(client, PARKED, tmp_path)
    client.wait(wf, timeout=60)
    ids = {j.name: j.id for j in client.jobs(wf, status="pending_failed")}
    assert client.fail(ids["odd"], "looked at it", source="dashboard") == [ids["odd"]]
    assert client.classify(wf, {ids["odd2"]: ("fail", "same")}, source="dashboard") == [ids["odd2"]]
    classified = [e for e in client.events(wf, follow=False) if e.kind == "job_classified"]
    assert [(e.job_id, e.source) for e in classified] == [(ids["odd"], "dashboard"), (ids["odd2"], "dashboard")]
    refused(lambda: client.retry(ids["odd"], "x", source="browser"), "source")
    client.update_resources(ids["odd"], "it needs more", memory="64m", source="dashboard")
    changed = [e for e in client.events(wf, follow=False) if e.kind == "job_resources_changed"]
    assert [(e.job_id, e.source) for e in changed] == [(ids["odd"], "dashboard")]
