"""Workers as on a real cluster: they wait for jobs that may still come and leave when none can,
pack jobs by CPUs, memory, GPUs and the walltime left, and outlive a daemon restart. Real
`torcctl worker` processes against a real daemon (outside Slurm: the behaviour is the worker's)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

from test_crash import check_history

from torcd.events import WorkerFinished
from torcd.protocol import WorkflowSummary


def create(d, spec: str, tmp_path) -> int:
    return d.call(
        "workflows.create", {"spec_text": spec, "cwd": str(tmp_path), "executor": "slurm"}, WorkflowSummary
    ).id


def worker(d, wf: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torcctl",
            "worker",
            "--url",
            f"unix://{d.socket}",
            "--workflow-id",
            str(wf),
            "--poll-interval",
            "0.1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=d.tmp,
    )


def finished(d, wf: int) -> list[str]:
    return [e.message for e in d.events(wf) if isinstance(e, WorkerFinished)]


FAN_OUT = """name: fan
{settings}jobs:
  - {{name: first, command: "sleep 3"}}
  - {{name: "after_{{i}}", command: "echo $TORC_JOB_NAME", depends_on: [first], parameters: {{i: "1:2"}}}}
"""


def test_an_idle_worker_waits_for_jobs_still_blocked_then_leaves_when_none_can_come(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    wf = create(d, FAN_OUT.format(settings=""), tmp_path)
    a = worker(d, wf, "--cpus", "1")
    d.wait_for(lambda: d.jobs(wf)["first"].status == "running", what="first to run")
    b = worker(d, wf, "--cpus", "1")  # nothing ready for it for 3 s: it must not leave
    t0 = time.monotonic()
    assert a.wait(60) == 0 and b.wait(60) == 0
    assert time.monotonic() - t0 < 30  # not the 90 s wait: once all ran, nothing could come
    assert d.wait(wf, state="done").counts == {"completed": 3}
    assert finished(d, wf) == ["nothing left to run", "nothing left to run"]
    events = d.events(wf)
    first_done = next(e.seq for e in events if e.kind == "job_completed" and e.job_name == "first")
    assert all(e.seq > first_done for e in events if isinstance(e, WorkerFinished))


def test_a_worker_leaves_after_the_workflows_wait_for_new_jobs(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    wf = create(d, FAN_OUT.format(settings="compute_node_wait_for_new_jobs_seconds: 1\n"), tmp_path)
    a = worker(d, wf, "--cpus", "1")
    d.wait_for(lambda: d.jobs(wf)["first"].status == "running", what="first to run")
    b = worker(d, wf, "--cpus", "1")
    assert b.wait(30) == 0  # gave up after 1 s idle, while `first` still ran
    assert d.jobs(wf)["first"].status == "running"
    assert a.wait(60) == 0
    assert "no new jobs for 1s" in finished(d, wf)


def test_a_worker_claims_no_job_whose_runtime_outlasts_its_walltime(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    wf = create(
        d,
        """name: wall
resource_requirements:
  - {name: long, runtime: PT2M}
  - {name: short, runtime: PT5S}
jobs:
  - {name: too_long, command: "true", resource_requirements: long}
  - {name: fits, command: "true", resource_requirements: short}
""",
        tmp_path,
    )
    # 100 s of walltime less a 30 s buffer: 70 s for jobs.
    w = worker(d, wf, "--cpus", "2", "--walltime", "100")
    assert w.wait(30) == 0  # and left at once: the long job can never come to it
    jobs = d.jobs(wf)
    assert (jobs["fits"].status, jobs["too_long"].status) == ("completed", "ready")


def test_a_worker_packs_gpu_and_memory_jobs_and_hands_out_its_own_devices(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    log = tmp_path / "log"
    job = f"echo $CUDA_VISIBLE_DEVICES $(date +%s.%N) >> {log}; sleep 0.5; echo end $(date +%s.%N) >> {log}"
    wf = create(
        d,
        f"""name: pack
