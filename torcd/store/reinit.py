"""`workflows reinitialize`: the facts `core.changes` decides on, read in the transaction that
applies its plan (the files' times are taken just before, outside it)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from torcd.core.changes import FileFacts, JobFacts, MissingInput, plan_rerun
from torcd.core.status import ACTIVE, JobStatus
from torcd.errors import InvalidParams, InvalidTransition
from torcd.store import actions as store_actions
from torcd.store.db import Tx, require_workflow
from torcd.store.lifecycle import reset_jobs

_ACTIVE_SQL = ",".join(str(int(s)) for s in ACTIVE)


def file_paths(tx: Tx, wf: int) -> tuple[str, dict[str, str], dict[str, str], set[str]]:
    """The workflow's directory, each of its files' and datasets' paths by name, and the
    datasets some job reads."""
    cwd = require_workflow(tx, wf)["cwd"]
    files = {name: path for name, path in tx.rows("SELECT name, path FROM files WHERE workflow_id = ?", (wf,))}
    datasets = {name: path for name, path in tx.rows("SELECT name, path FROM datasets WHERE workflow_id = ?", (wf,))}
    read = {
        name
        for (name,) in tx.rows(
            """SELECT d.name FROM datasets d WHERE d.workflow_id = ?
               AND EXISTS (SELECT 1 FROM dataset_jobs r WHERE r.dataset_id = d.id AND r.writes = 0)""",
            (wf,),
        )
    }
    return cwd, files, datasets, read


def reinitialize(
    tx: Tx,
    wf: int,
    mtimes: Mapping[str, float | None],
    dry_run: bool,
    set_mtimes: Mapping[str, float | None] | None = None,
) -> dict[str, str]:
    """Put back to run the jobs whose inputs changed since they ran (and what depends on them);
    return each one's name and why. `mtimes`: each file's modification time now (None: gone);
    `set_mtimes`: each dataset's newest."""
    row = require_workflow(tx, wf)
    busy = tx.one_row(f"SELECT count(*) FROM jobs WHERE workflow_id = ? AND status IN ({_ACTIVE_SQL})", (wf,))[0]
    if busy:
        raise InvalidTransition(f"workflow {wf} has {busy} unfinished jobs; cancel it or wait before reinitializing")
    inputs, outputs, data_inputs = defaultdict(list), defaultdict(list), defaultdict(list)
    for job, name in tx.rows(
        "SELECT r.job_id, f.name FROM file_readers r JOIN files f ON f.id = r.file_id WHERE f.workflow_id = ?", (wf,)
    ):
        inputs[job].append(name)
    produced = set()
    for job, name in tx.rows("SELECT producer, name FROM files WHERE workflow_id = ? AND producer IS NOT NULL", (wf,)):
        outputs[job].append(name)
        produced.add(name)
    for job, name in tx.rows(
        "SELECT r.job_id, d.name FROM data_readers r JOIN user_data d ON d.id = r.data_id WHERE d.workflow_id = ?",
        (wf,),
    ):
        data_inputs[job].append(name)
    set_inputs, set_outputs, set_made = _dataset_uses(tx, wf)
    jobs = [
        JobFacts(
            id_,
            name,
            JobStatus(status),
            started,
            inputs[id_],
            outputs[id_],
            data_inputs[id_],
            set_inputs[id_],
            set_outputs[id_],
        )
        for id_, name, status, started in tx.rows(
            """SELECT j.id, j.name, j.status, (SELECT max(a.start_time) FROM attempts a WHERE a.job_id = j.id)
               FROM jobs j WHERE j.workflow_id = ? ORDER BY j.id""",
            (wf,),
        )
    ]
    files = {
        name: FileFacts(name, mtimes.get(name), name in produced)
        for (name,) in tx.rows("SELECT name FROM files WHERE workflow_id = ?", (wf,))
    }
    data_updated = {name: t for name, t in tx.rows("SELECT name, updated FROM user_data WHERE workflow_id = ?", (wf,))}
    children = defaultdict(list)
    for parent, child in tx.rows(
        "SELECT d.depends_on, d.job_id FROM deps d JOIN jobs j ON j.id = d.job_id WHERE j.workflow_id = ?", (wf,)
    ):
        children[parent].append(child)
    datasets = {
        name: FileFacts(name, (set_mtimes or {}).get(name), name in set_made)
        for (name,) in tx.rows("SELECT name FROM datasets WHERE workflow_id = ?", (wf,))
    }
    try:
        plan = plan_rerun(jobs, files, data_updated, children, datasets)
    except MissingInput as e:
        table = "datasets" if e.what == "dataset" else "files"
        path = tx.one_row(f"SELECT path FROM {table} WHERE workflow_id = ? AND name = ?", (wf, e.name))[0]
        raise InvalidParams(
            f"input {e.what} {e.name!r} ({path}) is gone and no job writes it; restore it first",
            {"field": f"$.{table}"},
        ) from None
    if plan and not dry_run:
        store_actions.rearm(tx, wf)
        reset_jobs(tx, row, list(plan), "changed inputs")
    names = {job.id: job.name for job in jobs}
    return {names[j]: why for j, why in plan.items()}


def _dataset_uses(tx: Tx, wf: int) -> tuple[defaultdict[int, list[str]], defaultdict[int, list[str]], set[str]]:
    """The datasets each job reads, those each writes, and the datasets some job writes."""
    inputs: defaultdict[int, list[str]] = defaultdict(list)
    outputs: defaultdict[int, list[str]] = defaultdict(list)
    made: set[str] = set()
    for job, name, writes in tx.rows(
        """SELECT r.job_id, d.name, r.writes FROM dataset_jobs r JOIN datasets d ON d.id = r.dataset_id
           WHERE d.workflow_id = ?""",
        (wf,),
    ):
        (outputs if writes else inputs)[job].append(name)
        if writes:
            made.add(name)
    return inputs, outputs, made
