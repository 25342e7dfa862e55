"""The store's reads: workflows, jobs, attempts, results, files, user data, events and the
aggregates for /metrics, all on the read-only connection (what the last commit left)."""

from __future__ import annotations

import collections
import os
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import msgspec

from torcd.core.graph import GraphEdge, GraphNode, fold_graph, graph_nodes
from torcd.core.retry import Rule
from torcd.core.spawning import Spawning, spawning_of
from torcd.core.status import JobStatus
from torcd.errors import NotFound
from torcd.events import Event
from torcd.protocol import AttemptInfo, JobInfo, WorkflowSummary
from torcd.store.db import Database

S = JobStatus
_event_decoder = msgspec.json.Decoder(Event)
COUNTS = "SELECT status, count(*) FROM jobs WHERE workflow_id = ? GROUP BY status"
_JOB_INFO = """SELECT j.*, h.name AS handler,
                   (SELECT return_code FROM attempts a WHERE a.job_id = j.id
                    ORDER BY a.run_id DESC, a.attempt_id DESC LIMIT 1) AS rc,
                   (SELECT stderr_path FROM attempts a WHERE a.job_id = j.id
                    ORDER BY a.run_id DESC, a.attempt_id DESC LIMIT 1) AS stderr_path
               FROM jobs j LEFT JOIN failure_handlers h ON h.id = j.handler_id"""


SORTS = frozenset({"id", "name", "status", "attempt_id", "updated", "template"})  # columns jobs sort by


class JobFilter(NamedTuple):
    """Which of a workflow's jobs: in a status, with `name` in theirs (case-insensitive for
    ASCII), made from `template`; None: any."""

    status: JobStatus | None = None
    name: str | None = None
    template: str | None = None
    label: str | None = None  # with this label
    labelled: bool | None = None  # with a label (any), or without


def _job_filter(wf: int, which: JobFilter) -> tuple[str, list]:
    where: list[str] = ["j.workflow_id = ?"]
    args: list[int | str] = [wf]
    if which.status is not None:
        where.append("j.status = ?")
        args.append(int(which.status))
    if which.name:
        literal = which.name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append("j.name LIKE ? ESCAPE '\\'")
        args.append(f"%{literal}%")
    if which.template is not None:
        where.append("j.template = ?")
        args.append(which.template)
    if which.label is not None:
        where.append("j.label = ?")
        args.append(which.label)
    if which.labelled is not None:
        where.append("j.label IS NOT NULL" if which.labelled else "j.label IS NULL")
    return " AND ".join(where), args


Grouping = Literal["job", "template"]
# Dependencies between two of the workflow's jobs, as (upstream's key, downstream's key, count).
_GRAPH_DEPS = """SELECT u.{key}, j.{key}, count(*) FROM jobs j JOIN deps d ON d.job_id = j.id
                 JOIN jobs u ON u.id = d.depends_on WHERE j.workflow_id = ? GROUP BY u.{key}, j.{key}"""


class FailureHandling(NamedTuple):
    job_name: str
    handler: str | None
    rules: list[Rule] | None  # None: the job has no failure handler
    use_pending_failed: bool | None
    exits: list[tuple[int, str | None]]  # (return code, cause) of each attempt of its current run


# The time of a workflow's latest event: one step down the events index per workflow.
_LAST_EVENT = """(SELECT json_extract(CAST(e.body AS TEXT), '$.time') FROM events e
                  WHERE e.workflow_id = w.id ORDER BY e.seq DESC LIMIT 1) AS last_event"""

RECOVERY_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)  # seconds
RUNTIME_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 86400)  # seconds
MEMORY_BUCKETS = tuple(1 << n for n in range(24, 41, 2))  # 16 MiB to 1 TiB, by fours


def _histogram(value: str, buckets: tuple) -> str:
    """count, sum and the cumulative bucket counts of `value` over ended attempts, by workflow."""
    return f"""SELECT workflow_id, count(*), total({value}),
                      {", ".join(f"sum({value} <= {b})" for b in buckets)}
               FROM attempts WHERE end_time IS NOT NULL AND {value} IS NOT NULL GROUP BY workflow_id"""