slurm_schedulers:
  - {{name: gpu_nodes, node_cpus: 8, node_memory: 1g, node_gpus: 2}}
resource_requirements:
  - {{name: gpu, num_gpus: 1, memory: 10m}}
  - {{name: big, memory: 100m}}
jobs:
  - {{name: "g{{i}}", command: "{job}", resource_requirements: gpu, parameters: {{i: "1:4"}}}}
  - {{name: "m{{i}}", command: "sleep 0.5", resource_requirements: big, parameters: {{i: "1:3"}}}}
""",
        tmp_path,
    )
    no_gpus = worker(d, wf, "--cpus", "8", "--memory", "250m", "--gpus", "0", "--idle-timeout", "0")
    assert no_gpus.wait(30) == 0
    assert {n for n, j in d.jobs(wf).items() if j.status == "completed"} == {"m1", "m2", "m3"}
    w = worker(d, wf, "--cpus", "8", "--memory", "1g", "--gpus", "2")
    assert w.wait(60) == 0
    assert d.wait(wf, state="done").counts == {"completed": 7}
    starts = [line.split() for line in log.read_text().splitlines() if not line.startswith("end")]
    assert sorted(s[0] for s in starts) == ["0", "0", "1", "1"]  # one device each, two devices in all
    ms = [d.attempts(d.jobs(wf)[f"m{i}"].id)[0] for i in (1, 2, 3)]
    at_once = max(sum(1 for o in ms if o.start_time <= a.start_time < o.end_time) for a in ms)
    assert at_once == 2  # three 100 MiB jobs, eight CPUs free, 250 MiB: never more than two at once
    g = [d.attempts(d.jobs(wf)[f"g{i}"].id)[0] for i in (1, 2, 3, 4)]
    assert max(sum(1 for o in g if o.start_time <= a.start_time < o.end_time) for a in g) <= 2


def test_a_worker_outlives_a_daemon_restart_and_reports_the_true_end_time(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0", "--heartbeat-timeout", "3")
    wf = create(d, "name: outage\njobs:\n  - {name: long, command: 'touch started; sleep 6'}\n", tmp_path)
    w = worker(d, wf, "--cpus", "1")
    # Started on the worker, not only claimed: a daemon killed between recording the claim and the
    # worker reading it hands the job again after the restart (it then starts late, correctly).
    d.wait_for(lambda: (tmp_path / "started").exists(), what="the job to start on the worker")
    d.kill9()
    time.sleep(10)  # longer than the job, and than the heartbeat timeout
    d.restart()
    assert w.wait(60) == 0, w.stdout.read()
    assert d.wait(wf, state="done").counts == {"completed": 1}
    (a,) = d.attempts(d.jobs(wf)["long"].id)
    assert a.attempt_id == 1 and a.return_code == 0
    assert 5.5 < a.end_time - a.start_time < 8  # when it ended, not when the daemon heard of it
    assert not [e for e in d.events(wf) if e.kind == "worker_lost"]


def test_an_exit_committed_by_a_daemon_killed_before_it_answered_is_recorded_once(make_daemon, tmp_path):
    # The poll that reports the exit commits, then the daemon dies before answering: the worker
    # sends the same exit again to the restarted daemon, which knows it already.
    d = make_daemon().start("--listen", "127.0.0.1:0", crash_at="after_exits_committed")
    wf = create(d, "name: replay\njobs:\n  - {name: short, command: 'sleep 1'}\n", tmp_path)
    w = worker(d, wf, "--cpus", "1")
    assert d.wait_dead() == -9
    with sqlite3.connect(f"file:{d.state_dir}/torcd.store.db?mode=ro", uri=True) as db:
        assert db.execute("SELECT return_code FROM attempts").fetchall() == [(0,)]  # committed before the kill
    d.restart()
    assert w.wait(60) == 0, w.stdout.read()
    assert d.wait(wf, state="done").counts == {"completed": 1}
    (a,) = d.attempts(d.jobs(wf)["short"].id)
    assert (a.attempt_id, a.return_code) == (1, 0) and 0.5 < a.end_time - a.start_time < 3
    check_history(d, wf)


def test_a_claim_committed_by_a_daemon_killed_before_it_answered_is_handed_out_again(make_daemon, tmp_path):
    # The worker's first poll claims the job and commits; the daemon dies before answering. The
    # worker asks again, and the restarted daemon hands it the same attempt, which runs once.
    d = make_daemon().start("--listen", "127.0.0.1:0", crash_at="after_grouped_commit")
    wf = create(d, "name: replay\njobs:\n  - {name: once, command: 'echo ran >> runs'}\n", tmp_path)
    w = worker(d, wf, "--cpus", "1")
    assert d.wait_dead() == -9
    d.restart()
    assert w.wait(60) == 0, w.stdout.read()
    assert d.wait(wf, state="done").counts == {"completed": 1}
    assert (tmp_path / "runs").read_text() == "ran\n"
    (a,) = d.attempts(d.jobs(wf)["once"].id)
    assert (a.attempt_id, a.return_code) == (1, 0)
    check_history(d, wf)


def test_a_worker_gives_up_on_a_daemon_gone_longer_than_the_workflow_allows(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    wf = create(
        d,
        "name: gone\ncompute_node_wait_for_healthy_database_minutes: 0.05\n"
        "jobs:\n  - {name: long, command: 'sleep 2'}\n",
        tmp_path,
    )
    w = worker(d, wf, "--cpus", "1")
    d.wait_for(lambda: d.jobs(wf)["long"].status == "running", what="the job to run")
    d.kill9()
    out, _ = w.communicate(timeout=60)  # 3 s of patience, then a clear error
    assert w.returncode != 0 and "cannot reach the daemon" in out and "Traceback" not in out


def test_a_worker_restarted_during_an_outage_reports_what_the_one_before_it_journaled(make_daemon, tmp_path):
    import signal

    d = make_daemon().start("--listen", "127.0.0.1:0", "--heartbeat-timeout", "3")
    wf = create(d, "name: journal\njobs:\n  - {name: short, command: 'sleep 2'}\n", tmp_path)
    journal = tmp_path / "journal" / "w.journal"
    first = worker(d, wf, "--cpus", "1", "--journal", str(journal))
    d.wait_for(lambda: d.jobs(wf)["short"].status == "running", what="the job to run")
    d.kill9()
    deadline = time.monotonic() + 30  # the job ends while the daemon is down: its exit goes to the journal
    while time.monotonic() < deadline and b'"exits":[{' not in (journal.read_bytes() if journal.exists() else b""):
        time.sleep(0.1)
    assert b'"exits":[{' in journal.read_bytes()
    first.send_signal(signal.SIGKILL)  # the worker dies too, before the daemon is back
    first.wait(10)
    time.sleep(5)  # a journal is taken over only from a worker silent that long (not one still alive)
    d.restart()
    second = worker(d, wf, "--cpus", "1", "--journal", str(journal))
    assert second.wait(60) == 0, second.stdout.read()
    assert d.wait(wf, state="done").counts == {"completed": 1}
    (a,) = d.attempts(d.jobs(wf)["short"].id)
    assert (a.attempt_id, a.return_code) == (1, 0) and a.end_time - a.start_time < 4
    assert "resumed from its journal" in " ".join(e.message or "" for e in d.events(wf))
    assert not journal.exists()  # the second worker finished cleanly


def test_a_journal_in_a_directory_others_can_write_is_refused(make_daemon, tmp_path):
    import os

    d = make_daemon().start("--listen", "127.0.0.1:0")
    wf = create(d, "name: j\njobs:\n  - {name: a, command: 'true'}\n", tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    w = worker(d, wf, "--cpus", "1", "--journal", str(shared / "w.journal"))
    out, _ = w.communicate(timeout=30)
    assert w.returncode != 0 and "journal" in out and "Traceback" not in out
    assert d.jobs(wf)["a"].status == "ready"
