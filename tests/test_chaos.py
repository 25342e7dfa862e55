"""kill -9 of the daemon at random moments while a few hundred jobs fail and retry: nothing is lost.

The short run is part of the suite. The long one runs on demand, e.g.
TORC_CHAOS_JOBS=1000 TORC_CHAOS_KILLS=200 TORC_CHAOS_SEED=7 python -m pytest tests/test_chaos.py
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

from test_crash import check_history

from torcd.core.retry import Action, Rule, decide

JOBS = int(os.environ.get("TORC_CHAOS_JOBS", "240"))
KILLS = int(os.environ.get("TORC_CHAOS_KILLS", "20"))
SEED = int(os.environ.get("TORC_CHAOS_SEED", "1"))

RULES = [
    Rule(exit_codes=[10], max_retries=3),
    Rule(exit_codes=[20], recovery_script="echo $TORC_JOB_NAME >> recovered.log", max_retries=3),
]
HEADER = """\
name: chaos
use_pending_failed: false
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
      - {exit_codes: [20], recovery_script: "echo $TORC_JOB_NAME >> recovered.log", max_retries: 3}
jobs:
"""


def plans(rng: random.Random) -> list[list[int]]:
    """Exit codes each job will give, attempt by attempt: success, handled failures with and
    without a recovery script, exhausted retries, and an unhandled code."""
    kinds = [[0], [10, 0], [10, 10, 0], [20, 0], [20, 20, 0], [10, 20, 0], [10, 10, 10], [20, 20, 20], [30], [10, 30]]
    return [rng.choice(kinds) for _ in range(JOBS)]


def expected(plan: list[int]) -> tuple[str, int]:
    """Final status and number of attempts, by the same decision function the daemon uses."""
    for attempt, code in enumerate(plan, 1):
        if code == 0:
            return "completed", attempt
        if decide(RULES, attempt=attempt, return_code=code, use_pending_failed=False).action == Action.FAIL:
            return "failed", attempt
    raise AssertionError(f"plan {plan} does not end")


def upstream(i: int) -> int | None:
    return i - 1 if i % 6 == 5 else None  # a few two-job chains: failures cancel downstream


def workflow(plan_list: list[list[int]], rng: random.Random) -> str:
    lines = [HEADER]
    for i, plan in enumerate(plan_list):
        codes = " ".join(map(str, plan))
        # Most jobs are short; some outlive a restart so that the new daemon adopts them.
        pause = f"1.{rng.randrange(10)}" if rng.random() < 0.1 else f"0.0{rng.randrange(10)}"
        # A third set an EXIT trap of their own (`trap 'rm -rf "$tmp"' EXIT`, a common idiom).
        own_trap = "t=$(mktemp -d); trap 'rm -rf \\\"$t\\\"' EXIT; " if i % 3 == 0 else ""
        command = (
            f"{own_trap}echo $TORC_JOB_NAME $TORC_ATTEMPT_ID >> runs.log; sleep {pause}; "
            f"codes=({codes}); exit ${{codes[$TORC_ATTEMPT_ID-1]}}"
        )
        after = f", depends_on: [j{upstream(i)}]" if upstream(i) is not None else ""
        lines.append(f'  - {{name: j{i}, command: "{command}", failure_handler: h{after}}}\n')
    return "".join(lines)


def test_random_kill9_loses_nothing(make_daemon, tmp_path):
    rng = random.Random(SEED)
    plan_list = plans(rng)
    d = make_daemon(max_parallel_jobs=8).start()
    wf = d.submit(workflow(plan_list, rng))
    kills = 0
    while kills < KILLS:
        time.sleep(rng.uniform(0.0, 0.6))  # sometimes still starting up, sometimes mid-flight
        if d.proc.poll() is None:
            d.kill9()
            kills += 1
        d.start(wait=rng.random() < 0.7)
    d.wait_ready()
    d.wait(wf, timeout=300, state="done")

    want = {f"j{i}": expected(p) for i, p in enumerate(plan_list)}
    for i in range(JOBS):  # a failed upstream cancels its dependent before it runs
        up = upstream(i)
        if up is not None and want[f"j{up}"][0] != "completed":
            want[f"j{i}"] = ("canceled", 0)
    jobs = d.jobs(wf)
    assert {n: j.status for n, j in jobs.items()} == {n: s for n, (s, _) in want.items()}
    for i, plan in enumerate(plan_list):
        job = jobs[f"j{i}"]
        atts = d.attempts(job.id)
        n = want[job.name][1]
        assert [(a.attempt_id, a.return_code) for a in atts] == list(zip(range(1, n + 1), plan)), job.name
    check_history(d, wf)
    # Each attempt ran exactly once: never twice at once, never again after a crash.
    runs = Counter(tuple(line.split()) for line in (tmp_path / "runs.log").read_text().splitlines())
    assert runs == Counter({(n, str(a)) for n, (_, k) in want.items() for a in range(1, k + 1)})
    d.stop()
    db = sqlite3.connect(os.path.join(d.state_dir, "torcd.store.db"))
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    print(f"chaos: {JOBS} jobs, {kills} kills survived, seed {SEED}")


def _exit_logged(d, job_id: int) -> bool:
    """Whether the job's shell has appended its attempt 1's status to the exit log."""
    text = ""
    for name in ("exits.log", "exits.log.prev"):
        try:
            text += (Path(d.state_dir) / name).read_text()
        except FileNotFoundError:
            pass
    return any(line.startswith(f"{job_id} 1 1 ") for line in text.splitlines())


def test_statuses_survive_a_restart_that_dies_before_recording_them(make_daemon, tmp_path):
    """Seed 11's lost statuses: a restart read the exit log and died before recording what it
    read; a job ended; the next restart must still find both statuses (not 137)."""
    d = make_daemon().start()
    wait_for = "while [ ! -e {0} ]; do sleep 0.02; done; exit {1}"
    wf = d.submit(f"""name: twice
jobs:
  - {{name: first, command: "{wait_for.format("go1", 10)}"}}
  - {{name: second, command: "{wait_for.format("go2", 20)}"}}
""")
    d.wait_for(lambda: {j.status for j in d.jobs(wf).values()} == {"running"}, what="both jobs to run")
    ids = {n: j.id for n, j in d.jobs(wf).items()}
    d.kill9()
    (tmp_path / "go1").touch()  # ends while no daemon watches
    d.wait_for(lambda: _exit_logged(d, ids["first"]), what="the first status in the exit log")
    d.start(crash_at="before_reconcile_recorded")
    d.wait_dead()
    (tmp_path / "go2").touch()  # ends after that restart read the log
    d.wait_for(lambda: _exit_logged(d, ids["second"]), what="the second status in the exit log")
    d.start()
    d.wait(wf, state="done")
    assert [(a.attempt_id, a.return_code) for a in d.attempts(ids["first"])] == [(1, 10)]
    assert [(a.attempt_id, a.return_code) for a in d.attempts(ids["second"])] == [(1, 20)]