_METRIC_QUERIES = {
    "jobs": "SELECT workflow_id, status, count(*) FROM jobs GROUP BY workflow_id, status",
    "attempts": "SELECT workflow_id, count(*) FROM attempts GROUP BY workflow_id",
    "decisions": """SELECT a.workflow_id, coalesce(h.name, ''), coalesce(a.rule_index, -1), a.return_code,
                           a.action, count(*) FROM attempts a JOIN jobs j ON j.id = a.job_id
                    LEFT JOIN failure_handlers h ON h.id = j.handler_id WHERE a.action IS NOT NULL
                    GROUP BY 1, 2, 3, 4, 5""",
    "recoveries": _histogram("recovery_seconds", RECOVERY_BUCKETS),
    "runtimes": _histogram("end_time - start_time", RUNTIME_BUCKETS),
    "peak_memory": _histogram("peak_rss_bytes", MEMORY_BUCKETS),
    "allocations": "SELECT workflow_id, state, count(*) FROM allocations GROUP BY workflow_id, state",
}


def labelled(rows: Iterable[Sequence]) -> dict[str, int]:
    return {S(status).label: n for status, n in rows}


class Queries:
    """Reads, for the RPC handlers and the services that look before they act."""

    def __init__(self, db: Database):
        self.db = db

    async def _counts(self, wf: int) -> dict[str, int]:
        return labelled(await self.db.rows(COUNTS, (wf,)))

    async def workflow(self, wf: int) -> WorkflowSummary:
        rows = await self.db.rows(f"SELECT w.*, {_LAST_EVENT} FROM workflows w WHERE id = ?", (wf,))
        if not rows:
            raise NotFound(f"no workflow {wf}")
        return _summary(rows[0], await self._counts(wf))

    async def spawning(self, wf: int) -> Spawning:
        """What jobs added to the workflow are read with (its env, requirements and stdio)."""
        rows = await self.db.rows("SELECT spawning FROM workflows WHERE id = ?", (wf,))
        if not rows:
            raise NotFound(f"no workflow {wf}")
        return spawning_of(rows[0][0])

    async def exists(self, wf: int) -> None:
        """NotFound unless the workflow exists (without counting its jobs, as `workflow` does)."""
        if not await self.db.rows("SELECT 1 FROM workflows WHERE id = ?", (wf,)):
            raise NotFound(f"no workflow {wf}")

    async def plot_directory(self, wf: int) -> str | None:
        """Where the workflow's resource plots go when it ends; None: it asked for none (or is gone)."""
        rows = await self.db.rows("SELECT output_dir FROM workflows WHERE id = ? AND generate_plots", (wf,))
        return os.path.join(rows[0][0], "resource_plots") if rows else None

    async def workflows(self) -> list[WorkflowSummary]:
        rows = await self.db.rows(f"SELECT w.*, {_LAST_EVENT} FROM workflows w ORDER BY id")
        counts: dict[int, list] = collections.defaultdict(list)
        for wf, status, n in await self.db.rows(
            "SELECT workflow_id, status, count(*) FROM jobs GROUP BY workflow_id, status"
        ):
            counts[wf].append((status, n))
        return [_summary(r, labelled(counts[r["id"]])) for r in rows]

    async def jobs(
        self,
        wf: int,
        status: JobStatus | None = None,
        limit: int = 10_000,
        offset: int = 0,
        *,
        name: str | None = None,
        template: str | None = None,
        sort: str = "id",
        descending: bool = False,
    ) -> list[JobInfo]:
        """A page of the workflow's jobs (those in `status`, with `name` in theirs, made from
        `template`), ordered by `sort`, then id."""
        await self.exists(wf)
        where, args = _job_filter(wf, JobFilter(status, name, template))
        if sort not in SORTS:
            raise ValueError(f"cannot sort jobs by {sort!r}")
        way = "DESC" if descending else "ASC"
        order = f"j.id {way}" if sort == "id" else f"j.{sort} {way}, j.id {way}"
        rows = await self.db.rows(
            f"{_JOB_INFO} WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?", (*args, limit, offset)
        )
        return [_job_info(r) for r in rows]

    async def count_jobs(self, wf: int, which: JobFilter) -> int:
        await self.exists(wf)
        where, args = _job_filter(wf, which)
        return int((await self.db.rows(f"SELECT count(*) FROM jobs j WHERE {where}", args))[0][0])

    async def job(self, job_id: int) -> JobInfo:
        rows = await self.db.rows(f"{_JOB_INFO} WHERE j.id = ?", (job_id,))
        if not rows:
            raise NotFound(f"no job {job_id}")
        info = _job_info(rows[0])
        info.depends_on = [
            r[0]
            for r in await self.db.rows("SELECT depends_on FROM deps WHERE job_id = ? ORDER BY depends_on", (job_id,))
        ]
        return info

    async def attempts(self, job_id: int) -> list[AttemptInfo]:
        await self.job(job_id)
        rows = await self.db.rows("SELECT * FROM attempts WHERE job_id = ? ORDER BY run_id, attempt_id", (job_id,))
        return [_attempt_info(r) for r in rows]

    async def results(
        self, wf: int, all_runs: bool, failed: bool, return_code: int | None, limit: int, after_job_id: int = 0
    ) -> list[AttemptInfo]:
        """The workflow's attempts (its current run unless `all_runs`), with the job's name, by job
        id from after `after_job_id`. A full page ends with a whole job: the next page starts after
        its last job (unless one job alone has `limit` attempts)."""
        await self.exists(wf)
        sql = """SELECT a.*, j.name AS job_name FROM attempts a JOIN jobs j ON j.id = a.job_id
                 WHERE a.workflow_id = ? AND a.job_id > ? AND (? OR a.run_id = j.run_id)
                   AND (NOT ? OR a.return_code != 0) AND (? IS NULL OR a.return_code = ?)
                 ORDER BY a.job_id, a.run_id, a.attempt_id LIMIT ?"""
        args = (wf, after_job_id, all_runs, failed, return_code, return_code, limit)
        rows = await self.db.rows(sql, args)
        if len(rows) == limit and rows[0]["job_id"] != rows[-1]["job_id"]:
            cut = rows[-1]["job_id"]
            rows = [r for r in rows if r["job_id"] != cut]
        elif len(rows) == limit:  # one job with more attempts than a page: all of them, past the limit
            whole = (wf, rows[0]["job_id"], *args[2:-1])
            rows = await self.db.rows(sql.replace("a.job_id > ?", "a.job_id = ?").replace("LIMIT ?", ""), whole)
        return [_attempt_info(r, r["job_name"]) for r in rows]

    async def files(self, wf: int, limit: int) -> list[sqlite3.Row]:
        """The workflow's files with the job that writes each and the jobs that read it."""
        await self.exists(wf)
        return await self.db.rows(
            """SELECT f.name, f.path, p.name AS producer, w.cwd,
                      (SELECT group_concat(j.name, char(31)) FROM file_readers r JOIN jobs j ON j.id = r.job_id
                       WHERE r.file_id = f.id) AS readers
               FROM files f JOIN workflows w ON w.id = f.workflow_id LEFT JOIN jobs p ON p.id = f.producer
               WHERE f.workflow_id = ? ORDER BY f.id LIMIT ?""",
            (wf, limit),
        )

    async def datasets(self, wf: int) -> list[sqlite3.Row]:
        """The workflow's datasets with the jobs that write each and those that read it."""
        await self.exists(wf)
        jobs_of = """(SELECT group_concat(j.name, char(31)) FROM dataset_jobs r JOIN jobs j ON j.id = r.job_id
                      WHERE r.dataset_id = d.id AND r.writes = {})"""
        return await self.db.rows(
            f"""SELECT d.name, d.path, d.hash_mode, d.description, w.cwd,
                       {jobs_of.format(1)} AS writers, {jobs_of.format(0)} AS readers
                FROM datasets d JOIN workflows w ON w.id = d.workflow_id WHERE d.workflow_id = ? ORDER BY d.id""",
            (wf,),
        )

    async def user_data(self, wf: int, name: str | None = None, limit: int = 1) -> list[sqlite3.Row]:
        """The workflow's user data (one entry, by name), with the job that writes each."""
        await self.exists(wf)
        return await self.db.rows(
            f"""SELECT u.name, u.data, u.is_ephemeral, u.updated, p.name AS producer FROM user_data u
                LEFT JOIN jobs p ON p.id = u.producer WHERE u.workflow_id = ? {"AND u.name = ?" if name else ""}
                ORDER BY u.id LIMIT ?""",
            (wf, name, 1) if name else (wf, limit),
        )

    async def events(self, wf: int, after: int = 0, limit: int = 10_000, last: int | None = None) -> list[Event]:
        """Events after `after` in order: the first `limit`, or with `last`, the latest `last`."""
        await self.exists(wf)
        if last is not None:
            rows = await self.db.rows(
                "SELECT body FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq DESC LIMIT ?",
                (wf, after, min(last, limit)),
            )
            rows.reverse()
        else:
            rows = await self.db.rows(
                "SELECT body FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq LIMIT ?", (wf, after, limit)
            )
        return [_event_decoder.decode(r[0]) for r in rows]

    async def all_events(self, after: int = 0, limit: int = 10_000, latest: bool = False) -> list[Event]:
        """Every workflow's events after global sequence `after`, in order (`latest`: the last
        `limit` of them, rather than the first)."""
        way = "DESC" if latest else "ASC"
        rows = await self.db.rows(f"SELECT body FROM events WHERE seq > ? ORDER BY seq {way} LIMIT ?", (after, limit))
        if latest:
            rows.reverse()
        return [_event_decoder.decode(r[0]) for r in rows]

    async def graph(self, wf: int, max_nodes: int) -> tuple[Grouping, list[GraphNode], list[GraphEdge]]:
        """The workflow's DAG, one node per job when it has at most `max_nodes`, else per template."""
        await self.exists(wf)
        (total,) = (await self.db.rows("SELECT count(*) FROM jobs WHERE workflow_id = ?", (wf,)))[0]
        if total <= max_nodes:
            jobs = await self.db.rows("SELECT id, name, status FROM jobs WHERE workflow_id = ? ORDER BY id", (wf,))
            deps = await self.db.rows(_GRAPH_DEPS.format(key="id"), (wf,))
            nodes = graph_nodes((str(r[0]), r[1], r[0], S(r[2]).label, 1) for r in jobs)
            edges = ((str(r[0]), str(r[1]), r[2]) for r in deps)
            return "job", *fold_graph(nodes, edges, max_nodes)
        groups = await self.db.rows(
            """SELECT template, status, count(*), min(id) FROM jobs WHERE workflow_id = ?
               GROUP BY template, status""",
            (wf,),
        )
        first: dict[str, int] = {}  # each template's first job, to order the nodes as the spec did
        for r in groups:
            first[r[0]] = min(first.get(r[0], r[3]), r[3])
        groups.sort(key=lambda r: (first[r[0]], r[1]))
        nodes = graph_nodes((r[0], r[0], None, S(r[1]).label, r[2]) for r in groups)
        deps = await self.db.rows(_GRAPH_DEPS.format(key="template"), (wf,))
        return "template", *fold_graph(nodes, ((r[0], r[1], r[2]) for r in deps), max_nodes)

    async def workers(self, wf: int) -> list[sqlite3.Row]:
        """The workflow's workers, each with how many jobs run on it now."""
        await self.exists(wf)
        return await self.db.rows(
            f"""SELECT w.*, (SELECT count(*) FROM jobs j WHERE j.worker_id = w.id AND j.status = {int(S.RUNNING)})
                AS running FROM workers w WHERE w.workflow_id = ? ORDER BY w.id""",
            (wf,),
        )

    async def actions(self, wf: int) -> list[sqlite3.Row]:
        """The workflow's actions in spec order, each with its state and last firing."""
        await self.exists(wf)
        return await self.db.rows("SELECT * FROM actions WHERE workflow_id = ? ORDER BY idx", (wf,))

    async def failure_handling(self, job_id: int) -> FailureHandling:
        """What the retry engine decides a job's failures by: its handler's rules and its
        workflow's use_pending_failed; and the exits of its attempts in the current run."""
        rows = await self.db.rows(
            """SELECT j.name, j.run_id, h.name AS handler, h.rules, w.use_pending_failed FROM jobs j
               JOIN workflows w ON w.id = j.workflow_id LEFT JOIN failure_handlers h ON h.id = j.handler_id
               WHERE j.id = ?""",
            (job_id,),
        )
        if not rows:
            raise NotFound(f"no job {job_id}")
        r = rows[0]
        exits = await self.db.rows(
            """SELECT return_code, cause FROM attempts WHERE job_id = ? AND run_id = ? AND return_code IS NOT NULL
               ORDER BY attempt_id""",
            (job_id, r["run_id"]),
        )
        upf = r["use_pending_failed"]
        return FailureHandling(
            r["name"],
            r["handler"],
            msgspec.json.decode(r["rules"], type=list[Rule]) if r["rules"] else None,
            None if upf is None else bool(upf),
            [(e[0], e[1]) for e in exits],
        )

    async def metric_rows(self) -> dict[str, list[sqlite3.Row]]:
        """Aggregates for /metrics, all from the tables (so they survive restarts)."""
        return {name: await self.db.rows(sql) for name, sql in _METRIC_QUERIES.items()}


