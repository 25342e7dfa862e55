"""A job that cannot be started fails alone (exit 126, with the reason); the daemon and the
worker keep serving everyone else.

The spec refuses these values at submit, so the tests write them into the store while the
daemon is stopped (as a database from an older version, or edited by hand, would hold them).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

from torcd.protocol import AttemptInfo, WorkflowSummary

GATED = """\
name: {name}
failure_handlers:
  - name: h
    rules:
      - {{exit_codes: [3], recovery_script: "true", max_retries: 2}}
jobs:
  - {{name: gate, command: "exit 1"}}
{jobs}"""
POISONS = {  # job name: (column, value) written over the job's row
    "nul_in_command": ("command", "echo a\0b"),
    "nul_in_env_value": ("env", json.dumps({"X": "a\0b"})),
    "nul_in_env_name": ("env", json.dumps({"X\0Y": "1"})),
    "empty_env_name": ("env", json.dumps({"": "1"})),
    "equals_in_env_name": ("env", json.dumps({"A=B": "1"})),
}


def gated_workflow(d, name: str, jobs: list[str], handler: bool = False) -> tuple[int, dict[str, int]]:
    """A workflow whose jobs wait on a failing gate, so they end `canceled`, never started."""
    extra = ", failure_handler: h" if handler else ""
    lines = "".join(f'  - {{name: {j}, command: "exit 3", depends_on: [gate]{extra}}}\n' for j in jobs)
    wf = d.submit(GATED.format(name=name, jobs=lines), name=f"{name}.yaml")
    d.wait(wf, state="done")
    return wf, {n: j.id for n, j in d.jobs(wf).items()}


def make_ready(
    d,
    job_ids: list[int],
    set_job: dict[str, object] | None = None,
    set_workflow: tuple[int, dict[str, object]] | None = None,
    handler_rules: tuple[int, str] | None = None,
) -> None:
    """With the daemon stopped: put jobs back to `ready` (and their workflow to active),
    overwriting the given columns."""
    db = sqlite3.connect(os.path.join(d.state_dir, "torcd.store.db"))
    with db:
        for jid in job_ids:
            db.execute("UPDATE jobs SET status = 2, pending_deps = 0, reason = NULL WHERE id = ?", (jid,))
            for column, value in (set_job or {}).items():
                db.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, jid))
            db.execute(
                "UPDATE workflows SET state = 'active' WHERE id = (SELECT workflow_id FROM jobs WHERE id = ?)", (jid,)
            )
        if set_workflow:
            wf, columns = set_workflow
            for column, value in columns.items():
                db.execute(f"UPDATE workflows SET {column} = ? WHERE id = ?", (value, wf))
        if handler_rules:
            wf, rules = handler_rules
            db.execute("UPDATE failure_handlers SET rules = ? WHERE workflow_id = ?", (rules, wf))
    db.close()


def only_attempt(d, job_id: int) -> AttemptInfo:
    attempts = d.attempts(job_id)
    assert len(attempts) == 1, attempts
    return attempts[0]


def test_each_poisoned_job_fails_alone_and_the_daemon_keeps_running(daemon, tmp_path):
    wf, ids = gated_workflow(daemon, "poison", list(POISONS))
    wf_dir, dir_ids = gated_workflow(daemon, "poison_dir", ["nul_in_output_dir"])
    wf_rec, rec_ids = gated_workflow(daemon, "poison_recovery", ["nul_in_recovery_script"], handler=True)
    survivor = daemon.submit("name: long\njobs:\n  - {name: long, command: sleep 300}\n", name="long.yaml")
    daemon.wait_for(lambda: daemon.jobs(survivor)["long"].status == "running", what="the long job to run")
    daemon.kill9()  # the long job keeps running; the next daemon adopts it
    for name, (column, value) in POISONS.items():
        make_ready(daemon, [ids[name]], {column: value})
    make_ready(daemon, [dir_ids["nul_in_output_dir"]], set_workflow=(wf_dir, {"output_dir": str(tmp_path / "o\0x")}))
    rules = json.dumps([{"exit_codes": [3], "recovery_script": "echo a\0b", "max_retries": 2}])
    make_ready(daemon, [rec_ids["nul_in_recovery_script"]], handler_rules=(wf_rec, rules))

    daemon.start()
    for w in (wf, wf_dir, wf_rec):
        daemon.wait(w, state="done")
    jobs = daemon.jobs(wf)
    for name in POISONS:
        attempt = only_attempt(daemon, ids[name])
        assert jobs[name].status == "failed" and attempt.return_code == 126, (name, attempt)
        assert attempt.message.startswith("could not start: "), attempt.message
    assert "command contains a NUL byte" in only_attempt(daemon, ids["nul_in_command"]).message
    assert "environment variable X contains" in only_attempt(daemon, ids["nul_in_env_value"]).message
    assert "'A=B' is not valid" in only_attempt(daemon, ids["equals_in_env_name"]).message
    attempt = only_attempt(daemon, dir_ids["nul_in_output_dir"])
    assert attempt.return_code == 126 and "output directory contains a NUL byte" in attempt.message
    # Listing and showing the failed job reads its log's tail: a path no file can have is no error.
    assert daemon.jobs(wf_dir, "failed")["nul_in_output_dir"].stderr_tail is None
    assert daemon.call("jobs.show", {"job_id": dir_ids["nul_in_output_dir"]})["status"] == "failed"
    assert daemon.call("workflows.show", {"workflow_id": wf_dir}, WorkflowSummary).counts.get("failed") == 2

    recovered = daemon.jobs(wf_rec)["nul_in_recovery_script"]
    assert recovered.status == "failed", recovered
    assert "recovery script contains a NUL byte" in recovered.reason

    # The same daemon still runs a job it started before and a new workflow.
    assert daemon.jobs(survivor)["long"].status == "running"
    ok = daemon.submit("name: ok\njobs:\n  - {name: a, command: 'true'}\n", name="ok.yaml")
    assert daemon.wait(ok, state="done").counts == {"completed": 1}
    assert daemon.proc.poll() is None


def test_a_worker_fails_a_poisoned_job_and_runs_the_next(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    spec = GATED.format(
        name="w",
        jobs='  - {name: poisoned, command: "exit 3", depends_on: [gate]}\n'
        '  - {name: fine, command: "echo ran > fine.txt", depends_on: [gate]}\n',
    )
    path = tmp_path / "w.yaml"
    path.write_text(spec)
    wf = d.call(
        "workflows.create",
        {"spec_text": spec, "spec_path": str(path), "cwd": str(tmp_path), "executor": "slurm"},
        WorkflowSummary,
    ).id
    worker = [
        sys.executable,
        "-m",
        "torcctl",
        "worker",
        "--url",
        f"unix://{d.socket}",
        "--workflow-id",
        str(wf),
        "--cpus",
        "2",
        "--poll-interval",
        "0.1",
        "--idle-timeout",
        "1",
    ]
    subprocess.run(worker, check=True, capture_output=True, timeout=60, cwd=tmp_path)  # the gate fails
    d.wait(wf, state="done")
    ids = {n: j.id for n, j in d.jobs(wf).items()}
    d.stop()
    make_ready(d, [ids["poisoned"]], {"command": "echo a\0b"})
    make_ready(d, [ids["fine"]])
    d.start("--listen", "127.0.0.1:0")
    ran = subprocess.run(worker, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    d.wait(wf, state="done")
    jobs = d.jobs(wf)
    assert jobs["poisoned"].status == "failed" and jobs["fine"].status == "completed"
    attempt = only_attempt(d, ids["poisoned"])
    assert attempt.return_code == 126 and "command contains a NUL byte" in attempt.message
    assert (tmp_path / "fine.txt").read_text() == "ran\n"
