"""The value types every layer shares: one exit, the exit codes that mean something, whether a
job fits, failure-handler rules and what an action does to a job's status."""

from __future__ import annotations

import itertools
import signal
import sqlite3

import msgspec
import pytest

from torcctl.worker.journal import Saved
from torcd import protocol as p
from torcd.core import exits as X
from torcd.core.resources import Capacity, Requirements, fit_bounds, fits, shortfalls
from torcd.core.retry import AFTER_ACTION, Action, Rule, simulate
from torcd.core.slurm_plan import JobNeed, NodeShape, misfit
from torcd.core.status import JobStatus as S
from torcd.core.status import check_transition
from torcd.store.workers import FITS

# -- one exit ----------------------------------------------------------------

# What the worker before this change wrote: its journal and its polls' `exits` entries.
OLD_JOURNAL = (
    b'{"worker_id":3,"exits":[{"job_id":1,"run_id":1,"attempt_id":2,"return_code":137,'
    b'"end_time":12.5,"message":"killed","cause":"oom","peak_memory":1024,"cpu_seconds":0.5},'
    b'{"job_id":2,"run_id":1,"attempt_id":1,"return_code":0,"end_time":13.0,"message":null,'
    b'"cause":null,"peak_memory":null,"cpu_seconds":null}],"started":[],"recoveries":[]}'
)


def test_an_old_journal_decodes_and_encodes_to_the_same_bytes():
    saved = msgspec.json.decode(OLD_JOURNAL, type=Saved)
    assert saved.exits[0] == X.Exit(1, 1, 2, 137, 12.5, "killed", "oom", 1024, 0.5)
    assert msgspec.json.encode(saved) == OLD_JOURNAL


def test_the_wire_exit_is_the_exit_the_executor_makes():
    assert p.ExitReport is X.Exit
    poll = p.WorkerPoll(worker_id=1, exits=[X.Exit(1, 1, 1, 0, 2.0)])
    assert msgspec.json.decode(msgspec.json.encode(poll), type=p.WorkerPoll) == poll


@pytest.mark.parametrize(
    "entry",
    [
        {"return_code": 256},
        {"return_code": -1},
        {"job_id": 0},
        {"end_time": float("inf")},
        {"cause": "tired"},
        {"peak_memory": -1},
        {"workflow_id": 1},
    ],
)
def test_an_exit_out_of_bounds_is_refused_at_the_door(entry):
    fields = {"job_id": 1, "run_id": 1, "attempt_id": 1, "return_code": 0, "end_time": 1.0} | entry
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(fields), type=X.Exit)


# -- exit codes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "code, expected",
    [
        (X.SIGKILL_EXIT, 128 + signal.SIGKILL),
        (X.SIGTERM_EXIT, 128 + signal.SIGTERM),
        (X.SIGXCPU_EXIT, 128 + signal.SIGXCPU),
        (X.UNKNOWN_EXIT, 137),
        (X.CANNOT_EXECUTE, 126),
        (X.NOT_FOUND, 127),
        (X.signal_return_code(-signal.SIGKILL), 137),
        (X.signal_return_code(3), 3),
    ],
)
def test_named_exit_codes(code, expected):
    assert code == expected


# -- does this job fit -------------------------------------------------------------

G = 1 << 30


@pytest.mark.parametrize(
    "need, free, short",
    [
        (Requirements(), Capacity(), []),
        (Requirements(4), Capacity(cpus=3), ["cpus"]),
        (Requirements(4), Capacity(cpus=4), []),
        (Requirements(memory_bytes=2 * G), Capacity(memory=G), ["memory"]),
        (Requirements(), Capacity(memory=0), []),  # no memory limit: needs none
        (Requirements(num_gpus=1), Capacity(gpus=0), ["gpus"]),
        (Requirements(num_gpus=1), Capacity(), []),  # GPUs not counted
        (Requirements(runtime_seconds=61), Capacity(runtime=60), ["runtime"]),
        (Requirements(), Capacity(runtime=1), []),  # no runtime: fits any walltime
        (
            Requirements(8, 2, memory_bytes=2 * G, runtime_seconds=9),
            Capacity(1, G, 1, 8),
            ["cpus", "memory", "gpus", "runtime"],
        ),
    ],
)
def test_shortfalls(need, free, short):
    assert shortfalls(need, free) == short
    assert fits(need, free) == (not short)