def _attempt_info(r: sqlite3.Row, job_name: str | None = None) -> AttemptInfo:
    return AttemptInfo(
        job_id=r["job_id"],
        run_id=r["run_id"],
        attempt_id=r["attempt_id"],
        start_time=r["start_time"],
        end_time=r["end_time"],
        pid=r["pid"],
        host=r["host"],
        return_code=r["return_code"],
        rule_index=r["rule_index"],
        action=r["action"],
        recovery_outcome=r["recovery_outcome"],
        message=r["message"],
        cause=r["cause"],
        gpus=r["gpus"],
        runtime_limit=r["runtime_limit"],
        memory_limit=r["memory_limit"],
        peak_memory=r["peak_rss_bytes"],
        cpu_seconds=r["cpu_seconds"],
        stdout_path=r["stdout_path"],
        stderr_path=r["stderr_path"],
        job_name=job_name,
    )


def _summary(r: sqlite3.Row, counts: dict[str, int]) -> WorkflowSummary:
    about = msgspec.json.decode(r["about"]) if r["about"] else {}
    return WorkflowSummary(
        id=r["id"],
        name=r["name"],
        state=r["state"],
        run_id=r["run_id"],
        created=r["created"],
        cwd=r["cwd"],
        output_dir=r["output_dir"],
        description=r["description"],
        counts=counts,
        executor=r["executor"],
        user=about.get("user"),
        project=about.get("project"),
        metadata=about.get("metadata"),
        last_event=r["last_event"],
    )


def _job_info(r: sqlite3.Row) -> JobInfo:
    return JobInfo(
        id=r["id"],
        workflow_id=r["workflow_id"],
        name=r["name"],
        command=r["command"],
        status=S(r["status"]).label,
        attempt_id=r["attempt_id"],
        run_id=r["run_id"],
        num_cpus=r["num_cpus"],
        failure_handler=r["handler"],
        reason=r["reason"],
        return_code=r["rc"],
        stderr_path=r["stderr_path"],
        num_gpus=r["num_gpus"],
        memory_bytes=r["memory_bytes"],
        runtime_seconds=r["runtime_seconds"],
        template=r["template"],
        lineage=r["lineage"],
        scheduler=r["scheduler"],
    )