def test_what_is_left_after_a_job_counts_only_what_was_counted():
    assert Capacity(4, None, 2, 60.0).minus(Requirements(1, 1, memory_bytes=G)) == Capacity(3, None, 1, 60.0)
    assert Capacity(4, 2 * G).minus(Requirements()) == Capacity(3, 2 * G)


def test_the_claim_sql_and_the_function_agree_on_every_job_and_capacity():
    db = sqlite3.connect(":memory:")
    db.execute("""CREATE TABLE jobs (id INTEGER PRIMARY KEY, num_cpus, num_gpus, memory_bytes, memory_scale,
                  runtime_seconds, runtime_scale)""")
    jobs = list(itertools.product([1, 4], [0, 2], [None, G], [1.0, 1.5], [None, 60.0], [1.0, 2.0]))
    db.executemany("INSERT INTO jobs VALUES (NULL, ?, ?, ?, ?, ?, ?)", jobs)
    for free in itertools.starmap(
        Capacity, itertools.product([1, 4, 8], [None, 0, G, 2 * G], [None, 0, 2], [None, 60.0, 120.0])
    ):
        by_sql = {r[0] for r in db.execute(f"SELECT id FROM jobs j WHERE {FITS}", fit_bounds(free))}
        by_function = {
            i
            for i, (cpus, gpus, mem, ms, rt, rs) in enumerate(jobs, 1)
            if fits(
                Requirements(
                    cpus,
                    gpus,
                    memory_bytes=None if mem is None else int(mem * ms),
                    runtime_seconds=None if rt is None else rt * rs,
                ),
                free,
            )
        }
        assert by_sql == by_function, free


@pytest.mark.parametrize(
    "job, why",
    [
        (JobNeed("a", cpus=5), "needs 5 CPUs; a node has 4"),
        (JobNeed("a", memory=2 * G), "needs 2.0 GiB of memory; a node has 1.0 GiB"),
        (JobNeed("a", gpus=1), "needs 1 GPUs; a node has 0"),
        (JobNeed("a", runtime=7200.0), "needs a runtime of 2h; the walltime is 60min"),
        (JobNeed("a", cpus=4, memory=G, runtime=3600.0), None),
    ],
)
def test_the_slurm_planner_says_why_a_job_fits_no_node(job, why):
    assert misfit(job, NodeShape(4, G), 3600.0) == why


# -- rules and actions ------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        {"max_retries": 0},
        {"exit_codes": [0]},
        {"exit_codes": [256]},
        {"causes": []},
        {"causes": ["tired"]},
        {"recovery_script": ""},
        {"recovery_timeout": 0},
        {"memory_multiplier": 0},
        {"retries": 3},
    ],
)
def test_a_rule_out_of_bounds_is_refused_when_decoded(rule):
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(rule, Rule)


def test_every_action_leads_to_a_status_the_table_allows_from_running():
    assert set(AFTER_ACTION) == set(Action)
    for new in AFTER_ACTION.values():
        check_transition(S.RUNNING, new, 1)


def test_a_simulated_recovery_is_taken_to_succeed():
    rules = [Rule(match_all_exit_codes=True, recovery_script="./fix.sh", max_retries=2)]
    assert [s.status for s in simulate(rules, None, [1, 1])] == ["ready", "failed"]


def test_core_imports_nothing_above_it():
    import ast
    from pathlib import Path

    allowed = ("torcd.core", "torcd.errors", "torcd.events")
    for path in (Path(__file__).resolve().parent.parent / "torcd" / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torcd"):
                names = [node.module] if node.module != "torcd" else [f"torcd.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("torcd")]
            else:
                continue
            for n in names:
                assert n.startswith(allowed), f"{path.name} imports {n}"
